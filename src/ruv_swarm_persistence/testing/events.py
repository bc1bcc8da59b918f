"""Conformance: the event log — sequences, reads, paging and live subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta, timezone
from typing import Any

import pytest

from ..errors import ConflictError, ValidationError
from ..models import EventModel
from ..storage import Storage
from ._support import T0, at, event, within


def _seq(ev: EventModel) -> int:
    assert ev.sequence is not None, f"event {ev.id!r} has no sequence"
    return ev.sequence


async def _all_events(storage: Storage) -> list[EventModel]:
    return await storage.read_events(0, 100_000)


async def test_store_event_returns_and_sets_the_sequence(storage: Storage) -> None:
    first = event("e1")
    assert first.sequence is None
    seq = await storage.store_event(first)
    assert isinstance(seq, int)
    assert seq >= 1
    assert first.sequence == seq
    (stored,) = await _all_events(storage)
    assert stored.sequence == seq


async def test_event_round_trips_every_field(storage: Storage) -> None:
    e = EventModel(
        id="full",
        event_type="task.completed",
        agent_id="agent-7",
        task_id="task-9",
        payload=[1, "two", {"three": 3.5}, None, False],
        metadata={"source": "scheduler", "attempt": 2},
        timestamp=at(0.000_001).astimezone(timezone(timedelta(hours=9))),
    )
    await storage.store_event(e)
    (got,) = await _all_events(storage)
    assert got == e
    assert got.timestamp.utcoffset() == timedelta(0)
    bare = EventModel.new("bare")
    await storage.store_event(bare)
    assert (await _all_events(storage))[1] == bare


async def test_get_event_is_a_point_read_by_id(storage: Storage) -> None:
    a, b = event("ga"), event("gb", payload={"k": [1, 2.5]})
    await storage.store_events([a, b])
    assert await storage.get_event("gb") == b
    assert await storage.get_event("ga") == a
    assert await storage.get_event("missing") is None
    assert await storage.events.find_by_id("gb") == b
    tx = await storage.begin_transaction()
    c = event("gc")
    await tx.store_event(c)
    assert await tx.get_event("gc") == c
    await tx.rollback()
    assert await storage.get_event("gc") is None


async def test_crate_constructor_chain_persists(storage: Storage) -> None:
    e = EventModel.new("agent.spawned", {"name": "worker"}).with_agent("a1").with_task("t1")
    await storage.store_event(e)
    (got,) = await storage.get_events_by_agent("a1")
    assert got == e
    assert got.task_id == "t1"


async def test_sequences_strictly_increase(storage: Storage) -> None:
    seqs = [await storage.store_event(event(f"s{i}")) for i in range(5)]
    seqs += await storage.store_events([event(f"b{i}") for i in range(4)])
    seqs.append(await storage.store_event(event("last")))
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert [e.sequence for e in await _all_events(storage)] == seqs


async def test_store_events_returns_sequences_in_order(storage: Storage) -> None:
    batch = [event(f"e{i}", ts=-i) for i in range(6)]
    seqs = await storage.store_events(batch)
    assert [e.sequence for e in batch] == seqs
    assert [e.id for e in await _all_events(storage)] == [f"e{i}" for i in range(6)]


async def test_store_events_of_an_empty_batch(storage: Storage) -> None:
    assert await storage.store_events([]) == []
    assert await _all_events(storage) == []


async def test_store_events_duplicate_in_batch_stores_nothing(storage: Storage) -> None:
    with pytest.raises(ConflictError):
        await storage.store_events([event("x1"), event("dup"), event("x2"), event("dup")])
    assert await _all_events(storage) == []
    # No sequence was used up by the refused batch.
    after = event("after")
    await storage.store_event(after)
    assert (await _all_events(storage))[0].sequence == after.sequence


async def test_store_events_duplicate_of_stored_event_stores_nothing(storage: Storage) -> None:
    await storage.store_event(event("old"))
    with pytest.raises(ConflictError):
        await storage.store_events([event("new1"), event("old"), event("new2")])
    assert [e.id for e in await _all_events(storage)] == ["old"]


async def test_store_event_duplicate_id_conflicts(storage: Storage) -> None:
    await storage.store_event(event("same", payload={"v": 1}))
    with pytest.raises(ConflictError):
        await storage.store_event(event("same", payload={"v": 2}))
    (only,) = await _all_events(storage)
    assert only.payload == {"v": 1}


async def test_store_events_invalid_member_stores_nothing(storage: Storage) -> None:
    bad = event("bad", payload={"x": float("nan")})
    with pytest.raises(ValidationError):
        await storage.store_events([event("ok1"), bad, event("ok2")])
    assert await _all_events(storage) == []


async def test_get_events_by_agent_newest_first_with_limit(storage: Storage) -> None:
    await storage.store_events(
        [
            event("a-2", agent_id="a", ts=2),
            event("b-1", agent_id="b", ts=1),
            event("a-1", agent_id="a", ts=1),
            event("a-3", agent_id="a", ts=3),
            event("none", ts=4),
        ]
    )
    assert [e.id for e in await storage.get_events_by_agent("a")] == ["a-3", "a-2", "a-1"]
    assert [e.id for e in await storage.get_events_by_agent("a", limit=2)] == ["a-3", "a-2"]
    assert await storage.get_events_by_agent("a", limit=0) == []
    assert [e.id for e in await storage.get_events_by_agent("b")] == ["b-1"]
    assert await storage.get_events_by_agent("nobody") == []


async def test_get_events_by_type_newest_first_with_limit(storage: Storage) -> None:
    await storage.store_events(
        [
            event("x1", "spawned", ts=10),
            event("y1", "stopped", ts=11),
            event("x2", "spawned", ts=12),
            event("x0", "spawned", ts=5),
        ]
    )
    assert [e.id for e in await storage.get_events_by_type("spawned")] == ["x2", "x1", "x0"]
    assert [e.id for e in await storage.get_events_by_type("spawned", 1)] == ["x2"]
    assert await storage.get_events_by_type("Spawned") == []


async def test_same_timestamp_breaks_ties_by_sequence(storage: Storage) -> None:
    await storage.store_events([event(f"t{i}", agent_id="a", ts=1) for i in range(4)])
    assert [e.id for e in await storage.get_events_by_agent("a")] == ["t3", "t2", "t1", "t0"]
    assert [e.id for e in await storage.get_events_since(at(1))] == ["t0", "t1", "t2", "t3"]


@pytest.mark.parametrize(
    "since",
    [at(2), at(2).astimezone(timezone(timedelta(hours=-3))), at(2).timestamp(), 1_714_564_802],
    ids=["datetime", "non-utc", "epoch-float", "epoch-int"],
)
async def test_get_events_since_is_inclusive_and_oldest_first(storage: Storage, since: Any) -> None:
    # T0 is 12:00:00.123456, so the whole second 1_714_564_802 lies just before at(2).
    whole = isinstance(since, int)
    await storage.store_events(
        [
            event("late", ts=5),
            event("exact", ts=2),
            event("before", ts=1.999_999),
            event("mid", ts=3),
            event("early", ts=-10),
        ]
    )
    ids = [e.id for e in await storage.get_events_since(since)]
    assert ids == (["before", "exact", "mid", "late"] if whole else ["exact", "mid", "late"])


async def test_get_events_since_future_is_empty(storage: Storage) -> None:
    await storage.store_event(event("e", ts=0))
    assert await storage.get_events_since(at(0.000_001)) == []
    assert [e.id for e in await storage.get_events_since(T0)] == ["e"]


async def test_read_events_pages_never_skip(storage: Storage) -> None:
    ids = [f"p{i:02d}" for i in range(23)]
    await storage.store_events([event(i, ts=-n) for n, i in enumerate(ids)])
    seen: list[str] = []
    last = 0
    while True:
        page = await storage.read_events(last, 5)
        if not page:
            break
        assert len(page) <= 5
        seqs = [_seq(e) for e in page]
        assert all(s > last for s in seqs)
        assert seqs == sorted(seqs)
        seen += [e.id for e in page]
        last = seqs[-1]
        # A write between two pages is read by the next page, never skipped.
        if len(seen) == 10:
            await storage.store_event(event("between"))
    assert seen == [*ids, "between"]
    assert await storage.read_events(last) == []


async def test_read_events_after_a_sequence(storage: Storage) -> None:
    seqs = await storage.store_events([event(f"r{i}") for i in range(5)])
    assert [e.id for e in await storage.read_events(seqs[2])] == ["r3", "r4"]
    assert [e.id for e in await storage.read_events(seqs[0], limit=2)] == ["r1", "r2"]
    assert await storage.read_events(seqs[-1]) == []
    assert await storage.read_events(0, limit=0) == []


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("read_events", (-1,)),
        ("read_events", (0, -1)),
        ("read_events", ("0",)),
        ("get_events_by_agent", ("a", -1)),
        ("get_events_by_agent", ("",)),
        ("get_events_by_type", ("t", 1.5)),
        ("get_events_since", ("2024-05-01",)),
        ("get_events_since", (float("nan"),)),
        ("get_events_since", (None,)),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) else v,
)
async def test_event_reads_reject_bad_arguments(storage: Storage, call: str, args: Any) -> None:
    with pytest.raises(ValidationError):
        await getattr(storage, call)(*args)


async def _collect(source: AsyncIterator[EventModel], n: int) -> list[EventModel]:
    out: list[EventModel] = []
    async for ev in source:
        out.append(ev)
        if len(out) == n:
            break
    return out


async def _close(source: AsyncIterator[EventModel]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


async def _drain_loop() -> None:
    # Let other tasks run until they block; no timing involved.
    for _ in range(20):
        await asyncio.sleep(0)


async def test_subscribe_yields_existing_then_new_events(storage: Storage) -> None:
    await storage.store_events([event("old1"), event("old2")])
    sub = storage.subscribe()
    existing = await within(_collect(sub, 2))
    assert [e.id for e in existing] == ["old1", "old2"]
    reader = asyncio.create_task(_collect(sub, 3))
    await _drain_loop()
    assert not reader.done()

    async def writer() -> None:
        await storage.store_event(event("new1"))
        await storage.store_events([event("new2"), event("new3")])

    await asyncio.create_task(writer())
    events = existing + await within(reader)
    assert [e.id for e in events] == ["old1", "old2", "new1", "new2", "new3"]
    seqs = [_seq(e) for e in events]
    assert seqs == sorted(seqs)
    await _close(sub)


async def test_subscribe_wakes_on_a_write_from_another_task(storage: Storage) -> None:
    sub = storage.subscribe()
    first = asyncio.ensure_future(anext(sub))
    await _drain_loop()
    assert not first.done()
    await asyncio.create_task(storage.store_event(event("wake")))
    got = await within(first)
    assert got.id == "wake"
    second = asyncio.ensure_future(anext(sub))
    await _drain_loop()
    assert not second.done()
    await storage.store_event(event("again"))
    assert (await within(second)).id == "again"
    await _close(sub)


async def test_subscribe_after_a_sequence(storage: Storage) -> None:
    seqs = await storage.store_events([event(f"e{i}") for i in range(4)])
    sub = storage.subscribe(after_sequence=seqs[1])
    events = await within(_collect(sub, 2))
    assert [e.id for e in events] == ["e2", "e3"]
    await _close(sub)


async def test_subscribe_filters_event_types(storage: Storage) -> None:
    await storage.store_events([event("a1", "alpha"), event("b1", "beta"), event("g1", "gamma")])
    sub = storage.subscribe(event_types=["alpha", "gamma"])
    reader = asyncio.create_task(_collect(sub, 4))
    await _drain_loop()
    await storage.store_events([event("b2", "beta"), event("a2", "alpha")])
    await storage.store_event(event("g2", "gamma"))
    events = await within(reader)
    assert [e.id for e in events] == ["a1", "g1", "a2", "g2"]
    await _close(sub)


async def test_subscribe_sees_committed_transaction_events(storage: Storage) -> None:
    sub = storage.subscribe()
    reader = asyncio.create_task(_collect(sub, 2))
    await _drain_loop()

    async def write() -> None:
        async with storage.transaction() as tx:
            await tx.store_event(event("tx1"))
            await tx.store_event(event("tx2"))

    await asyncio.create_task(write())
    assert [e.id for e in await within(reader)] == ["tx1", "tx2"]
    await _close(sub)


async def test_rolled_back_events_never_reach_a_subscriber(storage: Storage) -> None:
    sub = storage.subscribe()
    reader = asyncio.create_task(_collect(sub, 1))
    await _drain_loop()

    async def write_and_roll_back() -> None:
        tx = await storage.begin_transaction()
        await tx.store_events([event("ghost1"), event("ghost2")])
        await _drain_loop()
        await tx.rollback()

    await asyncio.create_task(write_and_roll_back())
    await _drain_loop()
    assert not reader.done()
    real = event("real")
    await storage.store_event(real)
    (got,) = await within(reader)
    assert got.id == "real"
    assert got.sequence == real.sequence
    assert [e.id for e in await _all_events(storage)] == ["real"]
    await _close(sub)


async def test_two_subscribers_each_see_every_event(storage: Storage) -> None:
    subs = [storage.subscribe(), storage.subscribe()]
    readers = [asyncio.create_task(_collect(s, 3)) for s in subs]
    await _drain_loop()
    for i in range(3):
        await storage.store_event(event(f"e{i}"))
    for r in readers:
        assert [e.id for e in await within(r)] == ["e0", "e1", "e2"]
    for s in subs:
        await _close(s)


async def test_events_do_not_need_an_existing_agent_or_task(storage: Storage) -> None:
    await storage.store_event(event("orphan", agent_id="no-such-agent", task_id="no-such-task"))
    (got,) = await storage.get_events_by_agent("no-such-agent")
    assert got.task_id == "no-such-task"


__all__ = [name for name in list(globals()) if name.startswith("test_")]
