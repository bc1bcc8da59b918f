"""Conformance tests of schedules: due times, time zones, missed runs, exactly-once firing.

Pull them in with ``from ruv_swarm_persistence.testing.schedules import *``; every test
takes "now" from a fake clock. Cron schedules need the ``cron`` extra (``cronsim``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ..errors import ConflictError, NotFoundError, ValidationError
from ..models import TaskModel, TaskPriority, TaskStatus
from ..schedules import GRACE_US, run_scheduler
from ..storage import Storage
from . import FakeClock
from ._support import WAIT
from .plugin import StorageFactory

__all__ = [
    "test_an_interval_schedule_fires_each_due_time_once",
    "test_a_cron_schedule_honours_its_time_zone",
    "test_a_cron_schedule_across_a_daylight_saving_gap",
    "test_missed_runs_are_skipped_by_default",
    "test_missed_runs_run_once_when_asked",
    "test_a_late_pass_within_the_grace_still_fires",
    "test_redefining_keeps_the_next_due_time_unless_the_timing_changed",
    "test_pause_resume_delete",
    "test_concurrent_passes_fire_each_due_time_once",
    "test_run_scheduler_enqueues_in_the_background",
    "test_a_pass_in_a_rolled_back_transaction_is_undone",
    "test_a_task_id_taken_by_another_task_is_a_conflict",
    "test_schedule_arguments_are_checked",
    "test_a_restored_schedule_keeps_its_due_times_and_pause",
    "test_a_restored_schedule_is_checked",
]

TEMPLATE: dict[str, Any] = {"task_type": "tick", "payload": {"n": 1}, "priority": 3}


def _at(clock: FakeClock) -> FakeClock:
    return clock


async def _clocked(storage_factory: StorageFactory, start: datetime) -> tuple[Storage, FakeClock]:
    clock = FakeClock(start)
    return await storage_factory(clock=clock), clock


async def _scheduled(storage: Storage) -> list[TaskModel]:
    return sorted((t for t in await storage.get_pending_tasks() if "@" in t.id), key=lambda t: t.id)


async def test_an_interval_schedule_fires_each_due_time_once(
    storage: Storage, clock: FakeClock
) -> None:
    stored = await storage.store_schedule("tick", "10s", TEMPLATE)
    start = clock()
    assert stored.next_due == start + timedelta(seconds=10)
    assert stored.last_due is None
    assert stored.paused is False
    assert stored.task_template == {**TEMPLATE, "max_retries": 3}
    assert await storage.fire_due_schedules() == []
    clock.advance(10)
    due = start + timedelta(seconds=10)
    assert await storage.fire_due_schedules() == [f"tick@{due.isoformat()}"]
    assert await storage.fire_due_schedules() == []
    (task,) = await _scheduled(storage)
    assert task.task_type == "tick"
    assert task.payload == {"n": 1}
    assert task.priority == TaskPriority.Critical
    assert task.status == TaskStatus.Pending
    after = await storage.get_schedule("tick")
    assert after is not None
    assert after.last_due == due
    assert after.next_due == due + timedelta(seconds=10)
    clock.advance(10)
    assert len(await storage.fire_due_schedules()) == 1
    assert len(await _scheduled(storage)) == 2


async def test_a_cron_schedule_honours_its_time_zone(storage_factory: StorageFactory) -> None:
    pytest.importorskip("cronsim")
    storage, clock = await _clocked(storage_factory, datetime(2024, 1, 10, 12, 0, tzinfo=UTC))
    berlin = await storage.store_schedule("b", "0 3 * * *", TEMPLATE, timezone="Europe/Berlin")
    utc = await storage.store_schedule("u", "0 3 * * *", TEMPLATE)
    # 03:00 in Berlin is 02:00 UTC in winter.
    assert berlin.next_due == datetime(2024, 1, 11, 2, 0, tzinfo=UTC)
    assert utc.next_due == datetime(2024, 1, 11, 3, 0, tzinfo=UTC)
    clock.advance(timedelta(hours=14))  # 02:00 UTC
    assert await storage.fire_due_schedules() == ["b@2024-01-11T02:00:00+00:00"]
    clock.advance(timedelta(hours=1))
    assert await storage.fire_due_schedules() == ["u@2024-01-11T03:00:00+00:00"]


async def test_a_cron_schedule_across_a_daylight_saving_gap(
    storage_factory: StorageFactory,
) -> None:
    pytest.importorskip("cronsim")
    # Berlin skips 02:00-03:00 on 2024-03-31: the 02:30 run happens once, at 03:00 CEST.
    storage, clock = await _clocked(storage_factory, datetime(2024, 3, 30, 12, 0, tzinfo=UTC))
    s = await storage.store_schedule("gap", "30 2 * * *", TEMPLATE, timezone="Europe/Berlin")
    assert s.next_due == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    clock.advance(timedelta(hours=13))
    assert len(await storage.fire_due_schedules()) == 1
    after = await storage.get_schedule("gap")
    assert after is not None
    assert after.next_due == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)  # 02:30 CEST


async def test_missed_runs_are_skipped_by_default(storage: Storage, clock: FakeClock) -> None:
    await storage.store_schedule("tick", "5m", TEMPLATE)
    # Ten due times passed, the latest 2 min ago, past the grace: all of them were missed.
    clock.advance(timedelta(minutes=52))
    assert await storage.fire_due_schedules() == []
    after = await storage.get_schedule("tick")
    assert after is not None
    assert after.next_due > clock()
    assert after.next_due - clock() <= timedelta(minutes=5)
    assert after.last_due is None
    # Within the grace, a due time fires as usual.
    clock.advance(after.next_due - clock())
    assert len(await storage.fire_due_schedules()) == 1
    assert len(await _scheduled(storage)) == 1


async def test_missed_runs_run_once_when_asked(storage: Storage, clock: FakeClock) -> None:
    start = clock()
    await storage.store_schedule("tick", "5m", TEMPLATE, missed="run_once")
    clock.advance(timedelta(minutes=52))
    latest = start + timedelta(minutes=50)
    assert await storage.fire_due_schedules() == [f"tick@{latest.isoformat()}"]
    assert await storage.fire_due_schedules() == []
    after = await storage.get_schedule("tick")
    assert after is not None
    assert after.last_due == latest
    assert after.next_due == latest + timedelta(minutes=5)


async def test_a_late_pass_within_the_grace_still_fires(storage: Storage, clock: FakeClock) -> None:
    await storage.store_schedule("tick", "1h", TEMPLATE)
    clock.advance(timedelta(hours=1, microseconds=GRACE_US))
    assert len(await storage.fire_due_schedules()) == 1


async def test_redefining_keeps_the_next_due_time_unless_the_timing_changed(
    storage: Storage, clock: FakeClock
) -> None:
    first = await storage.store_schedule("s", "1h", TEMPLATE)
    await storage.pause_schedule("s")
    clock.advance(60)
    again = await storage.store_schedule("s", "1h", {"task_type": "other"}, missed="run_once")
    assert again.next_due == first.next_due
    assert again.created_at == first.created_at
    assert again.paused is True  # a redefinition does not resume it
    assert again.task_template["task_type"] == "other"
    assert again.missed == "run_once"
    changed = await storage.store_schedule("s", "2h", TEMPLATE)
    assert changed.next_due == clock() + timedelta(hours=2)
    assert changed.spec == "2h"
    assert [s.name for s in await storage.list_schedules()] == ["s"]


async def test_pause_resume_delete(storage: Storage, clock: FakeClock) -> None:
    await storage.store_schedule("a", "10s", TEMPLATE)
    await storage.store_schedule("b", "10s", TEMPLATE)
    assert (await storage.pause_schedule("a")).paused is True
    clock.advance(10)
    fired = await storage.fire_due_schedules()
    assert [f.split("@")[0] for f in fired] == ["b"]
    clock.advance(95)
    resumed = await storage.resume_schedule("a")
    assert resumed.paused is False
    assert resumed.next_due > clock()  # no catch-up for the paused time
    assert resumed.next_due - clock() <= timedelta(seconds=10)
    await storage.delete_schedule("b")
    await storage.delete_schedule("b")
    assert await storage.get_schedule("b") is None
    assert [s.name for s in await storage.list_schedules()] == ["a"]
    assert len(await _scheduled(storage)) == 1  # the task b enqueued stays
    with pytest.raises(NotFoundError):
        await storage.pause_schedule("b")
    with pytest.raises(NotFoundError):
        await storage.resume_schedule("b")


async def test_concurrent_passes_fire_each_due_time_once(
    storage: Storage, clock: FakeClock
) -> None:
    for name in ("a", "b", "c"):
        await storage.store_schedule(name, "5s", TEMPLATE)
    fired: list[str] = []
    for _ in range(4):
        clock.advance(5)
        rounds = await asyncio.gather(*(storage.fire_due_schedules() for _ in range(8)))
        fired += [task_id for r in rounds for task_id in r]
    assert len(fired) == len(set(fired)) == 12
    assert sorted(t.id for t in await _scheduled(storage)) == sorted(fired)


async def test_run_scheduler_enqueues_in_the_background(storage: Storage, clock: FakeClock) -> None:
    await storage.store_schedule("tick", "1s", TEMPLATE)
    clock.advance(1)
    stop = asyncio.Event()
    runner = asyncio.ensure_future(run_scheduler(storage, poll=0.02, stop=stop))
    try:
        assert await asyncio.wait_for(storage.wait_for_tasks(timeout=WAIT), WAIT * 2)
    finally:
        stop.set()
        await asyncio.wait_for(runner, WAIT)
    assert len(await _scheduled(storage)) == 1


async def test_a_pass_in_a_rolled_back_transaction_is_undone(
    storage: Storage, clock: FakeClock
) -> None:
    before = await storage.store_schedule("tick", "10s", TEMPLATE)
    clock.advance(10)

    async def fire_then_fail() -> None:
        async with storage.transaction() as tx:
            assert len(await tx.fire_due_schedules()) == 1
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await fire_then_fail()
    assert await storage.get_schedule("tick") == before
    assert await _scheduled(storage) == []
    assert len(await storage.fire_due_schedules()) == 1


async def test_a_task_id_taken_by_another_task_is_a_conflict(
    storage: Storage, clock: FakeClock
) -> None:
    before = await storage.store_schedule("tick", "10s", TEMPLATE)
    clock.advance(10)
    taken = TaskModel.new("mine", None, id=f"tick@{before.next_due.isoformat()}")
    await storage.store_task(taken)
    with pytest.raises(ConflictError):
        await storage.fire_due_schedules()
    assert await storage.get_schedule("tick") == before


async def test_schedule_arguments_are_checked(storage: Storage) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"cron_or_interval": "0s"}, "cron_or_interval"),
        ({"cron_or_interval": -5}, "cron_or_interval"),
        ({"cron_or_interval": float("nan")}, "cron_or_interval"),
        ({"cron_or_interval": ["1m"]}, "cron_or_interval"),
        ({"task_template": "tick"}, "task_template"),
        ({"task_template": {"payload": 1}}, "task_template"),
        ({"task_template": {"task_type": "t", "colour": 1}}, "task_template"),
        ({"task_template": {"task_type": "t", "payload": float("nan")}}, "task.payload"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": 5}, "timezone"),
        ({"missed": "catch_up"}, "missed"),
    ]
    good: dict[str, Any] = {
        "name": "s",
        "cron_or_interval": "1m",
        "task_template": TEMPLATE,
        "timezone": "UTC",
        "missed": "skip",
    }
    for change, field in bad:
        args = {**good, **change}
        with pytest.raises(ValidationError) as exc:
            await storage.store_schedule(
                args["name"],
                args["cron_or_interval"],
                args["task_template"],
                timezone=args["timezone"],
                missed=args["missed"],
            )
        assert exc.value.field == field, change
    assert await storage.list_schedules() == []
    with pytest.raises(ValidationError) as exc:
        await storage.get_schedule("")
    assert exc.value.field == "name"


async def test_a_restored_schedule_keeps_its_due_times_and_pause(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_schedule("a", "10s", TEMPLATE, missed="run_once")
    await storage.store_schedule("b", "1h", {"task_type": "other", "concurrency_key": "k"})
    clock.advance(10)
    assert len(await storage.fire_due_schedules()) == 1
    await storage.pause_schedule("b")
    clock.advance(3)
    before = await storage.list_schedules()
    assert before[0].last_due is not None
    assert before[1].paused
    for schedule in before:
        await storage.delete_schedule(schedule.name)
    for schedule in reversed(before):
        assert await storage.restore_schedule(schedule) == schedule
    assert await storage.list_schedules() == before
    with pytest.raises(ConflictError):
        await storage.restore_schedule(dataclasses.replace(before[0], paused=True))
    assert await storage.list_schedules() == before
    # It fires at the due time it kept (20 s in, not 10 s after the restore).
    clock.advance(6)
    assert await storage.fire_due_schedules() == []
    clock.advance(1)
    assert [f.split("@")[0] for f in await storage.fire_due_schedules()] == ["a"]


async def test_a_restored_schedule_is_checked(storage: Storage, clock: FakeClock) -> None:
    good = await storage.store_schedule("s", "1m", TEMPLATE)
    await storage.delete_schedule("s")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"name": ""}, "schedule.name"),
        ({"name": "x" * 201}, "schedule.name"),
        ({"spec": "0s"}, "schedule.spec"),
        ({"spec": "every other day"}, "schedule.spec"),
        ({"timezone": "Mars/Olympus"}, "schedule.timezone"),
        ({"task_template": {"payload": 1}}, "schedule.task_template"),
        ({"task_template": {"task_type": "t", "payload": float("nan")}}, "schedule.task_template"),
        ({"missed": "catch_up"}, "schedule.missed"),
        ({"paused": 1}, "schedule.paused"),
        ({"next_due": good.next_due.replace(tzinfo=None)}, "schedule.next_due"),
        ({"last_due": "yesterday"}, "schedule.last_due"),
        ({"created_at": None}, "schedule.created_at"),
        ({"updated_at": 5}, "schedule.updated_at"),
    ]
    for change, field in bad:
        with pytest.raises(ValidationError) as exc:
            await storage.restore_schedule(dataclasses.replace(good, **change))
        assert exc.value.field == field, change
    with pytest.raises(ValidationError) as exc:
        await storage.restore_schedule({"name": "s"})  # type: ignore[arg-type]
    assert exc.value.field == "schedule"
    assert await storage.list_schedules() == []
