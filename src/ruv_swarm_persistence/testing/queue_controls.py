"""Conformance tests of the queue controls: deduplication, concurrency limits, rate limits.

Pull them into a backend's test module with
``from ruv_swarm_persistence.testing.queue_controls import *`` next to a ``storage_factory``
fixture (see :mod:`ruv_swarm_persistence.testing`). "Now" comes from the fake ``clock``. The
races here are between coroutines of one storage; the races between processes need a URL and
are run by ``tests/conformance/test_queue_controls.py`` on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ..errors import ConflictError, ValidationError
from ..models import TaskModel, TaskPriority, TaskStatus
from ..storage import QueueLimit, Storage
from . import FakeClock
from ._support import within
from .plugin import StorageFactory

# --- helpers ----------------------------------------------------------------------------------


def _task(task_id: str, **fields: Any) -> TaskModel:
    deps = fields.pop("deps", None)
    task = TaskModel.new("job", {"name": task_id}, id=task_id, dependencies=deps)
    for name, value in fields.items():
        setattr(task, name, value)
    return task


async def _claim_all(storage: Storage, agent_id: str = "w1") -> list[str]:
    """Claim until nothing more is claimable; the ids claimed, in order."""
    got: list[str] = []
    while (task := await storage.claim_next_task(agent_id)) is not None:
        got.append(task.id)
    return got


async def _unfinished(storage: Storage) -> list[str]:
    tasks = await storage.get_pending_tasks()
    held = [t for a in ("w1", "w2") for t in await storage.get_tasks_by_agent(a)]
    return sorted(
        t.id for t in [*tasks, *held] if t.status not in (TaskStatus.Completed, TaskStatus.Failed)
    )


# --- deduplication ------------------------------------------------------------------------------


async def test_a_held_dedup_key_stores_nothing_and_answers_the_holders_id(
    storage: Storage,
) -> None:
    assert await storage.store_task(_task("a", dedup_key="k")) == "a"
    assert await storage.store_task(_task("b", dedup_key="k")) == "a"
    assert await storage.get_task("b") is None
    assert [t.id for t in await storage.get_pending_tasks()] == ["a"]
    # Another key, and no key, are stored as usual.
    assert await storage.store_task(_task("c", dedup_key="other")) == "c"
    assert await storage.store_task(_task("d")) == "d"


async def test_raise_on_duplicate_makes_a_held_key_a_conflict(storage: Storage) -> None:
    await storage.store_task(_task("a", dedup_key="k"))
    with pytest.raises(ConflictError) as info:
        await storage.store_task(_task("b", dedup_key="k"), raise_on_duplicate=True)
    assert info.value.id == "b"
    assert "'a'" in str(info.value)
    assert await storage.get_task("b") is None


async def test_the_key_is_held_until_the_task_finishes(storage: Storage) -> None:
    await storage.store_task(_task("a", dedup_key="k", max_retries=1))
    assert await storage.claim_task("a", "w1")
    assert await storage.store_task(_task("b", dedup_key="k")) == "a"  # assigned holds it
    await storage.start_task("a", "w1")
    assert await storage.store_task(_task("b", dedup_key="k")) == "a"  # running holds it
    await storage.fail_task("a", "w1", "boom")  # a retry: pending again, still holding
    assert await storage.store_task(_task("b", dedup_key="k")) == "a"
    await storage.cancel_task("a")
    assert await storage.store_task(_task("b", dedup_key="k")) == "b"
    assert await storage.claim_task("b", "w1")
    await storage.complete_task("b", "w1", 1)
    assert await storage.store_task(_task("c", dedup_key="k")) == "c"
    assert await _unfinished(storage) == ["c"]


async def test_a_task_stored_finished_holds_no_key(storage: Storage) -> None:
    done = _task("old", dedup_key="k", status=TaskStatus.Cancelled)
    assert await storage.store_task(done) == "old"
    assert await storage.store_task(_task("new", dedup_key="k")) == "new"


async def test_a_batch_maps_duplicates_to_their_holder(storage: Storage) -> None:
    await storage.store_task(_task("held", dedup_key="stored"))
    batch = [
        _task("x", dedup_key="k"),
        _task("y", dedup_key="k"),
        _task("z", deps=["y", "x"]),
        _task("w", dedup_key="stored", deps=["x"]),
        _task("v", deps=["w"]),
    ]
    assert await storage.store_tasks(batch) == ["x", "x", "z", "held", "v"]
    for left_out in ("y", "w"):
        assert await storage.get_task(left_out) is None
    z = await storage.get_task("z")
    assert z is not None
    assert z.dependencies == ["x"]
    v = await storage.get_task("v")
    assert v is not None
    assert v.dependencies == ["held"]


async def test_a_batch_with_a_duplicate_raises_and_stores_nothing(storage: Storage) -> None:
    await storage.store_task(_task("held", dedup_key="k"))
    with pytest.raises(ConflictError):
        await storage.store_tasks([_task("x"), _task("y", dedup_key="k")], raise_on_duplicate=True)
    with pytest.raises(ConflictError):
        await storage.store_tasks(
            [_task("x", dedup_key="j"), _task("y", dedup_key="j")], raise_on_duplicate=True
        )
    assert [t.id for t in await storage.get_pending_tasks()] == ["held"]


async def test_a_rolled_back_holder_holds_nothing(storage: Storage) -> None:
    async with storage.transaction() as tx:
        assert await tx.store_task(_task("a", dedup_key="k")) == "a"
        assert await tx.store_task(_task("b", dedup_key="k")) == "a"
        await tx.rollback()
    assert await storage.store_task(_task("c", dedup_key="k")) == "c"


async def test_a_dead_letter_is_requeued_only_while_its_key_is_free(storage: Storage) -> None:
    for task_id in ("f1", "f2"):
        await storage.store_task(_task(task_id, dedup_key="k", max_retries=0))
        assert await storage.claim_task(task_id, "w1")
        await storage.fail_task(task_id, "w1", "boom")
    await storage.store_task(_task("live", dedup_key="k"))
    with pytest.raises(ConflictError) as info:
        await storage.retry_task("f1")
    assert info.value.id == "f1"
    assert await storage.retry_failed_tasks() == 0  # both left failed: the key is held
    await storage.cancel_task("live")
    with pytest.raises(ConflictError):
        await storage.retry_tasks(["f1", "f2"])  # the second would take the first's key
    assert await storage.retry_failed_tasks() == 1
    assert [t.id for t in await storage.get_pending_tasks()] == ["f1"]
    assert [t.id for t in await storage.get_failed_tasks()] == ["f2"]


async def test_eight_coroutines_storing_one_key_store_one_task(storage: Storage) -> None:
    ids = await within(
        asyncio.gather(*(storage.store_task(_task(f"t{i}", dedup_key="once")) for i in range(8)))
    )
    assert len(set(ids)) == 1
    assert [t.id for t in await storage.get_pending_tasks()] == [ids[0]]


async def test_keys_round_trip_and_are_fixed_once_stored(storage: Storage) -> None:
    task = _task("a", dedup_key="d-\u00e9", concurrency_key="c-1")
    await storage.store_task(task)
    got = await storage.get_task("a")
    assert got == task
    assert got is not None
    got.dedup_key = "changed"
    with pytest.raises(ValidationError) as info:
        await storage.update_task(got)
    assert info.value.field == "task.dedup_key"
    got.dedup_key, got.concurrency_key = task.dedup_key, None
    with pytest.raises(ValidationError) as info:
        await storage.update_task(got)
    assert info.value.field == "task.concurrency_key"


@pytest.mark.parametrize("field", ["dedup_key", "concurrency_key"])
@pytest.mark.parametrize("bad", ["", "x\x00y", 7, "k" * 257])
async def test_bad_keys_are_refused(storage: Storage, field: str, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        await storage.store_task(_task("a", **{field: bad}))
    assert info.value.field == f"task.{field}"
    assert await storage.get_task("a") is None


# --- concurrency limits ------------------------------------------------------------------------


async def test_claims_skip_a_key_at_its_limit(storage: Storage) -> None:
    await storage.set_concurrency_limit("k", 2)
    await storage.store_tasks(
        [_task(f"k{i}", concurrency_key="k", priority=TaskPriority.High) for i in range(4)]
        + [_task("other", concurrency_key="j"), _task("plain")]
    )
    assert await _claim_all(storage) == ["k0", "k1", "other", "plain"]
    assert not await storage.claim_task("k2", "w1")
    await storage.complete_task("k0", "w1")
    assert await _claim_all(storage) == ["k2"]
    await storage.fail_task("k1", "w1", "boom")  # a failed attempt frees its slot too
    assert await _claim_all(storage) == ["k3"]


async def test_a_limit_of_zero_pauses_a_key_and_none_removes_it(storage: Storage) -> None:
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(3)])
    await storage.set_concurrency_limit("k", 0)
    assert await _claim_all(storage) == []
    assert not await storage.claim_task("t0", "w1")
    await storage.set_concurrency_limit("k", 1)
    assert await _claim_all(storage) == ["t0"]
    await storage.set_concurrency_limit("k", None)
    assert await _claim_all(storage) == ["t1", "t2"]


async def test_released_and_expired_work_frees_its_slot(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await storage_factory(clock=clock, lease=10)
    await storage.set_concurrency_limit("k", 1)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(3)])
    assert await _claim_all(storage) == ["t0"]
    await storage.release_task("t0", "w1")
    assert await _claim_all(storage, "w2") == ["t0"]
    clock.advance(11)  # the lease runs out: a failed attempt, and the slot is free
    assert await _claim_all(storage, "w1") == ["t1"]


async def test_waiting_for_tasks_ignores_a_full_key(storage: Storage) -> None:
    await storage.set_concurrency_limit("k", 1)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(2)])
    assert await storage.claim_next_task("w1") is not None
    assert not await storage.wait_for_tasks(timeout=0)
    waiter = asyncio.ensure_future(storage.wait_for_tasks(timeout=3600))
    await asyncio.sleep(0.05)
    await storage.complete_task("t0", "w1")
    assert await within(waiter)


async def test_eight_coroutines_claim_no_more_than_the_limit(storage: Storage) -> None:
    await storage.set_concurrency_limit("k", 3)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(20)])
    got = await within(asyncio.gather(*(storage.claim_next_task(f"w{i}") for i in range(8))))
    assert len([t for t in got if t is not None]) == 3
    assert await storage.claim_next_task("late") is None


# --- rate limits -------------------------------------------------------------------------------


async def test_a_rate_limit_admits_so_many_claims_per_window(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.set_rate_limit("k", 2, per=10)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(6)])
    assert await _claim_all(storage) == ["t0", "t1"]
    await storage.complete_task("t0", "w1")  # finishing does not give a claim back
    assert await _claim_all(storage) == []
    assert not await storage.claim_task("t2", "w1")
    assert not await storage.wait_for_tasks(timeout=0)
    clock.advance(10)
    assert await _claim_all(storage) == ["t2", "t3"]


async def test_the_window_slides_with_the_claims(storage: Storage, clock: FakeClock) -> None:
    await storage.set_rate_limit("k", 2, per=10)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(6)])

    async def claim_one() -> str | None:
        task = await storage.claim_next_task("w1")
        return None if task is None else task.id

    assert await claim_one() == "t0"  # at 0
    clock.advance(6)
    assert await claim_one() == "t1"  # at 6
    assert await claim_one() is None
    clock.advance(4.5)  # at 10.5 the claim at 0 has left the window, the one at 6 has not
    assert await _claim_all(storage) == ["t2"]
    clock.advance(5)  # at 15.5 the claims at 6 and 10.5 fill the window
    assert await _claim_all(storage) == []
    clock.advance(1)  # at 16.5 the claim at 6 has left it
    assert await _claim_all(storage) == ["t3"]


async def test_rate_and_concurrency_limits_of_one_key_both_hold(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.set_rate_limit("k", 3, per=60)
    await storage.set_concurrency_limit("k", 1)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(5)])
    done = []
    for _ in range(5):
        got = await _claim_all(storage)
        for task_id in got:
            await storage.complete_task(task_id, "w1")
        done += got
    assert done == ["t0", "t1", "t2"]
    await storage.set_rate_limit("k", None)
    assert await _claim_all(storage) == ["t3"]


async def test_claims_after_a_lowering_keep_to_the_new_limit(storage: Storage) -> None:
    await storage.set_concurrency_limit("k", 3)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(8)])
    assert await _claim_all(storage) == ["t0", "t1", "t2"]
    await storage.set_concurrency_limit("k", 2)  # below the three held: they stay held
    assert await _claim_all(storage) == []
    await storage.complete_task("t0", "w1")
    assert await _claim_all(storage) == []  # two held: the new limit
    await storage.complete_task("t1", "w1")
    got = await within(asyncio.gather(*(storage.claim_next_task(f"w{i}") for i in range(8))))
    assert [t.id for t in got if t is not None] == ["t3"]
    assert await _claim_all(storage) == []


async def _held_by_update(storage: Storage, task_id: str, status: TaskStatus) -> None:
    task = await storage.get_task(task_id)
    assert task is not None
    task.status, task.assigned_to = status, "w2"
    await storage.update_task(task)


async def test_update_task_holding_a_task_obeys_its_keys_concurrency_limit(
    storage: Storage,
) -> None:
    await storage.set_concurrency_limit("k", 1)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(3)])
    assert await _claim_all(storage) == ["t0"]
    for status in (TaskStatus.Assigned, TaskStatus.Running):
        with pytest.raises(ConflictError, match="concurrency_key 'k' is at its limit"):
            await _held_by_update(storage, "t1", status)
    after = await storage.get_task("t1")
    assert after is not None
    assert (after.status, after.assigned_to) == (TaskStatus.Pending, None)
    await storage.complete_task("t0", "w1")
    await _held_by_update(storage, "t1", TaskStatus.Assigned)  # the free slot: taken
    assert await _claim_all(storage) == []  # and held, as a claim's would be
    held = await storage.get_task("t1")
    assert held is not None
    held.payload = {"edited": True}
    await storage.update_task(held)  # no status change: no claim, not refused
    with pytest.raises(ConflictError):
        await _held_by_update(storage, "t2", TaskStatus.Running)
    await storage.set_concurrency_limit("k", 2)
    await _held_by_update(storage, "t2", TaskStatus.Running)
    assert sorted(t.id for t in await storage.get_tasks_by_agent("w2")) == ["t1", "t2"]


async def test_update_task_holding_a_task_counts_against_its_keys_rate_limit(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.set_rate_limit("k", 1, per=60)
    await storage.store_tasks([_task(f"t{i}", concurrency_key="k") for i in range(3)])
    await _held_by_update(storage, "t0", TaskStatus.Assigned)
    assert await _claim_all(storage) == []  # the update was the window's one claim
    with pytest.raises(ConflictError):
        await _held_by_update(storage, "t1", TaskStatus.Assigned)
    clock.advance(60)
    assert await _claim_all(storage) == ["t1"]
    with pytest.raises(ConflictError):
        await _held_by_update(storage, "t2", TaskStatus.Assigned)


async def test_the_limits_are_listed_by_key(storage: Storage) -> None:
    assert await storage.list_queue_limits() == []
    await storage.set_rate_limit("r", 1, per=0.5)
    await storage.set_concurrency_limit("k", 2)
    await storage.set_rate_limit("k", 3, per=timedelta(minutes=1))
    await storage.set_concurrency_limit("z", 0)
    assert await storage.list_queue_limits() == [
        QueueLimit("k", concurrency=2, rate=3, per=timedelta(minutes=1)),
        QueueLimit("r", rate=1, per=timedelta(milliseconds=500)),
        QueueLimit("z", concurrency=0),
    ]
    await storage.set_concurrency_limit("k", None)
    await storage.set_rate_limit("r", None)
    assert await storage.list_queue_limits() == [
        QueueLimit("k", rate=3, per=timedelta(minutes=1)),
        QueueLimit("z", concurrency=0),
    ]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.set_concurrency_limit("", 1), "key"),
        (lambda s: s.set_concurrency_limit("k", -1), "limit"),
        (lambda s: s.set_concurrency_limit("k", 1.5), "limit"),
        (lambda s: s.set_concurrency_limit("k", True), "limit"),
        (lambda s: s.set_concurrency_limit("k", 2**31), "limit"),
        (lambda s: s.set_rate_limit("k", -1), "limit"),
        (lambda s: s.set_rate_limit("k", 1, per=0), "per"),
        (lambda s: s.set_rate_limit("k", 1, per="1s"), "per"),
        (lambda s: s.set_rate_limit(None, 1), "key"),
        (lambda s: s.store_task(_task("a"), raise_on_duplicate="yes"), "raise_on_duplicate"),
        (lambda s: s.store_tasks([_task("a")], raise_on_duplicate=1), "raise_on_duplicate"),
    ],
)
async def test_bad_limits_are_refused(storage: Storage, call: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        await call(storage)
    assert info.value.field == field


__all__ = [name for name in list(globals()) if name.startswith("test_")]
