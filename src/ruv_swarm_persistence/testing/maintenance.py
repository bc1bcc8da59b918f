"""Conformance: maintenance — prune (retention), vacuum, checkpoint and storage size."""

from __future__ import annotations

from typing import Any

import pytest

from ..errors import ValidationError
from ..storage import Storage
from ._support import agent, at, event, message, metric, snapshot


async def test_prune_removes_only_older_rows(storage: Storage) -> None:
    await storage.store_events(
        [event("e-old", ts=1), event("e-edge", ts=10), event("e-new", ts=20)]
    )
    await storage.store_metrics(
        [metric("x-old", 1.0, ts=1), metric("x-edge", 2.0, ts=10), metric("x-new", 3.0, ts=20)]
    )
    for id, read_at in (("m-old", 1.0), ("m-edge", 10.0), ("m-new", 20.0)):
        m = message(id, "a", "b")
        m.read, m.read_at = True, at(read_at)
        await storage.store_message(m)
    await storage.store_message(message("m-unread", "a", "b", ts=-100))

    result = await storage.prune(
        events_before=at(10), metrics_before=at(10), read_messages_before=at(10)
    )

    assert (result.events, result.metrics, result.messages) == (1, 1, 1)
    state = await snapshot(storage)
    assert [e.id for e in state["events"]] == ["e-edge", "e-new"]
    assert sorted(m.id for m in state["metrics"]) == ["x-edge", "x-new"]
    assert sorted(m.id for m in state["messages"]) == ["m-edge", "m-new", "m-unread"]


async def test_prune_each_kind_independently(storage: Storage) -> None:
    await storage.store_event(event("e", ts=1))
    await storage.store_metric(metric("x", 1.0, ts=1))
    result = await storage.prune(metrics_before=at(5))
    assert (result.events, result.metrics, result.messages) == (0, 1, 0)
    assert [e.id for e in await storage.read_events(0)] == ["e"]
    assert await storage.prune() == type(result)()


async def test_prune_accepts_epoch_seconds(storage: Storage) -> None:
    await storage.store_events([event("old", ts=1), event("new", ts=20)])
    result = await storage.prune(events_before=at(10).timestamp())
    assert result.events == 1
    assert [e.id for e in await storage.read_events(0)] == ["new"]


async def test_sequences_continue_after_pruning(storage: Storage) -> None:
    seqs = await storage.store_events([event("a", ts=1), event("b", ts=2)])
    await storage.prune(events_before=at(100))
    assert await storage.read_events(0) == []
    nxt = await storage.store_event(event("c", ts=3))
    assert nxt > seqs[-1]
    assert [e.id for e in await storage.read_events(seqs[-1])] == ["c"]


async def test_pruned_events_leave_the_indexes(storage: Storage) -> None:
    await storage.store_events(
        [event("old", "kind", ts=1, agent_id="a"), event("new", "kind", ts=20, agent_id="a")]
    )
    await storage.prune(events_before=at(10))
    assert [e.id for e in await storage.get_events_by_agent("a")] == ["new"]
    assert [e.id for e in await storage.get_events_by_type("kind")] == ["new"]
    assert [e.id for e in await storage.get_events_since(at(0))] == ["new"]
    # The id of a pruned event may be used again.
    await storage.store_event(event("old", ts=30))


async def test_prune_inside_a_rolled_back_transaction_keeps_everything(storage: Storage) -> None:
    await storage.store_events([event("e1", ts=1), event("e2", ts=2)])
    await storage.store_metric(metric("x", 1.0, ts=1))
    before = await snapshot(storage)
    tx = await storage.begin_transaction()
    await tx.prune(events_before=at(100), metrics_before=at(100))
    await tx.rollback()
    assert await snapshot(storage) == before
    assert [e.id for e in await storage.get_events_since(at(0))] == ["e1", "e2"]


@pytest.mark.parametrize(
    "kwargs",
    [{"events_before": "old"}, {"metrics_before": None, "read_messages_before": True}],
    ids=repr,
)
async def test_prune_bad_arguments(storage: Storage, kwargs: dict[str, Any]) -> None:
    await storage.store_event(event("e", ts=1))
    with pytest.raises(ValidationError):
        await storage.prune(**kwargs)
    assert [e.id for e in await storage.read_events(0)] == ["e"]


async def test_vacuum_and_checkpoint_keep_the_data(storage: Storage) -> None:
    await storage.store_agent(agent("a"))
    await storage.store_events([event(f"e{i:02d}", ts=i) for i in range(50)])
    await storage.prune(events_before=at(25))
    before = await snapshot(storage)
    assert len(before["events"]) == 25
    await storage.vacuum()
    await storage.checkpoint()
    assert await snapshot(storage) == before
    assert await storage.store_event(event("after")) > 0


async def test_storage_size_grows_with_data(storage: Storage) -> None:
    await storage.checkpoint()
    empty = await storage.get_storage_size()
    assert isinstance(empty, int)
    assert empty >= 0
    await storage.store_events([event(f"e{i}", payload={"blob": "x" * 1000}) for i in range(300)])
    await storage.checkpoint()
    assert await storage.get_storage_size() > empty


__all__ = [name for name in list(globals()) if name.startswith("test_")]
