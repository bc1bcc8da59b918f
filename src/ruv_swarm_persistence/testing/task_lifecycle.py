"""Conformance tests of a task's life: the status machine, completion and cancellation,
retries with backoff, leases, and what happens to the tasks of an agent that goes away.

Pull them in with ``from ruv_swarm_persistence.testing.task_lifecycle import *`` (see
:mod:`.tasks`); every test takes "now" from the fake ``clock``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from ..errors import (
    LeaseLostError,
    NotFoundError,
)
from ..models import AgentModel, AgentStatus, TaskModel, TaskStatus
from ..storage import Storage
from . import FakeClock
from ._task_support import (
    LEASE,
    US,
    _at,
    _claimed,
    _get,
    _ids,
    _refused,
    _retry_storage,
    _snapshot,
    _task,
)
from .plugin import StorageFactory

# --- the status machine -----------------------------------------------------------------------

_LEGAL = {
    "pending": {"assigned", "running", "failed", "cancelled"},
    "assigned": {"running", "completed", "failed", "cancelled", "pending"},
    "running": {"completed", "failed", "cancelled", "pending"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}
_PAIRS = [(old, new) for old in _LEGAL for new in _LEGAL]


@pytest.mark.parametrize(("old", "new"), _PAIRS, ids=[f"{o}-to-{n}" for o, n in _PAIRS])
async def test_update_task_status_transitions(storage: Storage, old: str, new: str) -> None:
    holder = "w" if old in ("assigned", "running") else None
    await storage.store_task(_task("t", status=TaskStatus(old), assigned_to=holder))
    task = await _get(storage, "t")
    task.status = TaskStatus(new)
    task.assigned_to = "w"
    if new == old or new in _LEGAL[old]:
        await storage.update_task(task)
        assert (await _get(storage, "t")).status == new
    else:
        await _refused(storage, storage.update_task(task), field="task.status")


@pytest.mark.parametrize("new", ["assigned", "running"])
async def test_update_task_to_held_status_needs_assigned_to(storage: Storage, new: str) -> None:
    await storage.store_task(_task("t"))
    task = await _get(storage, "t")
    task.status = TaskStatus(new)
    await _refused(storage, storage.update_task(task), field="task.assigned_to")


@pytest.mark.parametrize("new", ["assigned", "running"])
async def test_update_task_cannot_advance_before_dependencies(storage: Storage, new: str) -> None:
    await storage.store_tasks([_task("dep"), _task("t", deps=["dep"])])
    task = await _get(storage, "t")
    task.status = TaskStatus(new)
    task.assigned_to = "w"
    await _refused(storage, storage.update_task(task), field="task.status")


async def test_store_task_cannot_be_held_before_dependencies(storage: Storage) -> None:
    await storage.store_task(_task("dep"))
    running = _task("t", deps=["dep"], status=TaskStatus.Running, assigned_to="w")
    await _refused(storage, storage.store_task(running), field="task.status")
    completed = _task("u", deps=["dep"], status=TaskStatus.Completed)
    await _refused(storage, storage.store_task(completed), field="task.status")


async def test_crate_style_update_walks_the_status_machine(storage: Storage) -> None:
    await storage.store_tasks([_task("a"), _task("b", deps=["a"])])
    task = await _get(storage, "a")
    task.assign_to("w")
    await storage.update_task(task)
    task.start()
    await storage.update_task(task)
    task.complete({"ok": 1})
    await storage.update_task(task)
    stored = await _get(storage, "a")
    assert stored.status == TaskStatus.Completed
    assert stored.result == {"ok": 1}
    assert await _ids(storage.get_ready_tasks()) == ["b"]


async def test_update_task_to_failed_cancels_dependents(storage: Storage) -> None:
    await storage.store_tasks([_task("a"), _task("b", deps=["a"]), _task("c", deps=["b"])])
    task = await _get(storage, "a")
    task.status = TaskStatus.Failed
    await storage.update_task(task)
    for tid, cause in (("b", "a"), ("c", "b")):
        dependent = await _get(storage, tid)
        assert dependent.status == TaskStatus.Cancelled
        assert dependent.error is not None
        assert cause in dependent.error


async def test_completing_dependency_makes_dependents_ready(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks(
        [
            _task("a", created=_at(clock, 0)),
            _task("b", created=_at(clock, 1), deps=["a"]),
            _task("c", created=_at(clock, 2), deps=["a"]),
            _task("d", created=_at(clock, 3), deps=["b", "c"]),
        ]
    )
    assert await _ids(storage.get_ready_tasks()) == ["a"]
    assert await storage.claim_task("a", "w")
    await storage.start_task("a", "w")
    assert await storage.get_ready_tasks() == []
    await storage.complete_task("a", "w", {"out": 1})
    assert await _ids(storage.get_ready_tasks()) == ["b", "c"]
    for tid in ("b", "c"):
        claimed = await storage.claim_next_task("w")
        assert claimed is not None
        assert claimed.id == tid
        await storage.complete_task(tid, "w")
    assert await _ids(storage.get_ready_tasks()) == ["d"]


async def test_start_task_marks_running(storage: Storage, clock: FakeClock) -> None:
    await _claimed(storage, "t")
    clock.advance(3)
    started = await storage.start_task("t", "w1")
    assert started.status == TaskStatus.Running
    assert started.started_at == clock()
    assert started.assigned_to == "w1"
    assert started == await _get(storage, "t")


@pytest.mark.parametrize("start_first", [False, True], ids=["from-assigned", "from-running"])
async def test_complete_task_records_result(
    storage: Storage, clock: FakeClock, start_first: bool
) -> None:
    await _claimed(storage, "t")
    if start_first:
        await storage.start_task("t", "w1")
    clock.advance(2)
    done = await storage.complete_task("t", "w1", {"answer": 42, "items": [1.5, None]})
    assert done.status == TaskStatus.Completed
    assert done.result == {"answer": 42, "items": [1.5, None]}
    assert done.completed_at == clock()
    assert done.lease_expires_at is None
    assert done == await _get(storage, "t")


async def test_complete_task_without_result(storage: Storage) -> None:
    await _claimed(storage, "t")
    done = await storage.complete_task("t", "w1")
    assert done.status == TaskStatus.Completed
    assert done.result is None


async def test_cancel_task_cascades_transitively(storage: Storage) -> None:
    await storage.store_tasks(
        [
            _task("root"),
            _task("child", deps=["root"]),
            _task("grandchild", deps=["child"]),
            _task("other-parent"),
            _task("both", deps=["other-parent", "grandchild"]),
            _task("sibling"),
        ]
    )
    cancelled = await storage.cancel_task("root", "not needed")
    assert sorted(cancelled) == ["both", "child", "grandchild", "root"]
    root = await _get(storage, "root")
    assert root.status == TaskStatus.Cancelled
    assert root.error == "not needed"
    assert root.completed_at is not None
    for tid, cause in (("child", "root"), ("grandchild", "child"), ("both", "grandchild")):
        task = await _get(storage, tid)
        assert task.status == TaskStatus.Cancelled
        assert task.error is not None
        assert cause in task.error
        assert "cancelled" in task.error
    assert (await _get(storage, "other-parent")).status == TaskStatus.Pending
    assert sorted(await _ids(storage.get_ready_tasks())) == ["other-parent", "sibling"]


async def test_cancel_task_without_reason_keeps_error(storage: Storage) -> None:
    await storage.store_task(_task("t", error="earlier"))
    assert await storage.cancel_task("t") == ["t"]
    task = await _get(storage, "t")
    assert task.status == TaskStatus.Cancelled
    assert task.error == "earlier"


async def test_cancel_task_twice_returns_nothing_new(storage: Storage) -> None:
    await storage.store_tasks([_task("a"), _task("b", deps=["a"])])
    assert sorted(await storage.cancel_task("a")) == ["a", "b"]
    before = await _snapshot(storage)
    assert await storage.cancel_task("a") == []
    assert await storage.cancel_task("b") == []
    assert await _snapshot(storage) == before


async def test_cancel_missing_task_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await storage.cancel_task("ghost")


@pytest.mark.parametrize("status", [TaskStatus.Completed, TaskStatus.Failed])
async def test_cancel_finished_task_is_refused(storage: Storage, status: TaskStatus) -> None:
    await storage.store_task(_task("t", status=status))
    await _refused(storage, storage.cancel_task("t"))


async def test_cancel_held_task_takes_it_from_the_worker(storage: Storage) -> None:
    await _claimed(storage, "t", "w1")
    await storage.start_task("t", "w1")
    assert await storage.cancel_task("t", "stop") == ["t"]
    with pytest.raises(LeaseLostError):
        await storage.complete_task("t", "w1", "late")
    task = await _get(storage, "t")
    assert task.status == TaskStatus.Cancelled
    assert task.result is None
    assert task.lease_expires_at is None


async def test_cancel_leaves_completed_dependents_alone(storage: Storage) -> None:
    await storage.store_tasks([_task("a"), _task("b", deps=["a"]), _task("c", deps=["a"])])
    assert await storage.claim_task("a", "w")
    await storage.complete_task("a", "w")
    assert await storage.claim_task("b", "w")
    await storage.complete_task("b", "w")
    assert await storage.cancel_task("c") == ["c"]
    assert (await _get(storage, "b")).status == TaskStatus.Completed


# --- retries ----------------------------------------------------------------------------------


async def test_fail_task_retries_with_exponential_backoff(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_task(_task("t", max_retries=4))
    expected_waits = [2, 6, 10, 10]  # base 2 s, factor 3, capped at 10 s
    for retry, wait in enumerate(expected_waits, start=1):
        assert await storage.claim_task("t", "w")
        await storage.start_task("t", "w")
        clock.advance(1)
        failed = await storage.fail_task("t", "w", f"attempt {retry} broke")
        assert failed == await _get(storage, "t")
        assert failed.status == TaskStatus.Pending
        assert failed.retry_count == retry
        assert failed.error == f"attempt {retry} broke"
        assert failed.assigned_to is None
        assert failed.lease_expires_at is None
        assert failed.run_after == clock() + timedelta(seconds=wait)
        assert await storage.get_ready_tasks() == []
        assert await _ids(storage.get_pending_tasks()) == ["t"]
        assert not await storage.claim_task("t", "w")
        clock.advance(wait - 1)
        clock.advance(timedelta(seconds=1) - US)
        assert await storage.claim_next_task("w") is None
        clock.advance(US)
        assert await _ids(storage.get_ready_tasks()) == ["t"]
    assert await storage.claim_task("t", "w")
    final = await storage.fail_task("t", "w", "last")
    assert final.status == TaskStatus.Failed
    assert final.retry_count == 4
    assert final.completed_at == clock()


async def test_default_max_retries_allows_four_attempts(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_task(TaskModel.new("job", id="t"))
    attempts = 0
    while True:
        clock.advance(60)
        claimed = await storage.claim_next_task("w")
        if claimed is None:
            break
        attempts += 1
        await storage.fail_task("t", "w", "no")
    task = await _get(storage, "t")
    assert attempts == 4
    assert task.max_retries == 3
    assert task.retry_count == 3
    assert task.status == TaskStatus.Failed
    assert task.error == "no"


@pytest.mark.parametrize("max_retries", [0, 1, 2])
async def test_max_retries_boundary(
    storage_factory: StorageFactory, clock: FakeClock, max_retries: int
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_task(_task("t", max_retries=max_retries))
    for retry in range(1, max_retries + 1):
        assert await storage.claim_task("t", "w")
        assert (await storage.fail_task("t", "w", "x")).retry_count == retry
        clock.advance(60)
    assert await storage.claim_task("t", "w")
    final = await storage.fail_task("t", "w", "x")
    assert final.status == TaskStatus.Failed
    assert final.retry_count == max_retries
    assert not await storage.claim_task("t", "w")


async def test_many_retries_wait_the_capped_backoff(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_task(_task("t", retry_count=1500, max_retries=2000))
    assert await storage.claim_task("t", "w")
    failed = await storage.fail_task("t", "w", "again")
    assert failed.status == TaskStatus.Pending
    assert failed.retry_count == 1501
    assert failed.run_after == clock() + timedelta(seconds=10)


async def test_final_failure_cancels_dependents(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_tasks(
        [
            _task("a", max_retries=0),
            _task("b", deps=["a"]),
            _task("c", deps=["b"]),
            _task("d"),
        ]
    )
    assert await storage.claim_task("a", "w")
    await storage.fail_task("a", "w", "fatal")
    a, b, c = [await _get(storage, tid) for tid in "abc"]
    assert a.status == TaskStatus.Failed
    assert a.error == "fatal"
    assert b.status == c.status == TaskStatus.Cancelled
    assert b.error is not None
    assert "a" in b.error
    assert "failed" in b.error
    assert c.error is not None
    assert "b" in c.error
    assert await _ids(storage.get_ready_tasks()) == ["d"]


async def test_retry_does_not_cancel_dependents(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_tasks([_task("a", max_retries=1), _task("b", deps=["a"])])
    assert await storage.claim_task("a", "w")
    await storage.fail_task("a", "w", "flaky")
    assert (await _get(storage, "b")).status == TaskStatus.Pending
    clock.advance(2)
    assert await storage.claim_task("a", "w")
    await storage.complete_task("a", "w")
    assert await _ids(storage.get_ready_tasks()) == ["b"]


# --- leases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "override", "expected"),
    [
        (10, None, timedelta(seconds=10)),
        (10, 2.5, timedelta(seconds=2.5)),
        (timedelta(minutes=2), timedelta(milliseconds=1), timedelta(milliseconds=1)),
        (0.000001, None, timedelta(microseconds=1)),
    ],
    ids=["default", "seconds", "timedelta", "one-microsecond"],
)
async def test_claim_sets_lease(
    storage_factory: StorageFactory,
    clock: FakeClock,
    default: float | timedelta,
    override: float | timedelta | None,
    expected: timedelta,
) -> None:
    storage = await storage_factory(clock=clock, lease=default)
    await storage.store_tasks([_task("a"), _task("b")])
    assert await storage.claim_task("a", "w", override)
    claimed = await storage.claim_next_task("w", lease=override)
    assert claimed is not None
    assert claimed.lease_expires_at == clock() + expected
    assert (await _get(storage, "a")).lease_expires_at == clock() + expected


async def test_heartbeat_task_extends_lease(storage: Storage, clock: FakeClock) -> None:
    await _claimed(storage, "t", "w1")
    clock.advance(20)
    beat = await storage.heartbeat_task("t", "w1")
    assert beat.lease_expires_at == clock() + LEASE
    assert beat.status == TaskStatus.Assigned
    clock.advance(20)  # past the first lease, within the extended one
    assert await storage.claim_next_task("w2") is None
    assert (await storage.start_task("t", "w1")).status == TaskStatus.Running
    beat = await storage.heartbeat_task("t", "w1", lease=timedelta(seconds=5))
    assert beat.lease_expires_at == clock() + timedelta(seconds=5)
    assert beat.status == TaskStatus.Running
    assert beat == await _get(storage, "t")


async def test_lease_is_held_until_its_last_microsecond(storage: Storage, clock: FakeClock) -> None:
    await _claimed(storage, "t", "w1")
    clock.advance(LEASE - US)
    assert await storage.claim_next_task("w2") is None
    assert (await storage.heartbeat_task("t", "w1", lease=1)).status == TaskStatus.Assigned
    clock.advance(1)
    with pytest.raises(LeaseLostError):
        await storage.heartbeat_task("t", "w1")


@pytest.mark.parametrize("started", [False, True], ids=["assigned", "running"])
async def test_expired_lease_is_requeued_by_next_claim(
    storage_factory: StorageFactory, clock: FakeClock, started: bool
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_tasks([_task("t"), _task("other", task_type="else")])
    assert await storage.claim_task("t", "w1", lease=10)
    if started:
        await storage.start_task("t", "w1")
    clock.advance(10)
    claimed = await storage.claim_next_task("w2", ["else"])
    assert claimed is not None
    assert claimed.id == "other"
    task = await _get(storage, "t")
    assert task.status == TaskStatus.Pending
    assert task.retry_count == 1
    assert task.assigned_to is None
    assert task.lease_expires_at is None
    assert task.run_after == clock() + timedelta(seconds=2)
    assert task.error is not None
    assert "lease" in task.error
    assert "w1" in task.error
    clock.advance(2)
    again = await storage.claim_next_task("w2")
    assert again is not None
    assert again.id == "t"
    assert again.assigned_to == "w2"
    assert again.retry_count == 1


async def test_expired_lease_without_retries_left_fails(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_tasks([_task("t", max_retries=0), _task("child", deps=["t"])])
    assert await storage.claim_task("t", "w1", lease=1)
    clock.advance(1)
    assert await storage.claim_next_task("w2") is None
    task = await _get(storage, "t")
    assert task.status == TaskStatus.Failed
    assert task.retry_count == 0
    assert task.error is not None
    assert "lease" in task.error
    child = await _get(storage, "child")
    assert child.status == TaskStatus.Cancelled
    assert child.error is not None
    assert "t" in child.error


async def test_claim_task_requeues_expired_work_too(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_tasks([_task("t"), _task("u")])
    assert await storage.claim_task("t", "w1", lease=5)
    clock.advance(5)
    assert not await storage.claim_task("t", "w2")  # requeued, waiting out its backoff
    assert await storage.claim_task("u", "w2")
    task = await _get(storage, "t")
    assert task.status == TaskStatus.Pending
    assert task.retry_count == 1
    clock.advance(2)
    assert await storage.claim_task("t", "w2")


_HELD_OPS: dict[str, Callable[[Storage, str, str], Awaitable[Any]]] = {
    "start": lambda s, t, a: s.start_task(t, a),
    "complete": lambda s, t, a: s.complete_task(t, a, {"late": True}),
    "fail": lambda s, t, a: s.fail_task(t, a, "late failure"),
    "heartbeat": lambda s, t, a: s.heartbeat_task(t, a),
}


async def _lose_lease(storage: Storage, clock: FakeClock, how: str) -> None:
    """Leave task "t" in a state where worker "w1" does not hold it."""
    await storage.store_task(_task("t"))
    if how == "never-held":
        return
    if how == "held-by-another":
        assert await storage.claim_task("t", "w2")
        return
    assert await storage.claim_task("t", "w1", lease=5)
    if how == "completed":
        await storage.complete_task("t", "w1")
        return
    if how == "cancelled":
        await storage.cancel_task("t")
        return
    clock.advance(5)
    assert await storage.claim_next_task("w2") is None  # requeues "t" (retry after backoff)
    if how == "reclaimed":
        clock.advance(60)
        assert await storage.claim_task("t", "w2")


@pytest.mark.parametrize("op", list(_HELD_OPS))
@pytest.mark.parametrize(
    "how", ["never-held", "held-by-another", "requeued", "reclaimed", "completed", "cancelled"]
)
async def test_worker_without_the_task_gets_lease_lost(
    storage: Storage, clock: FakeClock, op: str, how: str
) -> None:
    await _lose_lease(storage, clock, how)
    error = await _refused(storage, _HELD_OPS[op](storage, "t", "w1"), LeaseLostError)
    assert isinstance(error, LeaseLostError)
    assert error.task_id == "t"
    assert error.agent_id == "w1"


@pytest.mark.parametrize("op", list(_HELD_OPS))
async def test_worker_whose_lease_expired_gets_lease_lost(
    storage: Storage, clock: FakeClock, op: str
) -> None:
    await _claimed(storage, "t", "w1")
    clock.advance(LEASE)
    with pytest.raises(LeaseLostError):
        await _HELD_OPS[op](storage, "t", "w1")
    task = await _get(storage, "t")
    assert task.status in (TaskStatus.Pending, TaskStatus.Assigned)
    assert task.result is None
    assert task.started_at is None
    assert task.error is None or "late" not in task.error
    assert task.lease_expires_at in (None, clock())
    assert await storage.claim_next_task("w2") is None
    requeued = await _get(storage, "t")
    assert requeued.status == TaskStatus.Pending
    assert requeued.retry_count == 1


@pytest.mark.parametrize("op", list(_HELD_OPS))
async def test_held_ops_on_missing_task_raise_not_found(storage: Storage, op: str) -> None:
    with pytest.raises(NotFoundError):
        await _HELD_OPS[op](storage, "ghost", "w1")
    assert await storage.get_task("ghost") is None


async def test_late_worker_cannot_overwrite_replacement_result(
    storage: Storage, clock: FakeClock
) -> None:
    await _claimed(storage, "t", "slow")
    await storage.start_task("t", "slow")
    clock.advance(LEASE + timedelta(minutes=10))
    assert await storage.claim_next_task("fast") is None  # requeued, waiting out its backoff
    clock.advance(1)
    replacement = await storage.claim_next_task("fast")
    assert replacement is not None
    assert replacement.id == "t"
    await storage.complete_task("t", "fast", "fast result")
    with pytest.raises(LeaseLostError):
        await storage.complete_task("t", "slow", "slow result")
    task = await _get(storage, "t")
    assert task.result == "fast result"
    assert task.assigned_to == "fast"
    assert task.retry_count == 1


# --- agents and their tasks -------------------------------------------------------------------


def _agent(agent_id: str, clock: FakeClock) -> AgentModel:
    agent = AgentModel.new(agent_id, "worker", ["any"], id=agent_id)
    agent.heartbeat = agent.created_at = agent.updated_at = clock()
    return agent


async def test_delete_agent_requeues_held_tasks(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_agent(_agent("gone", clock))
    await storage.store_agent(_agent("stays", clock))
    await storage.store_tasks(
        [_task("held"), _task("running"), _task("done"), _task("last", max_retries=0)]
    )
    await storage.store_task(_task("theirs"))
    for tid in ("held", "running", "done", "last"):
        assert await storage.claim_task(tid, "gone")
    assert await storage.claim_task("theirs", "stays")
    await storage.start_task("running", "gone")
    await storage.complete_task("done", "gone", 1)
    await storage.delete_agent("gone")
    for tid in ("held", "running"):
        task = await _get(storage, tid)
        assert task.status == TaskStatus.Pending
        assert task.assigned_to is None
        assert task.retry_count == 1
        assert task.run_after == clock() + timedelta(seconds=2)
        assert task.error is not None
        assert "gone" in task.error
    done = await _get(storage, "done")
    assert done.status == TaskStatus.Completed
    assert done.assigned_to is None
    assert done.result == 1
    last = await _get(storage, "last")
    assert last.status == TaskStatus.Failed
    assert last.assigned_to is None
    assert await storage.get_tasks_by_agent("gone") == []
    theirs = await _get(storage, "theirs")
    assert theirs.assigned_to == "stays"
    assert theirs.status == TaskStatus.Assigned
    with pytest.raises(LeaseLostError):
        await storage.complete_task("held", "gone")


async def test_delete_agent_keeps_a_cascade_it_caused(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    """A held task failing for good cancels a dependent that also named the agent."""
    storage = await _retry_storage(storage_factory, clock)
    await storage.store_agent(_agent("gone", clock))
    await storage.store_task(_task("q", max_retries=0))
    await storage.store_task(_task("p", deps=["q"], assigned_to="gone"))
    assert await storage.claim_task("q", "gone")
    await storage.delete_agent("gone")
    q, p = await _get(storage, "q"), await _get(storage, "p")
    assert (q.status, q.assigned_to) == (TaskStatus.Failed, None)
    assert (p.status, p.assigned_to) == (TaskStatus.Cancelled, None)
    assert p.error is not None
    assert "q" in p.error
    assert await storage.get_pending_tasks() == []


async def test_find_and_reap_stale_agents(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await _retry_storage(storage_factory, clock)
    for agent_id in ("old", "fresh", "broken"):
        await storage.store_agent(_agent(agent_id, clock))
    broken = await storage.get_agent("broken")
    assert broken is not None
    broken.status = AgentStatus.Error
    await storage.update_agent(broken)
    await storage.store_tasks([_task("a"), _task("b"), _task("c")])
    assert await storage.claim_task("a", "old", lease=3600)
    assert await storage.claim_task("b", "fresh", lease=3600)
    assert await storage.claim_task("c", "old", lease=3600)
    await storage.complete_task("c", "old")
    clock.advance(120)
    await storage.heartbeat("fresh")
    stale = await storage.find_stale_agents(timedelta(seconds=60))
    assert [a.id for a in stale] == ["old"]
    reaped = await storage.reap_stale_agents(timedelta(seconds=60))
    assert [a.id for a in reaped] == ["old"]
    old = await storage.get_agent("old")
    assert old is not None
    assert old.status == AgentStatus.Error
    a = await _get(storage, "a")
    assert a.status == TaskStatus.Pending
    assert a.retry_count == 1
    assert a.run_after == clock() + timedelta(seconds=2)
    assert (await _get(storage, "b")).assigned_to == "fresh"
    assert (await _get(storage, "c")).status == TaskStatus.Completed
    assert await storage.find_stale_agents(timedelta(seconds=60)) == []
    assert await storage.reap_stale_agents(timedelta(seconds=60)) == []
    with pytest.raises(LeaseLostError):
        await storage.start_task("a", "old")
