"""Conformance tests of retention: what each table keeps, on request and in the background.

Pull them in with ``from ruv_swarm_persistence.testing.retention import *``; every test
takes "now" from the fake ``clock``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ..errors import ValidationError
from ..models import EventModel, MessageModel, MetricModel, TaskModel
from ..query import QueryBuilder
from ..retention import Keep, RetentionPolicy
from ..storage import PruneResult, Storage
from . import FakeClock
from ._support import WAIT, event, message, metric
from ._task_support import _get, _task
from .plugin import StorageFactory

__all__ = [
    "test_no_policy_removes_nothing",
    "test_events_by_age_and_sequences_never_reused",
    "test_events_by_count_keep_the_newest",
    "test_metrics_by_age_or_count",
    "test_messages_only_read_ones_by_read_time",
    "test_completed_tasks_by_age_other_statuses_stay",
    "test_completed_tasks_by_count",
    "test_age_and_count_together_remove_what_either_says",
    "test_a_dependency_stays_while_a_dependent_may_still_run",
    "test_the_storage_policy_and_the_report",
    "test_a_pass_in_a_rolled_back_transaction_is_undone",
    "test_retention_runs_by_itself_in_the_background",
    "test_retention_arguments_are_checked",
    "test_a_restored_record_is_the_report_and_passes_add_to_it",
    "test_a_restored_record_is_checked",
]

H = timedelta(hours=1)


async def _ids(storage: Storage, model: type) -> list[str]:
    rows: list[Any] = await storage.query(QueryBuilder(model).order_by("id"))
    return [r.id for r in rows]


async def _events_aged(storage: Storage, clock: FakeClock, hours: dict[str, float]) -> None:
    for event_id, h in hours.items():
        ev = event(event_id)
        ev.timestamp = clock() - h * H
        await storage.store_event(ev)


def _removed(
    *, tasks: int = 0, events: int = 0, messages: int = 0, metrics: int = 0
) -> PruneResult:
    return PruneResult(events=events, metrics=metrics, messages=messages, tasks=tasks)


async def test_no_policy_removes_nothing(storage: Storage, clock: FakeClock) -> None:
    await _events_aged(storage, clock, {"old": 1000})
    assert await storage.apply_retention() == PruneResult()
    assert await _ids(storage, EventModel) == ["old"]
    report = await storage.retention_report()
    assert report.policy is None
    assert report.last_run is None
    assert report.removed == {"tasks": 0, "events": 0, "messages": 0, "metrics": 0}


async def test_events_by_age_and_sequences_never_reused(storage: Storage, clock: FakeClock) -> None:
    await _events_aged(storage, clock, {"e3": 3, "e1": 1, "e2": 2.5, "e0": 0})
    assert await storage.apply_retention("events:2h") == _removed(events=2)
    assert await _ids(storage, EventModel) == ["e0", "e1"]
    assert [e.id for e in await storage.read_events()] == ["e1", "e0"]
    assert await storage.apply_retention("events:2h") == PruneResult()
    # Every event gone: the next still gets a sequence after all those handed out.
    clock.advance(1)
    assert await storage.apply_retention("events:1ms") == _removed(events=2)
    assert await storage.store_event(event("new")) == 5


async def test_events_by_count_keep_the_newest(storage: Storage, clock: FakeClock) -> None:
    # By sequence, whatever the timestamps say.
    await _events_aged(storage, clock, {"a": 0, "b": 5, "c": 1, "d": 9})
    assert await storage.apply_retention({"events": Keep(count=2)}) == _removed(events=2)
    assert await _ids(storage, EventModel) == ["c", "d"]
    assert await storage.apply_retention({"events": 0}) == _removed(events=2)
    assert await storage.read_events() == []


async def test_metrics_by_age_or_count(storage: Storage, clock: FakeClock) -> None:
    for metric_id, h in {"m1": 5, "m2": 3, "m3": 1, "m4": 1, "m5": 0}.items():
        m = metric(metric_id, 1.0)
        m.timestamp = clock() - h * H
        await storage.store_metric(m)
    assert await storage.apply_retention("metrics:4h") == _removed(metrics=1)
    # The newest three by timestamp, ties by id: m3 and m4 share a time, m3 goes first.
    assert await storage.apply_retention("metrics:2") == _removed(metrics=2)
    assert await _ids(storage, MetricModel) == ["m4", "m5"]
    # Both rules: a row goes when either says so.
    policy = RetentionPolicy(metrics=Keep(age=2 * 3600, count=5))
    assert await storage.apply_retention(policy) == PruneResult()
    assert await storage.apply_retention("metrics:30m+5") == _removed(metrics=1)
    assert await _ids(storage, MetricModel) == ["m5"]


async def test_messages_only_read_ones_by_read_time(storage: Storage, clock: FakeClock) -> None:
    for i in range(4):
        await storage.store_message(message(f"r{i}", "a1", "a2"))
    await storage.store_message(message("unread", "a1", "a2"))
    for i in range(4):
        await storage.mark_message_read(f"r{i}")
        clock.advance(H)
    # Read 4h, 3h, 2h and 1h ago; unread mail stays whatever its age.
    assert await storage.apply_retention("messages:150m") == _removed(messages=2)
    assert await _ids(storage, MessageModel) == ["r2", "r3", "unread"]
    assert await storage.apply_retention("messages:1") == _removed(messages=1)
    assert await storage.apply_retention("messages:0") == _removed(messages=1)
    assert await _ids(storage, MessageModel) == ["unread"]


async def _completed(storage: Storage, task_id: str, **fields: object) -> None:
    assert await storage.claim_task(task_id, "w1")
    await storage.complete_task(task_id, "w1", {"of": task_id})


async def test_completed_tasks_by_age_other_statuses_stay(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks(
        [_task(t, max_retries=0) for t in ("old", "new", "failed", "held", "cancelled", "pending")]
    )
    await _completed(storage, "old")
    assert await storage.claim_task("failed", "w1")
    await storage.fail_task("failed", "w1", "broke")
    await storage.cancel_task("cancelled")
    assert await storage.claim_task("held", "w1")
    clock.advance(3 * H)
    await _completed(storage, "new")
    assert await storage.apply_retention("tasks:2h") == _removed(tasks=1)
    assert await storage.get_task("old") is None
    assert await _ids(storage, TaskModel) == ["cancelled", "failed", "held", "new", "pending"]
    clock.advance(3 * H)
    assert await storage.apply_retention("tasks:2h") == _removed(tasks=1)
    assert await _ids(storage, TaskModel) == ["cancelled", "failed", "held", "pending"]


async def test_completed_tasks_by_count(storage: Storage, clock: FakeClock) -> None:
    await storage.store_tasks([_task(f"t{i}") for i in range(5)])
    for i in range(5):
        await _completed(storage, f"t{i}")
        clock.advance(1)
    assert await storage.apply_retention("tasks:2") == _removed(tasks=3)
    assert await _ids(storage, TaskModel) == ["t3", "t4"]


async def test_age_and_count_together_remove_what_either_says(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task(f"t{i}") for i in range(6)])
    for i in range(3):
        await _completed(storage, f"t{i}")
    clock.advance(3 * H)
    for i in range(3, 5):
        await _completed(storage, f"t{i}")
    # The age takes more than the count: t0..t2 are 3h old; the count alone would keep two.
    assert await storage.apply_retention("tasks:2h+4") == _removed(tasks=3)
    assert await _ids(storage, TaskModel) == ["t3", "t4", "t5"]
    # The count takes more than the age: t3..t5 finished together, the highest id is newest.
    await _completed(storage, "t5")
    assert await storage.apply_retention("tasks:2h+1") == _removed(tasks=2)
    assert await _ids(storage, TaskModel) == ["t5"]


async def test_a_dependency_stays_while_a_dependent_may_still_run(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks(
        [
            _task("parent"),
            _task("waiting", deps=["parent"]),
            _task("other-parent"),
            _task("failing", deps=["other-parent"], max_retries=0),
        ]
    )
    await _completed(storage, "parent")
    await _completed(storage, "other-parent")
    assert await storage.claim_task("failing", "w1")
    await storage.fail_task("failing", "w1", "broke")
    clock.advance(10 * H)
    # A pending dependent and a failed one (which retry_task may requeue) read their results.
    assert await storage.apply_retention("tasks:1h") == PruneResult()
    assert await storage.get_dependency_results("waiting") == {"parent": {"of": "parent"}}
    await storage.retry_task("failing")
    await _completed(storage, "failing")
    assert await storage.apply_retention("tasks:1h") == _removed(tasks=1)
    assert await storage.get_task("other-parent") is None
    # The dependent that ran keeps its dependencies as they were; the removed one's result
    # is no longer there to read.
    assert (await _get(storage, "failing")).dependencies == ["other-parent"]
    assert await storage.get_dependency_results("failing") == {}
    await _completed(storage, "waiting")
    clock.advance(10 * H)
    assert await storage.apply_retention("tasks:1h") == _removed(tasks=3)
    assert await _ids(storage, TaskModel) == []
    # A new task may not name a removed one: it is unknown.
    with pytest.raises(ValidationError):
        await storage.store_task(_task("late", deps=["parent"]))


async def test_the_storage_policy_and_the_report(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    policy = RetentionPolicy(events=Keep(count=1), metrics=Keep(age=60), every=3600)
    storage = await storage_factory(clock=clock, retention=policy)
    await _events_aged(storage, clock, {"a": 2, "b": 1, "c": 0})
    assert await storage.apply_retention() == _removed(events=2)
    assert await storage.apply_retention() == PruneResult()
    report = await storage.retention_report()
    assert report.policy == policy
    assert report.policy.describe() == {"events": "1 rows", "metrics": "1m"}
    assert report.last_run == clock()
    assert report.removed == {"tasks": 0, "events": 2, "messages": 0, "metrics": 0}
    # A policy given for one pass counts in the record too.
    clock.advance(5)
    await storage.store_task(_task("t"))
    await _completed(storage, "t")
    assert await storage.apply_retention("tasks:0") == _removed(tasks=1)
    report = await storage.retention_report()
    assert report.last_run == clock()
    assert report.removed == {"tasks": 1, "events": 2, "messages": 0, "metrics": 0}


async def test_a_pass_in_a_rolled_back_transaction_is_undone(
    storage: Storage, clock: FakeClock
) -> None:
    await _events_aged(storage, clock, {"a": 5, "b": 0})

    async def pass_then_fail() -> None:
        async with storage.transaction() as tx:
            assert await tx.apply_retention("events:1h") == _removed(events=1)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await pass_then_fail()
    assert await _ids(storage, EventModel) == ["a", "b"]
    assert (await storage.retention_report()).last_run is None


async def test_retention_runs_by_itself_in_the_background(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await storage_factory(clock=clock, retention="events:1,every:50ms")
    await _events_aged(storage, clock, {"a": 2, "b": 1, "c": 0})

    # No pass is asked for: the storage's own maintenance must get there (within WAIT).
    for _ in range(int(WAIT / 0.02)):
        if await _ids(storage, EventModel) == ["c"]:
            break
        await asyncio.sleep(0.02)
    assert await _ids(storage, EventModel) == ["c"]
    report = await storage.retention_report()
    assert report.removed["events"] == 2
    assert report.last_run is not None


async def test_retention_arguments_are_checked(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    bad = {
        "events": "retention",
        "trucks:1d": "retention",
        "events:soon": "retention.events",
        "events:-5": "retention.events",
        "every:0s": "retention.every",
    }
    for text, field in bad.items():
        # The argument is called policy; the option, retention.
        with pytest.raises(ValidationError) as exc:
            await storage.apply_retention(text)
        assert exc.value.field == field.replace("retention", "policy"), text
        with pytest.raises(ValidationError) as exc:
            await storage_factory(retention=text)
        assert exc.value.field == field, text
    with pytest.raises(ValidationError) as exc:
        await storage.apply_retention(5)  # type: ignore[arg-type]
    assert exc.value.field == "policy"
    with pytest.raises(ValidationError):
        Keep()


async def test_a_restored_record_is_the_report_and_passes_add_to_it(
    storage: Storage, clock: FakeClock
) -> None:
    await _events_aged(storage, clock, {"a": 2, "b": 0})
    assert await storage.apply_retention("events:1h") == _removed(events=1)
    ran = clock() - 3 * H
    await storage.restore_retention_record(ran, {"tasks": 7, "metrics": 2})
    report = await storage.retention_report()
    assert report.last_run == ran
    assert report.removed == {"tasks": 7, "events": 0, "messages": 0, "metrics": 2}
    clock.advance(2)
    assert await storage.apply_retention("events:1s") == _removed(events=1)
    report = await storage.retention_report()
    assert report.last_run == clock()
    assert report.removed == {"tasks": 7, "events": 1, "messages": 0, "metrics": 2}
    # Never ran: no time, nothing removed, as on a new database.
    await storage.restore_retention_record(None, {})
    report = await storage.retention_report()
    assert report.last_run is None
    assert report.removed == {"tasks": 0, "events": 0, "messages": 0, "metrics": 0}


async def test_a_restored_record_is_checked(storage: Storage, clock: FakeClock) -> None:
    bad: list[tuple[Any, Any, str]] = [
        ("yesterday", {}, "last_run"),
        (clock().replace(tzinfo=None), {}, "last_run"),
        (None, [("events", 1)], "removed"),
        (None, {"trucks": 1}, "removed"),
        (None, {"events": -1}, "removed.events"),
        (None, {"events": 1.5}, "removed.events"),
        (None, {"events": True}, "removed.events"),
        (None, {"events": "3"}, "removed.events"),
    ]
    await storage.restore_retention_record(clock(), {"events": 4})
    for last_run, removed, field in bad:
        with pytest.raises(ValidationError) as exc:
            await storage.restore_retention_record(last_run, removed)
        assert exc.value.field == field, (last_run, removed)
    report = await storage.retention_report()
    assert (report.last_run, report.removed["events"]) == (clock(), 4)
