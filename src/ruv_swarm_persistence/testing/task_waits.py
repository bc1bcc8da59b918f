"""Conformance tests of what a worker needs around one task: waiting for it to finish
(``wait_for_task``), reading its dependencies' results (``get_dependency_results``) and giving
it back (``release_task``).

Pull them into a backend's test module with
``from ruv_swarm_persistence.testing.task_waits import *`` next to a ``storage_factory`` fixture
(see :mod:`ruv_swarm_persistence.testing`). "Now" comes from the fake ``clock``; a waiter is
given a long timeout and bounded far below it, so only a wake-up can answer it in time.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ..errors import LeaseLostError, NotFoundError, StorageError
from ..models import TaskModel, TaskStatus
from ..query import QueryBuilder
from ..rules import RetryPolicy
from ..storage import Storage
from . import FakeClock
from ._support import agent, within
from .plugin import StorageFactory

#: A waiter's own timeout: far beyond the bound ``within`` puts on it, so a waiter that
#: returns in time was woken, not timed out.
LONG = 3600
LEASE = timedelta(seconds=30)  # the storages' default lease
POLICY = RetryPolicy(base_us=2_000_000, factor=3.0, max_us=10_000_000)


# --- helpers ----------------------------------------------------------------------------------


def _task(task_id: str, *, deps: list[str] | None = None, **fields: Any) -> TaskModel:
    task = TaskModel.new("job", {"name": task_id}, id=task_id, dependencies=deps)
    for name, value in fields.items():
        setattr(task, name, value)
    return task


async def _get(storage: Storage, task_id: str) -> TaskModel:
    task = await storage.get_task(task_id)
    assert task is not None, f"task {task_id} is missing"
    return task


async def _claimed(storage: Storage, task_id: str, agent_id: str = "w1", **fields: Any) -> None:
    """Store a task and claim it for ``agent_id``."""
    await storage.store_task(_task(task_id, **fields))
    assert await storage.claim_task(task_id, agent_id)


async def _settle() -> None:
    """Let other tasks run until they wait on something (a few turns, a little real time)."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def _waiting(storage: Storage, task_id: str) -> asyncio.Task[TaskModel | None]:
    """A waiter for ``task_id`` with a long timeout, started and left waiting."""
    waiter = asyncio.create_task(storage.wait_for_task(task_id, timeout=LONG))
    await _settle()
    assert not waiter.done(), "the waiter returned before the task finished"
    return waiter


async def _woken(waiter: asyncio.Task[TaskModel | None]) -> TaskModel:
    """What the waiter returned once woken (bounded far below its own timeout)."""
    got = await within(waiter)
    assert got is not None, "the waiter timed out instead of being woken"
    return got


async def _tasks(storage: Storage) -> list[TaskModel]:
    return await storage.query(QueryBuilder(TaskModel).order_by("id"))


# --- wait_for_task ----------------------------------------------------------------------------


async def test_wait_for_task_returns_a_finished_task_at_once(storage: Storage) -> None:
    await _claimed(storage, "t1")
    await storage.complete_task("t1", "w1", {"answer": 42})
    for timeout in (None, 0, LONG):
        got = await within(storage.wait_for_task("t1", timeout))
        assert got is not None
        assert got.status == TaskStatus.Completed
        assert got.result == {"answer": 42}
        assert got == await _get(storage, "t1")


async def test_wait_for_task_wakes_when_the_task_completes(storage: Storage) -> None:
    await _claimed(storage, "t1")
    waiter = await _waiting(storage, "t1")
    await storage.start_task("t1", "w1")
    await _settle()
    assert not waiter.done()

    async def finish() -> None:
        await storage.complete_task("t1", "w1", [1, "two"])

    await asyncio.create_task(finish())
    got = await _woken(waiter)
    assert got.status == TaskStatus.Completed
    assert got.result == [1, "two"]
    assert got == await _get(storage, "t1")


async def test_several_waiters_for_one_task_all_wake(storage: Storage) -> None:
    await _claimed(storage, "t1")
    await storage.store_task(_task("other"))
    first = await _waiting(storage, "t1")
    second = await _waiting(storage, "t1")
    other = await _waiting(storage, "other")
    await storage.complete_task("t1", "w1")
    assert (await _woken(first)).id == (await _woken(second)).id == "t1"
    await _settle()
    assert not other.done()
    other.cancel()


async def test_wait_for_task_wakes_when_the_task_fails_for_good(storage: Storage) -> None:
    await _claimed(storage, "t1", max_retries=0)
    waiter = await _waiting(storage, "t1")
    await storage.fail_task("t1", "w1", "boom")
    got = await _woken(waiter)
    assert got.status == TaskStatus.Failed
    assert got.error == "boom"


async def test_a_retry_is_not_final(storage_factory: StorageFactory, clock: FakeClock) -> None:
    storage = await storage_factory(clock=clock, retry_policy=POLICY)
    await _claimed(storage, "t1", max_retries=1)
    waiter = await _waiting(storage, "t1")
    retried = await storage.fail_task("t1", "w1", "first try")
    assert retried.status == TaskStatus.Pending
    await _settle()
    assert not waiter.done(), "a failed attempt with retries left is not final"
    assert await within(storage.wait_for_task("t1", 0)) is None
    clock.advance(POLICY.base_us / 1e6)
    assert await storage.claim_task("t1", "w2")
    await storage.complete_task("t1", "w2", "second try")
    got = await _woken(waiter)
    assert (got.status, got.result, got.retry_count) == (TaskStatus.Completed, "second try", 1)


async def test_wait_for_task_wakes_when_the_task_is_cancelled(storage: Storage) -> None:
    await storage.store_task(_task("t1"))
    waiter = await _waiting(storage, "t1")
    assert await storage.cancel_task("t1", "not needed") == ["t1"]
    got = await _woken(waiter)
    assert (got.status, got.error) == (TaskStatus.Cancelled, "not needed")


@pytest.mark.parametrize("how", ["fail", "cancel"])
async def test_wait_for_task_wakes_when_a_cascade_cancels_the_task(
    storage: Storage, how: str
) -> None:
    await storage.store_tasks(
        [_task("a", max_retries=0), _task("b", deps=["a"]), _task("c", deps=["b"])]
    )
    assert await storage.claim_task("a", "w1")
    waiter = await _waiting(storage, "c")
    if how == "fail":
        await storage.fail_task("a", "w1", "boom")
    else:
        await storage.cancel_task("a")
    got = await _woken(waiter)
    assert got.status == TaskStatus.Cancelled
    assert got.error == "dependency b cancelled"


async def test_wait_for_task_wakes_when_the_lease_expires_past_the_retries(
    storage: Storage, clock: FakeClock
) -> None:
    await _claimed(storage, "t1", max_retries=0)
    waiter = await _waiting(storage, "t1")
    clock.advance(LEASE + timedelta(seconds=1))
    # Leases are expired on the way by the next claim, whoever makes it.
    assert await storage.claim_next_task("w2") is None
    got = await _woken(waiter)
    assert got.status == TaskStatus.Failed
    assert got.error == "lease expired (held by w1)"


async def test_an_expired_lease_with_retries_left_is_not_final(
    storage: Storage, clock: FakeClock
) -> None:
    await _claimed(storage, "t1", max_retries=2)
    waiter = await _waiting(storage, "t1")
    clock.advance(LEASE + timedelta(seconds=1))
    assert await storage.claim_next_task("w2") is None  # requeued after a backoff
    await _settle()
    assert not waiter.done()
    assert (await _get(storage, "t1")).retry_count == 1
    waiter.cancel()


async def test_wait_for_task_wakes_when_its_agent_is_deleted_past_the_retries(
    storage: Storage,
) -> None:
    await storage.store_agent(agent("w1"))
    await _claimed(storage, "t1", max_retries=0)
    waiter = await _waiting(storage, "t1")
    await storage.delete_agent("w1")
    got = await _woken(waiter)
    assert got.status == TaskStatus.Failed
    assert got.assigned_to is None


async def test_wait_for_task_wakes_when_its_agent_is_reaped_past_the_retries(
    storage: Storage, clock: FakeClock
) -> None:
    stale = agent("w1")
    stale.heartbeat = clock() - timedelta(hours=1)
    await storage.store_agent(stale)
    await _claimed(storage, "t1", max_retries=0)
    waiter = await _waiting(storage, "t1")
    assert [a.id for a in await storage.reap_stale_agents(60)] == ["w1"]
    assert (await _woken(waiter)).status == TaskStatus.Failed


async def test_wait_for_task_wakes_when_update_task_makes_it_final(storage: Storage) -> None:
    await storage.store_task(_task("t1"))
    waiter = await _waiting(storage, "t1")
    task = await _get(storage, "t1")
    task.status = TaskStatus.Failed
    task.error = "given up by hand"
    await storage.update_task(task)
    got = await _woken(waiter)
    assert (got.status, got.error) == (TaskStatus.Failed, "given up by hand")


async def test_wait_for_task_wakes_on_a_committed_transaction(storage: Storage) -> None:
    await _claimed(storage, "t1")
    waiter = await _waiting(storage, "t1")

    async def finish() -> None:
        async with storage.transaction() as tx:
            await tx.complete_task("t1", "w1", "in a transaction")

    await asyncio.create_task(finish())
    assert (await _woken(waiter)).result == "in a transaction"


async def test_a_rolled_back_completion_does_not_finish_the_task(storage: Storage) -> None:
    await _claimed(storage, "t1")
    waiter = await _waiting(storage, "t1")

    async def undo() -> None:
        tx = await storage.begin_transaction()
        await tx.complete_task("t1", "w1")
        await tx.rollback()

    await asyncio.create_task(undo())
    await _settle()
    assert not waiter.done()
    await storage.cancel_task("t1")
    assert (await _woken(waiter)).status == TaskStatus.Cancelled


async def test_wait_for_task_inside_a_transaction_sees_its_own_writes(storage: Storage) -> None:
    await _claimed(storage, "t1")
    await storage.store_task(_task("t2"))
    async with storage.transaction() as tx:
        await tx.complete_task("t1", "w1", "mine")
        got = await within(tx.wait_for_task("t1", LONG))
        assert got is not None
        assert got.result == "mine"
        # Nothing else can finish t2 while this transaction holds the storage: a timeout.
        assert await within(tx.wait_for_task("t2", 0.05)) is None


@pytest.mark.parametrize("timeout", [0, 0.05, timedelta(milliseconds=20)], ids=repr)
async def test_wait_for_task_returns_none_on_timeout(storage: Storage, timeout: Any) -> None:
    await _claimed(storage, "held")
    await storage.store_task(_task("pending"))
    for task_id in ("held", "pending"):
        assert await within(storage.wait_for_task(task_id, timeout)) is None
    assert (await _get(storage, "held")).status == TaskStatus.Assigned


async def test_wait_for_task_of_a_missing_task_is_not_found(storage: Storage) -> None:
    for timeout in (None, 0, LONG):
        with pytest.raises(NotFoundError):
            await within(storage.wait_for_task("nope", timeout))


async def test_wait_for_task_is_not_found_when_the_task_is_deleted_meanwhile(
    storage: Storage,
) -> None:
    await storage.store_task(_task("t1"))
    waiter = await _waiting(storage, "t1")
    await storage.delete_task("t1")
    with pytest.raises(NotFoundError):
        await within(waiter)


async def test_close_releases_task_waiters(storage_factory: StorageFactory) -> None:
    storage = await storage_factory()
    await storage.store_task(_task("t1"))
    waiter = await _waiting(storage, "t1")
    await storage.close()
    assert await within(waiter) is None


# --- get_dependency_results -------------------------------------------------------------------


async def test_dependency_results_in_dependency_order_completed_only(storage: Storage) -> None:
    deps = ["d1", "d2", "d3", "d4", "d5"]
    await storage.store_tasks([_task(d, max_retries=0) for d in deps])
    await storage.store_task(_task("t", deps=["d4", "d1", "d5", "d3", "d2"]))
    for d in deps:
        assert await storage.claim_task(d, "w")
    await storage.complete_task("d1", "w", {"rows": [1, 2]})
    await storage.complete_task("d3", "w")  # no result: present, None
    await storage.complete_task("d4", "w", "text")
    # d2 still held, d5 not even started.
    got = await storage.get_dependency_results("t")
    assert list(got.items()) == [("d4", "text"), ("d1", {"rows": [1, 2]}), ("d3", None)]
    await storage.complete_task("d2", "w", 2.5)
    got = await storage.get_dependency_results("t")
    assert list(got) == ["d4", "d1", "d3", "d2"]
    assert got["d2"] == 2.5


async def test_failed_and_cancelled_dependencies_are_absent(storage: Storage) -> None:
    await storage.store_tasks(
        [_task("ok"), _task("bad", max_retries=0), _task("gone"), _task("t", deps=["ok", "bad"])]
    )
    await storage.store_task(_task("u", deps=["gone", "ok"]))
    for d in ("ok", "bad"):
        assert await storage.claim_task(d, "w")
    await storage.complete_task("ok", "w", "fine")
    await storage.fail_task("bad", "w", "boom")
    await storage.cancel_task("gone")
    assert await storage.get_dependency_results("t") == {"ok": "fine"}
    assert await storage.get_dependency_results("u") == {"ok": "fine"}


async def test_dependency_results_decode_like_the_task_result(storage: Storage) -> None:
    values: list[Any] = [
        {"nested": {"list": [1, 2.5, None, True]}, "text": "héllo 🌍"},
        1e16,
        -(2**63),
        2**64 - 1,
        [],
        "",
        False,
    ]
    ids = [f"d{i}" for i in range(len(values))]
    await storage.store_tasks([_task(d) for d in ids])
    await storage.store_task(_task("t", deps=ids))
    for d, value in zip(ids, values, strict=True):
        assert await storage.claim_task(d, "w")
        await storage.complete_task(d, "w", value)
    got = await storage.get_dependency_results("t")
    assert got == {d: (await _get(storage, d)).result for d in ids}
    assert [type(v) for v in got.values()] == [type(v) for v in values]


async def test_dependency_results_of_many_dependencies(storage: Storage) -> None:
    ids = [f"d{i:03}" for i in range(300)]
    await storage.store_tasks([_task(d) for d in ids])
    order = ids[::-1]
    await storage.store_task(_task("t", deps=order))
    for d in ids[::2]:
        assert await storage.claim_task(d, "w")
        await storage.complete_task(d, "w", {"id": d})
    got = await storage.get_dependency_results("t")
    assert list(got) == [d for d in order if int(d[1:]) % 2 == 0]
    assert all(v == {"id": k} for k, v in got.items())


async def test_dependency_results_of_a_task_without_dependencies(storage: Storage) -> None:
    await storage.store_task(_task("t"))
    assert await storage.get_dependency_results("t") == {}


async def test_dependency_results_of_a_missing_task_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await storage.get_dependency_results("nope")


async def test_dependency_results_inside_a_transaction(storage: Storage) -> None:
    await storage.store_tasks([_task("d"), _task("t", deps=["d"])])
    assert await storage.claim_task("d", "w")
    tx = await storage.begin_transaction()
    await tx.complete_task("d", "w", "uncommitted")
    assert await tx.get_dependency_results("t") == {"d": "uncommitted"}
    await tx.rollback()
    assert await storage.get_dependency_results("t") == {}


# --- release_task -----------------------------------------------------------------------------


@pytest.mark.parametrize("started", [False, True], ids=["assigned", "running"])
async def test_release_task_makes_it_pending_and_claimable_at_once(
    storage: Storage, started: bool
) -> None:
    await _claimed(storage, "t1")
    if started:
        await storage.start_task("t1", "w1")
    before = await _get(storage, "t1")
    released = await storage.release_task("t1", "w1")
    assert released == await _get(storage, "t1")
    assert released.status == TaskStatus.Pending
    assert released.assigned_to is None
    assert released.lease_expires_at is None
    assert released.started_at is None
    assert released.run_after is None
    assert released.retry_count == before.retry_count == 0
    assert (released.error, released.completed_at) == (None, None)
    assert [t.id for t in await storage.get_ready_tasks()] == ["t1"]
    assert [t.id for t in await storage.get_tasks_by_agent("w1")] == []
    claimed = await storage.claim_next_task("w2")
    assert claimed is not None
    assert (claimed.id, claimed.assigned_to) == ("t1", "w2")


async def test_release_is_not_a_failed_attempt(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await storage_factory(clock=clock, retry_policy=POLICY)
    await _claimed(storage, "t1", max_retries=2)
    await storage.fail_task("t1", "w1", "first try")
    clock.advance(POLICY.base_us / 1e6)
    assert await storage.claim_task("t1", "w1")
    for _ in range(3):
        released = await storage.release_task("t1", "w1")
        assert (released.retry_count, released.error) == (1, "first try")
        # No backoff: ready again without the clock moving.
        assert await storage.claim_task("t1", "w1")
    # Releases used none of the retries: the second failure is retried, not final.
    retried = await storage.fail_task("t1", "w1", "second try")
    assert (retried.status, retried.retry_count) == (TaskStatus.Pending, 2)


async def test_the_old_holder_loses_a_released_task(storage: Storage) -> None:
    await _claimed(storage, "t1")
    await storage.release_task("t1", "w1")
    assert await storage.claim_task("t1", "w2")
    for call in (
        storage.complete_task("t1", "w1", "late"),
        storage.heartbeat_task("t1", "w1"),
        storage.release_task("t1", "w1"),
    ):
        with pytest.raises(LeaseLostError):
            await call
    got = await _get(storage, "t1")
    assert (got.status, got.assigned_to, got.result) == (TaskStatus.Assigned, "w2", None)


async def test_release_task_by_an_agent_not_holding_it_is_refused(storage: Storage) -> None:
    await _claimed(storage, "held")
    await storage.store_task(_task("pending"))
    await _claimed(storage, "done")
    await storage.complete_task("done", "w1")
    before = await _tasks(storage)
    for task_id, agent_id in (("held", "w2"), ("pending", "w1"), ("done", "w1")):
        with pytest.raises(LeaseLostError) as exc:
            await storage.release_task(task_id, agent_id)
        assert (exc.value.task_id, exc.value.agent_id) == (task_id, agent_id)
    assert await _tasks(storage) == before
    with pytest.raises(NotFoundError):
        await storage.release_task("nope", "w1")


async def test_release_task_after_the_lease_expired_is_refused(
    storage: Storage, clock: FakeClock
) -> None:
    await _claimed(storage, "t1", max_retries=3)
    clock.advance(LEASE + timedelta(seconds=1))
    with pytest.raises(LeaseLostError):
        await storage.release_task("t1", "w1")
    # The expiry itself stands: a failed attempt, as for complete_task.
    got = await _get(storage, "t1")
    assert (got.status, got.retry_count) == (TaskStatus.Pending, 1)


async def test_release_task_wakes_task_waiters(storage: Storage) -> None:
    await _claimed(storage, "t1")
    waiter = asyncio.create_task(storage.wait_for_tasks(timeout=LONG))
    await _settle()
    assert not waiter.done()
    await storage.release_task("t1", "w1")
    assert await within(waiter) is True


async def test_release_task_does_not_finish_the_task(storage: Storage) -> None:
    await _claimed(storage, "t1")
    waiter = await _waiting(storage, "t1")
    await storage.release_task("t1", "w1")
    await _settle()
    assert not waiter.done()
    assert await storage.claim_task("t1", "w2")
    await storage.complete_task("t1", "w2", "by w2")
    assert (await _woken(waiter)).result == "by w2"


async def test_release_task_keeps_dependents_blocked(storage: Storage) -> None:
    await storage.store_tasks([_task("parent"), _task("child", deps=["parent"])])
    assert await storage.claim_task("parent", "w1")
    await storage.release_task("parent", "w1")
    assert [t.id for t in await storage.get_ready_tasks()] == ["parent"]


async def test_release_task_rolls_back_with_its_transaction(storage: Storage) -> None:
    await _claimed(storage, "t1")
    before = await _get(storage, "t1")
    tx = await storage.begin_transaction()
    assert (await tx.release_task("t1", "w1")).status == TaskStatus.Pending
    await tx.rollback()
    assert await _get(storage, "t1") == before


# --- wait_for_tasks and leases ----------------------------------------------------------------

#: A lease that runs out in real time while a test waits (the tests below use the real clock).
SHORT_LEASE = 0.2


async def test_wait_for_tasks_wakes_when_a_lease_runs_out(storage_factory: StorageFactory) -> None:
    """A task whose holder died is taken over when its lease ends, not at a later poll: the
    wait knows when the first lease is due, though nothing announces it."""
    storage = await storage_factory(retry_policy=RetryPolicy(base_us=0))
    await storage.store_task(_task("t1"))
    assert await storage.claim_task("t1", "dead", lease=SHORT_LEASE)
    waiter = asyncio.create_task(storage.wait_for_tasks(timeout=LONG))
    assert await within(waiter) is True
    taken = await storage.claim_next_task("alive")
    assert taken is not None
    assert (taken.id, taken.assigned_to, taken.retry_count) == ("t1", "alive", 1)


async def test_a_lease_of_another_type_does_not_end_a_wait(storage_factory: StorageFactory) -> None:
    storage = await storage_factory(retry_policy=RetryPolicy(base_us=0))
    await storage.store_task(_task("t1"))
    assert await storage.claim_task("t1", "dead", lease=SHORT_LEASE)
    # Past the lease, still nothing of this type to claim: the wait runs to its timeout.
    assert await within(storage.wait_for_tasks(SHORT_LEASE * 3, ["other"])) is False
    assert await within(storage.wait_for_tasks(timeout=LONG, task_types=["job"])) is True


async def test_wait_for_tasks_returns_at_once_past_a_lease(
    storage: Storage, clock: FakeClock
) -> None:
    await _claimed(storage, "t1")
    clock.advance(LEASE + timedelta(seconds=1))
    # Nothing is pending, but a claim would requeue the task: there is work.
    assert await within(storage.wait_for_tasks(timeout=LONG)) is True
    assert await storage.claim_task("t1", "w2") is False  # requeued, waiting out its backoff
    assert (await _get(storage, "t1")).status == TaskStatus.Pending


async def test_a_cancelled_wait_for_tasks_ends_even_just_after_a_wake_up(
    storage: Storage,
) -> None:
    """Cancelling a waiter right after something woke it (a task of another type stored, so
    it would wait again) cancels it, whichever turn of the loop the cancellation lands on."""
    for turns in range(6):
        waiter = asyncio.create_task(storage.wait_for_tasks(LONG, ["wanted"]))
        await _settle()
        await storage.store_task(TaskModel.new("unwanted", {}))
        for _ in range(turns):
            await asyncio.sleep(0)
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(waiter)


async def test_task_worker_calls_on_a_closed_storage_fail(storage_factory: StorageFactory) -> None:
    storage = await storage_factory()
    await storage.close()
    for call in (
        storage.release_task("t1", "w1"),
        storage.get_dependency_results("t1"),
    ):
        with pytest.raises(StorageError):
            await call


__all__ = [name for name in list(globals()) if name.startswith("test_")]
