"""Conformance tests of dead letters: tasks failed for good, listed and requeued.

Pull them in with ``from ruv_swarm_persistence.testing.dead_letters import *`` (see
:mod:`.tasks`); every test takes "now" from the fake ``clock``.
"""

from __future__ import annotations

import asyncio

import pytest

from ..errors import ConflictError, NotFoundError, ValidationError
from ..models import TaskModel, TaskStatus
from ..storage import Storage
from . import FakeClock
from ._task_support import LEASE, _get, _ids, _refused, _task

__all__ = [
    "test_dead_letters_list_tasks_failed_for_good_most_recent_first",
    "test_dead_letters_filter_by_type_and_limit",
    "test_expired_lease_past_retries_is_a_dead_letter",
    "test_retry_task_requeues_with_a_fresh_budget",
    "test_retry_task_refuses_unknown_and_unfailed_tasks",
    "test_retry_tasks_is_all_or_none",
    "test_retry_failed_tasks_by_type_counts",
    "test_retry_leaves_cancelled_dependents_and_refuses_a_dead_dependency",
    "test_retry_wakes_waiting_workers",
    "test_retry_in_a_rolled_back_transaction_is_undone",
    "test_retry_arguments_are_checked",
]


async def _dead(
    storage: Storage, clock: FakeClock, task_id: str, task_type: str = "job"
) -> TaskModel:
    """Store a task without retries, claim it and fail it: a dead letter."""
    await storage.store_task(_task(task_id, task_type=task_type, max_retries=0))
    assert await storage.claim_task(task_id, "w1")
    failed = await storage.fail_task(task_id, "w1", f"{task_id} broke")
    assert failed.status == TaskStatus.Failed
    clock.advance(1)
    return failed


async def test_dead_letters_list_tasks_failed_for_good_most_recent_first(
    storage: Storage, clock: FakeClock
) -> None:
    await _dead(storage, clock, "a")
    await _dead(storage, clock, "b")
    # A failed attempt with retries left is not a dead letter; neither are other tasks.
    await storage.store_task(_task("retrying", max_retries=2))
    assert await storage.claim_task("retrying", "w1")
    await storage.fail_task("retrying", "w1", "again")
    await storage.store_task(_task("pending"))
    assert await _ids(storage.get_failed_tasks()) == ["b", "a"]
    (b, a) = await storage.get_failed_tasks()
    assert b.error == "b broke"
    assert b.completed_at is not None
    assert a.completed_at is not None
    assert a.completed_at < b.completed_at


async def test_dead_letters_filter_by_type_and_limit(storage: Storage, clock: FakeClock) -> None:
    for i in range(3):
        await _dead(storage, clock, f"x{i}", task_type="x")
        await _dead(storage, clock, f"y{i}", task_type="y")
    assert await _ids(storage.get_failed_tasks("x")) == ["x2", "x1", "x0"]
    assert await _ids(storage.get_failed_tasks(limit=2)) == ["y2", "x2"]
    assert await _ids(storage.get_failed_tasks("y", limit=1)) == ["y2"]
    assert await storage.get_failed_tasks("z") == []
    assert await storage.get_failed_tasks(limit=0) == []


async def test_expired_lease_past_retries_is_a_dead_letter(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_task(_task("t", max_retries=0))
    assert await storage.claim_task("t", "w1")
    clock.advance(LEASE * 2)
    assert await storage.claim_next_task("w2") is None  # the claim expires the lease
    (dead,) = await storage.get_failed_tasks()
    assert dead.id == "t"
    assert "lease expired" in (dead.error or "")


async def test_retry_task_requeues_with_a_fresh_budget(storage: Storage, clock: FakeClock) -> None:
    await storage.store_task(_task("t", max_retries=1))
    for _ in range(2):
        clock.advance(3600)  # past any backoff
        assert await storage.claim_task("t", "w1")
        await storage.start_task("t", "w1")
        await storage.fail_task("t", "w1", "broke")
    failed = await _get(storage, "t")
    assert failed.status == TaskStatus.Failed
    assert failed.retry_count == 1
    clock.advance(1)

    retried = await storage.retry_task("t")
    assert retried == await _get(storage, "t")
    assert retried.status == TaskStatus.Pending
    assert retried.retry_count == 0
    assert retried.error == "broke"  # kept until the next attempt
    assert retried.assigned_to is None
    assert retried.lease_expires_at is None
    assert retried.started_at is None
    assert retried.completed_at is None
    assert retried.run_after is None
    assert retried.updated_at == clock()
    assert await storage.get_failed_tasks() == []
    # Claimable at once, and it has its retries again: one more failure is retried.
    claimed = await storage.claim_next_task("w2")
    assert claimed is not None
    assert claimed.id == "t"
    again = await storage.fail_task("t", "w2", "still broken")
    assert again.status == TaskStatus.Pending
    assert again.retry_count == 1


async def test_retry_task_refuses_unknown_and_unfailed_tasks(
    storage: Storage, clock: FakeClock
) -> None:
    await _refused(storage, storage.retry_task("nope"), NotFoundError)
    await storage.store_task(_task("pending"))
    await storage.store_task(_task("done"))
    assert await storage.claim_task("done", "w1")
    await storage.complete_task("done", "w1", {"ok": True})
    await storage.store_task(_task("held"))
    assert await storage.claim_task("held", "w1")
    await storage.store_task(_task("cancelled"))
    await storage.cancel_task("cancelled")
    for task_id in ("pending", "done", "held", "cancelled"):
        err = await _refused(storage, storage.retry_task(task_id), ConflictError)
        assert "not failed" in str(err)


async def test_retry_tasks_is_all_or_none(storage: Storage, clock: FakeClock) -> None:
    await _dead(storage, clock, "a")
    await _dead(storage, clock, "b")
    await storage.store_task(_task("p"))
    await _refused(storage, storage.retry_tasks(["a", "p", "b"]), ConflictError)
    await _refused(storage, storage.retry_tasks(["a", "missing"]), NotFoundError)
    assert await storage.retry_tasks([]) == []
    retried = await storage.retry_tasks(["b", "a", "b"])
    assert [t.id for t in retried] == ["b", "a"]
    assert all(t.status == TaskStatus.Pending for t in retried)
    assert await storage.get_failed_tasks() == []


async def test_retry_failed_tasks_by_type_counts(storage: Storage, clock: FakeClock) -> None:
    for i in range(3):
        await _dead(storage, clock, f"x{i}", task_type="x")
    await _dead(storage, clock, "y0", task_type="y")
    assert await storage.retry_failed_tasks("x") == 3
    assert await _ids(storage.get_failed_tasks()) == ["y0"]
    assert sorted(await _ids(storage.get_ready_tasks())) == ["x0", "x1", "x2"]
    assert await storage.retry_failed_tasks("x") == 0
    assert await storage.retry_failed_tasks() == 1
    assert await storage.get_failed_tasks() == []


async def test_retry_leaves_cancelled_dependents_and_refuses_a_dead_dependency(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks(
        [
            _task("parent", max_retries=0),
            _task("child", deps=["parent"]),
            _task("failed-child", deps=["parent"]),
        ]
    )
    # A pending task may be failed by update_task before its dependency ends.
    failed_child = await _get(storage, "failed-child")
    failed_child.status = TaskStatus.Failed
    await storage.update_task(failed_child)
    assert await storage.claim_task("parent", "w1")
    await storage.fail_task("parent", "w1", "broke")
    assert (await _get(storage, "child")).status == TaskStatus.Cancelled

    # Its dependency failed too: requeued, it could never run.
    err = await _refused(storage, storage.retry_task("failed-child"), ConflictError)
    assert "parent" in str(err)
    # In bulk, what cannot run is left where it is.
    assert await storage.retry_failed_tasks() == 1
    assert (await _get(storage, "parent")).status == TaskStatus.Pending
    assert (await _get(storage, "child")).status == TaskStatus.Cancelled
    assert await _ids(storage.get_failed_tasks()) == ["failed-child"]
    # Once the dependency is back in the queue, the dependent may follow, and waits for it.
    assert (await storage.retry_task("failed-child")).status == TaskStatus.Pending
    assert await _ids(storage.get_ready_tasks()) == ["parent"]
    assert await storage.claim_task("parent", "w1")
    await storage.complete_task("parent", "w1")
    assert await _ids(storage.get_ready_tasks()) == ["failed-child"]


async def test_retry_wakes_waiting_workers(storage: Storage, clock: FakeClock) -> None:
    await _dead(storage, clock, "t")
    waiter = asyncio.ensure_future(storage.wait_for_tasks(timeout=30))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await storage.retry_task("t")
    assert await asyncio.wait_for(waiter, 30) is True


async def test_retry_in_a_rolled_back_transaction_is_undone(
    storage: Storage, clock: FakeClock
) -> None:
    await _dead(storage, clock, "t")

    async def retry_then_fail() -> None:
        async with storage.transaction() as tx:
            assert (await tx.retry_task("t")).status == TaskStatus.Pending
            assert await tx.get_failed_tasks() == []
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await retry_then_fail()
    assert await _ids(storage.get_failed_tasks()) == ["t"]
    async with storage.transaction() as tx:
        assert await tx.retry_failed_tasks() == 1
    assert (await _get(storage, "t")).status == TaskStatus.Pending


async def test_retry_arguments_are_checked(storage: Storage) -> None:
    with pytest.raises(ValidationError) as exc:
        await storage.retry_tasks("t")
    assert exc.value.field == "task_ids"
    with pytest.raises(ValidationError) as exc:
        await storage.retry_task("")
    assert exc.value.field == "task_id"
    with pytest.raises(ValidationError) as exc:
        await storage.get_failed_tasks(limit=-1)
    assert exc.value.field == "limit"
    with pytest.raises(ValidationError) as exc:
        await storage.retry_failed_tasks(task_type="")
    assert exc.value.field == "task_type"
