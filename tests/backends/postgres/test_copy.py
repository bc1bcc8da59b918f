"""``copy_storage``: a whole swarm to PostgreSQL and back, every row compared."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.copy import copy_storage, table_checksums
from ruv_swarm_persistence.errors import StorageError, ValidationError
from ruv_swarm_persistence.models import (
    AgentStatus,
    EventModel,
    MessagePriority,
    TaskModel,
    TaskPriority,
)
from ruv_swarm_persistence.rules import RetryPolicy
from ruv_swarm_persistence.storage import Storage
from ruv_swarm_persistence.testing import FakeClock
from ruv_swarm_persistence.testing._support import T0, agent, at, event, message, metric

from ._support import Opener


def _task(id: str, created: float, **fields: Any) -> TaskModel:
    return TaskModel(
        id=id,
        task_type=fields.pop("task_type", "work"),
        payload=fields.pop("payload", {"id": id}),
        created_at=at(created),
        updated_at=at(created),
        **fields,
    )


async def _populate(s: Storage, clock: FakeClock) -> None:
    """A swarm with something in every table and tasks in every state."""
    await s.store_agent(agent("a1", metadata={"zone": "eu", "n": [1, 2.5, None]}))
    await s.store_agent(agent("a2", status=AgentStatus.Busy, capabilities=["x", "y"], created=1))
    await s.store_tasks(
        [
            _task("root", 0, priority=TaskPriority.High),
            _task("child", 1, dependencies=["root"]),
            _task("leaf", 2, dependencies=["child", "root"]),
            _task("doomed", 3, max_retries=0),
            _task("orphan", 4, dependencies=["doomed"]),
            _task("flaky", 5, task_type="other"),
            _task("idle", 6, priority=TaskPriority.Critical, payload={"big": 1e16, "k": "é"}),
        ]
    )
    assert await s.claim_task("root", "a1")
    await s.complete_task("root", "a1", {"answer": 42, "f": 0.1})
    assert await s.claim_task("child", "a2", lease=600)
    await s.start_task("child", "a2")
    assert await s.claim_task("doomed", "a1")
    await s.fail_task("doomed", "a1", "boom")  # fails for good, cancels "orphan"
    assert await s.claim_task("flaky", "a1")
    await s.fail_task("flaky", "a1", "try again")  # back to pending after a backoff
    await s.store_message(message("m1", "a1", "a2", ts=1))
    await s.store_message(message("m2", "a2", "a1", ts=2, priority=MessagePriority.Urgent))
    await s.mark_message_read("m1")
    await s.store_metrics(
        [metric(f"x{i}", i * 1.5, ts=i, tags={"host": f"h{i % 2}"}) for i in range(20)]
    )
    await s.store_events([event(f"e{i}", ts=i, agent_id="a1") for i in range(30)])
    await s.prune(events_before=at(5))  # the log now starts at sequence 6
    # The queue controls: limits, schedules (one fired, one paused), a retention record.
    await s.set_concurrency_limit("gpu", 2)
    await s.set_rate_limit("gpu", 10, per=timedelta(minutes=1))
    await s.set_rate_limit("api", 3, per=0.25)
    await s.set_concurrency_limit("paused-key", 0)
    await s.store_schedule("every-10s", "10s", {"task_type": "tick", "payload": {"n": 1}})
    await s.store_schedule(
        "hourly", "1h", {"task_type": "report", "concurrency_key": "gpu"}, missed="run_once"
    )
    clock.advance(10)
    assert len(await s.fire_due_schedules()) == 1
    await s.pause_schedule("hourly")
    await s.apply_retention("metrics:18")  # removes the two oldest metrics
    clock.advance(1)


async def _everything(s: Storage) -> dict[str, Any]:
    events = await s.read_events(0, 10_000)
    return {
        "agents": await s.agents.find_all(),
        "tasks": await s.tasks.find_all(),
        "messages": await s.messages.find_all(),
        "metrics": await s.metrics.find_all(),
        # Sequences are renumbered by the destination; the order must be kept.
        "events": [dataclasses.replace(e, sequence=None) for e in events],
        "ready": [t.id for t in await s.get_ready_tasks()],
        "pending": [t.id for t in await s.get_pending_tasks()],
        "unread": [m.id for m in await s.get_unread_messages("a1")],
        "limits": await s.list_queue_limits(),
        "schedules": await s.list_schedules(),
        "retention": dataclasses.replace(await s.retention_report(), policy=None),
    }


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_round_trip_through_postgres_keeps_every_row(
    kind: str, tmp_path: Path, open_storage: Opener
) -> None:
    clock = FakeClock(T0)
    options: dict[str, Any] = {"clock": clock, "retry_policy": RetryPolicy(base_us=0)}

    async def make(name: str) -> Storage:
        if kind == "memory":
            return MemoryStorage(**options)
        from ruv_swarm_persistence.backends.sqlite import SqliteStorage

        return await SqliteStorage.open(tmp_path / f"{name}.db", **options)

    source, back = await make("source"), await make("back")
    try:
        await _populate(source, clock)
        middle = await open_storage(**options)
        there = await copy_storage(source, middle)
        assert there.ok, str(there)
        assert there.tables["events"].source_rows == 25
        assert there.tables["limits"].source_rows == 3
        assert there.tables["schedules"].source_rows == 2
        assert there.tables["retention"].source_rows == 1
        assert there.rows == 2 + 8 + 2 + 18 + 25 + 3 + 2 + 1
        again = await copy_storage(middle, back)
        assert again.ok
        want = await _everything(source)
        assert await _everything(middle) == want
        assert await _everything(back) == want
        assert await table_checksums(back) == await table_checksums(source)
        # The queue works the same on the copy: the ready task with the highest priority.
        claimed = await back.claim_next_task("a3")
        assert claimed is not None
        assert claimed.id == "idle"
        nxt = await back.store_event(EventModel.new("after-copy", {}))
        assert nxt == 26
        # The schedules go on from where they were: the next due time of the copy's.
        clock.advance(8)
        assert await back.fire_due_schedules() == []
        clock.advance(1)
        fired = await back.fire_due_schedules()
        assert fired == [f"every-10s@{at(20).isoformat()}"]
        # The limits hold on the copy: a key at 0 admits no claim.
        await back.store_task(_task("held-back", 30, concurrency_key="paused-key"))
        assert not await back.claim_task("held-back", "a3")
    finally:
        await source.close()
        await back.close()


@pytest.mark.parametrize(
    "control",
    [
        lambda s: s.set_rate_limit("k", 1),
        lambda s: s.store_schedule("s", "1m", {"task_type": "t"}),
    ],
    ids=["limit", "schedule"],
)
async def test_copy_refuses_a_destination_with_queue_controls(
    open_storage: Opener, control: Any
) -> None:
    source = MemoryStorage()
    await source.store_agent(agent("a"))
    target = await open_storage()
    await control(target)
    with pytest.raises(ValidationError, match="not empty"):
        await copy_storage(source, target)
    assert await target.list_agents() == []


async def test_copy_refuses_a_destination_with_data(open_storage: Opener) -> None:
    source = MemoryStorage()
    await source.store_agent(agent("a"))
    target = await open_storage()
    await target.store_event(event("already-here"))
    with pytest.raises(ValidationError, match="not empty"):
        await copy_storage(source, target)
    assert [e.id for e in await target.read_events()] == ["already-here"]


async def test_a_failed_copy_leaves_the_destination_empty(open_storage: Opener) -> None:
    target = await open_storage()

    class Failing(MemoryStorage):
        async def query(self, builder: Any) -> list[Any]:
            if builder.table == "events":
                raise StorageError("source went away")
            return await super().query(builder)

    failing = Failing()
    await failing.store_agent(agent("a"))
    await failing.store_events([event("e1"), event("e2")])
    with pytest.raises(StorageError, match="source went away"):
        await copy_storage(failing, target)
    assert await target.list_agents() == []
