"""Conformance: agents — store, get, update, delete, list, heartbeats and staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ..errors import ConflictError, NotFoundError, ValidationError
from ..models import AgentModel, AgentStatus
from ..storage import Storage
from . import FakeClock
from ._support import T0, agent, at, event, message, metric


async def test_store_and_get_round_trips_every_field(storage: Storage) -> None:
    a = AgentModel(
        id="agent-1",
        name="Researcher",
        agent_type="researcher",
        status=AgentStatus.Busy,
        capabilities=["analysis", "data-processing", "ünïcødé"],
        metadata={"region": "eu", "cores": 8, "ratio": 0.25, "tags": ["a", None, True]},
        heartbeat=at(1.000_001),
        created_at=at(0),
        updated_at=at(2.999_999),
    )
    await storage.store_agent(a)
    got = await storage.get_agent("agent-1")
    assert got == a
    assert got is not a
    assert got.heartbeat.microsecond == 123_457
    assert isinstance(got.status, AgentStatus)


async def test_non_utc_time_comes_back_as_the_same_instant_in_utc(storage: Storage) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2024, 5, 1, 14, 0, 0, 654_321, tzinfo=plus_two)
    a = agent("tz")
    a.created_at = local
    await storage.store_agent(a)
    got = await storage.get_agent("tz")
    assert got is not None
    assert got.created_at == local
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.created_at.replace(tzinfo=None) == datetime(2024, 5, 1, 12, 0, 0, 654_321)


async def test_crate_constructor_and_helpers_persist(storage: Storage) -> None:
    a = AgentModel.new("worker-001", "researcher", ["analysis", "data-processing"])
    await storage.store_agent(a)
    assert await storage.get_agent(a.id) == a
    a.set_status(AgentStatus.Busy)
    a.update_heartbeat()
    await storage.update_agent(a)
    got = await storage.get_agent(a.id)
    assert got is not None
    assert got.status is AgentStatus.Busy
    assert got.heartbeat == a.heartbeat


async def test_get_missing_agent_returns_none(storage: Storage) -> None:
    assert await storage.get_agent("nobody") is None


async def test_stored_agent_is_a_copy(storage: Storage) -> None:
    a = agent("copy", capabilities=["x"])
    await storage.store_agent(a)
    a.name = "changed after store"
    a.capabilities.append("y")
    got = await storage.get_agent("copy")
    assert got is not None
    assert got.name == "agent copy"
    assert got.capabilities == ["x"]


async def test_store_existing_id_conflicts_and_keeps_the_first(storage: Storage) -> None:
    await storage.store_agent(agent("dup", name="first"))
    with pytest.raises(ConflictError) as info:
        await storage.store_agent(agent("dup", name="second"))
    assert "dup" in str(info.value)
    got = await storage.get_agent("dup")
    assert got is not None
    assert got.name == "first"


async def test_update_replaces_every_field(storage: Storage) -> None:
    await storage.store_agent(agent("u"))
    new = AgentModel(
        id="u",
        name="renamed",
        agent_type="coder",
        status=AgentStatus.Paused,
        capabilities=["rust"],
        metadata={"k": {"nested": [1, 2]}},
        heartbeat=at(50),
        created_at=at(0),
        updated_at=at(60),
    )
    await storage.update_agent(new)
    assert await storage.get_agent("u") == new


async def test_update_missing_agent_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await storage.update_agent(agent("ghost"))
    assert await storage.get_agent("ghost") is None
    assert await storage.list_agents() == []


async def test_delete_is_idempotent(storage: Storage) -> None:
    await storage.store_agent(agent("gone"))
    await storage.store_agent(agent("stays", created=1))
    await storage.delete_agent("gone")
    assert await storage.get_agent("gone") is None
    await storage.delete_agent("gone")
    await storage.delete_agent("never-existed")
    assert [a.id for a in await storage.list_agents()] == ["stays"]


async def test_deleted_id_can_be_stored_again(storage: Storage) -> None:
    await storage.store_agent(agent("again", name="one"))
    await storage.delete_agent("again")
    await storage.store_agent(agent("again", name="two"))
    got = await storage.get_agent("again")
    assert got is not None
    assert got.name == "two"


async def test_list_agents_oldest_first(storage: Storage) -> None:
    for id, created in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("d", 0.5)]:
        await storage.store_agent(agent(id, created=created))
    assert [a.id for a in await storage.list_agents()] == ["d", "a", "b", "c"]


async def test_list_agents_of_empty_storage(storage: Storage) -> None:
    assert await storage.list_agents() == []


async def test_list_agents_by_status(storage: Storage) -> None:
    await storage.store_agent(agent("i2", status=AgentStatus.Idle, created=2))
    await storage.store_agent(agent("b1", status=AgentStatus.Busy, created=1))
    await storage.store_agent(agent("i1", status=AgentStatus.Idle, created=1))
    idle = await storage.list_agents_by_status(AgentStatus.Idle)
    assert [a.id for a in idle] == ["i1", "i2"]
    assert [a.id for a in await storage.list_agents_by_status("busy")] == ["b1"]
    assert await storage.list_agents_by_status(AgentStatus.Shutdown) == []


@pytest.mark.parametrize("status", ["sleeping", "Idle", "", 3, None])
async def test_list_agents_by_unknown_status_is_rejected(storage: Storage, status: Any) -> None:
    with pytest.raises(ValidationError):
        await storage.list_agents_by_status(status)


async def test_delete_agent_deletes_its_mailbox_but_keeps_history(storage: Storage) -> None:
    for id in ("a", "b", "c"):
        await storage.store_agent(agent(id))
    await storage.store_message(message("a-b", "a", "b"))
    await storage.store_message(message("b-a", "b", "a", ts=1))
    await storage.store_message(message("c-a", "c", "a", ts=2))
    await storage.store_message(message("b-c", "b", "c", ts=3))
    await storage.store_event(event("ev-a", agent_id="a"))
    await storage.store_metric(metric("m-a", 1.5, agent_id="a"))

    await storage.delete_agent("a")

    for gone in ("a-b", "b-a", "c-a"):
        assert await storage.get_message(gone) is None
    assert await storage.get_message("b-c") is not None
    assert await storage.get_unread_messages("a") == []
    assert [m.id for m in await storage.get_messages_between("a", "b")] == []
    assert [e.id for e in await storage.get_events_by_agent("a")] == ["ev-a"]
    assert [m.id for m in await storage.get_metrics_by_agent("a")] == ["m-a"]


async def test_heartbeat_stamps_now_from_the_clock(storage: Storage, clock: FakeClock) -> None:
    await storage.store_agent(agent("hb", heartbeat=0))
    now = clock.advance(42.5)
    await storage.heartbeat("hb")
    got = await storage.get_agent("hb")
    assert got is not None
    assert got.heartbeat == now
    assert got.updated_at == now
    assert got.created_at == T0


@pytest.mark.parametrize(
    "when",
    [at(7.25), at(7.25).astimezone(timezone(timedelta(hours=-5))), 1_714_564_800, 1714564800.5],
    ids=["utc", "non-utc", "epoch-int", "epoch-float"],
)
async def test_heartbeat_at_an_explicit_time(storage: Storage, when: Any) -> None:
    await storage.store_agent(agent("hb"))
    await storage.heartbeat("hb", at=when)
    got = await storage.get_agent("hb")
    assert got is not None
    expected = when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)
    assert got.heartbeat == expected


async def test_heartbeat_of_missing_agent_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await storage.heartbeat("ghost")
    assert await storage.get_agent("ghost") is None


@pytest.mark.parametrize("when", ["yesterday", datetime(2024, 1, 1), float("nan"), True])
async def test_heartbeat_bad_time_is_rejected(storage: Storage, when: Any) -> None:
    await storage.store_agent(agent("hb"))
    with pytest.raises(ValidationError):
        await storage.heartbeat("hb", at=when)
    got = await storage.get_agent("hb")
    assert got is not None
    assert got.heartbeat == T0


async def _stale_setup(storage: Storage, clock: FakeClock) -> datetime:
    now = clock()
    ages = {"old": 120, "fresh": 30, "edge": 60, "errored": 500, "shut": 500}
    statuses = {"errored": AgentStatus.Error, "shut": AgentStatus.Shutdown}
    for id, age in ages.items():
        a = agent(id, status=statuses.get(id, AgentStatus.Idle))
        a.heartbeat = now - timedelta(seconds=age)
        await storage.store_agent(a)
    return now


async def test_find_stale_agents_by_age(storage: Storage, clock: FakeClock) -> None:
    await _stale_setup(storage, clock)
    stale = await storage.find_stale_agents(timedelta(seconds=60))
    assert {a.id for a in stale} == {"old"}
    assert {a.id for a in await storage.find_stale_agents(59.999_999)} == {"old", "edge"}
    clock.advance(31)
    assert {a.id for a in await storage.find_stale_agents(timedelta(seconds=60))} == {
        "old",
        "edge",
        "fresh",
    }


async def test_find_stale_agents_by_cutoff_time(storage: Storage, clock: FakeClock) -> None:
    now = await _stale_setup(storage, clock)
    cutoff = now - timedelta(seconds=60)
    assert {a.id for a in await storage.find_stale_agents(cutoff)} == {"old"}
    later = now - timedelta(seconds=29)
    assert {a.id for a in await storage.find_stale_agents(later)} == {"old", "edge", "fresh"}
    # The cut-off is absolute: moving the clock does not change what it selects.
    clock.advance(1000)
    assert {a.id for a in await storage.find_stale_agents(cutoff)} == {"old"}


async def test_find_stale_agents_excludes_error_and_shutdown(
    storage: Storage, clock: FakeClock
) -> None:
    await _stale_setup(storage, clock)
    ids = {a.id for a in await storage.find_stale_agents(timedelta(seconds=1))}
    assert "errored" not in ids
    assert "shut" not in ids
    assert ids == {"old", "edge", "fresh"}


async def test_heartbeat_makes_a_stale_agent_fresh(storage: Storage, clock: FakeClock) -> None:
    await _stale_setup(storage, clock)
    await storage.heartbeat("old")
    assert {a.id for a in await storage.find_stale_agents(timedelta(seconds=60))} == set()


@pytest.mark.parametrize("older_than", ["1h", None, datetime(2024, 1, 1), -5, float("inf")])
async def test_find_stale_agents_bad_argument(
    storage: Storage, clock: FakeClock, older_than: Any
) -> None:
    await _stale_setup(storage, clock)
    with pytest.raises(ValidationError):
        await storage.find_stale_agents(older_than)


@pytest.mark.parametrize("bad_id", ["", "x" * 257, "a\x00b", 17, None, b"bytes"], ids=repr)
async def test_agent_calls_reject_bad_ids(storage: Storage, bad_id: Any) -> None:
    with pytest.raises(ValidationError):
        await storage.get_agent(bad_id)
    with pytest.raises(ValidationError):
        await storage.delete_agent(bad_id)
    with pytest.raises(ValidationError):
        await storage.heartbeat(bad_id)
    with pytest.raises(ValidationError):
        await storage.store_agent(agent(bad_id))
    assert await storage.list_agents() == []


__all__ = [name for name in list(globals()) if name.startswith("test_")]
