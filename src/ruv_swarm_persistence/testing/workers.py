"""Conformance tests of :class:`~ruv_swarm_persistence.worker.Worker` on a backend.

The worker is written once against the ``Storage`` API; these tests show that a backend gives
it what it relies on: claims woken by ``wait_for_tasks``, leases renewed and lost, a refused
late write, ``release_task``, ``get_dependency_results`` and ``wait_for_task``. Pull them in
with ``from ruv_swarm_persistence.testing.workers import *`` (see :mod:`.tasks`).

Nothing here measures time: every wait is bounded (:func:`~._support.within`) only so that a
missed wake-up fails instead of hanging. Leases expire only when a test moves the fake
``clock``; the short leases some tests use make the worker renew often in real time.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from ..errors import LeaseLostError
from ..models import AgentModel, AgentStatus, TaskModel, TaskStatus
from ..query import QueryBuilder
from ..rules import RetryPolicy
from ..storage import Storage
from ..worker import Outcome, TaskContext, TaskReport, Worker
from . import FakeClock
from ._support import WAIT, within
from ._task_support import LEASE, _get, _task
from .plugin import StorageFactory

#: Retries at once (no backoff), so a retried task is ready without moving the clock.
NO_BACKOFF = RetryPolicy(base_us=0)
#: A lease short enough that the worker renews it several times a second (in real time; on
#: the fake clock it never runs out unless the test moves the clock).
SHORT_LEASE = 0.3


# --- helpers ----------------------------------------------------------------------------------


class _Reports:
    """Collects a worker's :class:`TaskReport` objects; tests await the ones they expect."""

    def __init__(self) -> None:
        self.reports: list[TaskReport] = []
        self._changed = asyncio.Event()

    def __call__(self, report: TaskReport) -> None:
        self.reports.append(report)
        self._changed.set()

    async def wait_for(self, count: int) -> list[TaskReport]:
        async def enough() -> None:
            while len(self.reports) < count:
                self._changed.clear()
                await self._changed.wait()

        await within(enough())
        return self.reports


def _start(worker: Worker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def _stop(worker: Worker, running: asyncio.Task[None], *, now: bool = False) -> None:
    worker.stop(now=now)
    await within(running)


async def _final(storage: Storage, task_id: str) -> TaskModel:
    """The task once completed, failed or cancelled (bounded wait)."""
    task = await storage.wait_for_task(task_id, WAIT)
    assert task is not None, f"task {task_id} did not finish: {await storage.get_task(task_id)}"
    return task


async def _held(storage: Storage) -> list[TaskModel]:
    """Tasks some worker holds (assigned or running)."""
    return await storage.query(QueryBuilder(TaskModel).where_in("status", ["assigned", "running"]))


async def _events(storage: Storage, event_type: str) -> list[Any]:
    return [e for e in await storage.read_events(0, 100_000) if e.event_type == event_type]


class _Started:
    """Counts handlers that have started; tests await a number of them."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def note(self) -> None:
        self.count += 1
        self._changed.set()

    async def wait_for(self, count: int = 1) -> None:
        async def enough() -> None:
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()

        await within(enough())


def _blocking(started: _Started, seen: list[str]) -> Callable[[TaskModel, TaskContext], Any]:
    """An async handler that runs until cancelled, and notes that it saw the cancellation."""

    async def handler(task: TaskModel, ctx: TaskContext) -> Any:
        started.note()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(task.id)
            raise

    return handler


# --- running handlers -------------------------------------------------------------------------


async def test_each_task_runs_its_handler_once_and_completes_with_its_result(
    storage: Storage,
) -> None:
    tasks = [_task(f"t{i:02d}", task_type="even" if i % 2 == 0 else "odd") for i in range(12)]
    await storage.store_tasks(tasks)
    calls: Counter[str] = Counter()

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        calls[task.id] += 1
        assert ctx.task.id == task.id
        assert ctx.agent_id == "w1"
        assert ctx.storage is storage
        assert ctx.attempt == 1
        assert ctx.dependency_results == {}
        running = await storage.get_task(task.id)
        assert running is not None
        assert running.status == TaskStatus.Running  # started before the handler runs
        await asyncio.sleep(0)
        return {"done": task.id, "type": task.task_type}

    worker = Worker(storage, "w1", {"even": handle, "odd": handle}, concurrency=3)
    running = _start(worker)
    for t in tasks:
        done = await _final(storage, t.id)
        assert done.status == TaskStatus.Completed, done
        assert done.result == {"done": t.id, "type": t.task_type}
        assert done.assigned_to == "w1"
        assert done.retry_count == 0
    await _stop(worker, running)
    assert calls == dict.fromkeys((t.id for t in tasks), 1)
    stats = worker.stats
    assert (stats.claimed, stats.completed, stats.failed, stats.running) == (12, 12, 0, 0)
    completed = await _events(storage, "task.completed")
    assert sorted(e.task_id for e in completed) == sorted(t.id for t in tasks)
    assert {e.agent_id for e in completed} == {"w1"}
    assert len(await _events(storage, "worker.started")) == 1
    stopped = await _events(storage, "worker.stopped")
    assert [e.payload["completed"] for e in stopped] == [12]


async def test_a_worker_claims_only_the_types_it_handles(storage: Storage) -> None:
    await storage.store_tasks([_task("mine", task_type="a"), _task("other", task_type="b")])
    worker = Worker(storage, "w1", {"a": lambda task, ctx: "ok", "b": lambda task, ctx: "no"},
                    task_types=["a"])  # fmt: skip
    running = _start(worker)
    assert (await _final(storage, "mine")).result == "ok"
    await _stop(worker, running)
    other = await _get(storage, "other")
    assert other.status == TaskStatus.Pending
    assert other.assigned_to is None


async def test_a_failing_handler_is_retried_until_max_retries_then_failed(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await storage_factory(clock=clock, retry_policy=NO_BACKOFF)
    await storage.store_tasks([_task("flaky", max_retries=2), _task("after", deps=["flaky"])])
    attempts: list[int] = []

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"attempt {ctx.attempt} broke")

    worker = Worker(storage, "w1", {"job": handle})
    running = _start(worker)
    failed = await _final(storage, "flaky")
    await _stop(worker, running)
    assert attempts == [1, 2, 3]  # the first attempt and max_retries retries, each once
    assert failed.status == TaskStatus.Failed
    assert failed.retry_count == 2
    assert failed.error == "RuntimeError: attempt 3 broke"
    assert (await _get(storage, "after")).status == TaskStatus.Cancelled
    events = await _events(storage, "task.failed")
    assert [(e.payload["attempt"], e.payload["final"]) for e in events] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    assert events[0].payload["error"] == "RuntimeError: attempt 1 broke"
    assert worker.stats.failed == 3


async def test_a_flaky_handler_completes_on_a_retry(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await storage_factory(clock=clock, retry_policy=NO_BACKOFF)
    await storage.store_task(_task("t"))

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        if ctx.attempt < 3:
            raise ValueError("not yet")
        return {"attempt": ctx.attempt}

    worker = Worker(storage, "w1", {"job": handle})
    running = _start(worker)
    done = await _final(storage, "t")
    await _stop(worker, running)
    assert done.status == TaskStatus.Completed
    assert done.result == {"attempt": 3}
    assert done.retry_count == 2
    assert done.error == "ValueError: not yet"  # the last failure stays on record


async def test_a_result_that_is_not_json_fails_the_attempt(storage: Storage) -> None:
    await storage.store_task(_task("t", max_retries=0))

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        return {"when": object()}

    worker = Worker(storage, "w1", {"job": handle})
    running = _start(worker)
    failed = await _final(storage, "t")
    await _stop(worker, running)
    assert failed.status == TaskStatus.Failed
    assert failed.result is None
    assert failed.error is not None
    assert failed.error.startswith("ValidationError: ")


async def test_a_sync_handler_runs_in_a_thread(storage: Storage) -> None:
    await storage.store_task(_task("t", payload={"n": 20}))
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def handle(task: TaskModel, ctx: TaskContext) -> Any:
        threads.append(threading.get_ident())
        return {"square": task.payload["n"] ** 2}

    worker = Worker(storage, "w1", {"job": handle})
    running = _start(worker)
    done = await _final(storage, "t")
    await _stop(worker, running)
    assert done.result == {"square": 400}
    assert len(threads) == 1
    assert threads[0] != loop_thread


async def test_dependency_results_reach_the_dependents_handler(storage: Storage) -> None:
    await storage.store_tasks(
        [
            _task("fetch-a", task_type="fetch", payload={"n": 1}),
            _task("fetch-b", task_type="fetch", payload={"n": 2}),
            _task("nothing", task_type="fetch", payload={"n": None}),
            _task("merge", task_type="merge", deps=["fetch-b", "nothing", "fetch-a"]),
        ]
    )
    seen: dict[str, Any] = {}

    async def fetch(task: TaskModel, ctx: TaskContext) -> Any:
        n = task.payload["n"]
        return None if n is None else {"rows": n * 10}

    async def merge(task: TaskModel, ctx: TaskContext) -> Any:
        seen.update(ctx.dependency_results)
        return sum(r["rows"] for r in ctx.dependency_results.values() if r is not None)

    worker = Worker(storage, "w1", {"fetch": fetch, "merge": merge}, concurrency=2)
    running = _start(worker)
    merged = await _final(storage, "merge")
    await _stop(worker, running)
    assert seen == {"fetch-b": {"rows": 20}, "nothing": None, "fetch-a": {"rows": 10}}
    assert list(seen) == ["fetch-b", "nothing", "fetch-a"]  # as the task lists them
    assert merged.result == 30


# --- stopping ---------------------------------------------------------------------------------


async def test_a_handler_that_finishes_within_the_grace_completes(storage: Storage) -> None:
    await storage.store_task(_task("t"))
    started, finish = asyncio.Event(), asyncio.Event()

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        await finish.wait()
        return "finished while stopping"

    worker = Worker(storage, "w1", {"job": handle}, grace=WAIT * 10)
    running = _start(worker)
    await within(started.wait())
    worker.stop()
    await asyncio.sleep(0)
    assert not running.done()  # waiting for the handler
    finish.set()
    await within(running)
    done = await _get(storage, "t")
    assert done.status == TaskStatus.Completed
    assert done.result == "finished while stopping"


@pytest.mark.parametrize("how", ["grace-over", "stop-now", "run-cancelled"])
async def test_a_stopped_worker_leaves_no_task_leased(storage: Storage, how: str) -> None:
    await storage.store_tasks([_task("t1"), _task("t2"), _task("t3")])
    started, seen = _Started(), list[str]()
    handler = _blocking(started, seen)
    reports = _Reports()
    # Two run (and ignore the grace); the third waits, unclaimed.
    grace = 0.05 if how == "grace-over" else WAIT * 10
    worker = Worker(storage, "w1", {"job": handler}, concurrency=2, grace=grace,
                    on_outcome=reports)  # fmt: skip
    running = _start(worker)
    await started.wait_for(2)  # both claimed and started
    if how == "run-cancelled":
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(running)
    else:
        await _stop(worker, running, now=how == "stop-now")
    assert await _held(storage) == []
    assert sorted(seen) == ["t1", "t2"]  # each handler saw its cancellation
    for tid in ("t1", "t2", "t3"):
        task = await _get(storage, tid)
        assert task.status == TaskStatus.Pending, task
        assert task.assigned_to is None
        assert task.lease_expires_at is None
        assert task.retry_count == 0  # a release is not a failed attempt
    assert sorted(r.task.id for r in reports.reports) == ["t1", "t2"]
    assert {r.outcome for r in reports.reports} == {Outcome.Released}
    assert sorted(e.task_id for e in await _events(storage, "task.released")) == ["t1", "t2"]
    assert worker.stats.released == 2
    agent = await storage.get_agent("w1")
    assert agent is not None
    assert agent.status == AgentStatus.Shutdown
    # Released tasks are ready for the next worker.
    assert sorted(t.id for t in await storage.get_ready_tasks()) == ["t1", "t2", "t3"]


async def test_a_released_task_is_run_by_the_next_worker(storage: Storage) -> None:
    await storage.store_task(_task("t"))
    started, seen = _Started(), list[str]()
    first = Worker(storage, "w1", {"job": _blocking(started, seen)}, grace=0)
    running = _start(first)
    await started.wait_for()
    await _stop(first, running)
    second = Worker(storage, "w2", {"job": lambda task, ctx: {"by": ctx.agent_id}})
    running = _start(second)
    done = await _final(storage, "t")
    await _stop(second, running)
    assert done.status == TaskStatus.Completed
    assert done.result == {"by": "w2"}
    assert done.retry_count == 0


# --- leases -----------------------------------------------------------------------------------


async def test_a_handler_that_overruns_its_lease_cannot_write_its_result(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await storage_factory(clock=clock, retry_policy=NO_BACKOFF)
    await storage.store_task(_task("t"))
    started, finish = asyncio.Event(), asyncio.Event()
    slow_reports, quick_reports = _Reports(), _Reports()

    async def slow(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        await finish.wait()
        return "late"

    # Without renewal the lease runs out while the handler works (as when the event loop is
    # blocked for longer than the lease).
    slow_worker = Worker(storage, "slow", {"job": slow}, lease=LEASE, renew=False,
                         on_outcome=slow_reports)  # fmt: skip
    slow_running = _start(slow_worker)
    await within(started.wait())
    clock.advance(LEASE.total_seconds() + 1)

    quick_worker = Worker(storage, "quick", {"job": lambda task, ctx: "on time"},
                          on_outcome=quick_reports)  # fmt: skip
    quick_running = _start(quick_worker)
    done = await _final(storage, "t")
    assert done.status == TaskStatus.Completed
    assert done.result == "on time"
    assert done.assigned_to == "quick"
    assert done.retry_count == 1  # the expired lease cost an attempt

    finish.set()  # the slow handler returns now: its result is refused, and never retried
    [report] = await slow_reports.wait_for(1)
    assert report.outcome == Outcome.LeaseLost
    assert report.result == "late"
    await _stop(slow_worker, slow_running)
    await _stop(quick_worker, quick_running)
    after = await _get(storage, "t")
    assert (after.status, after.result, after.assigned_to) == (
        TaskStatus.Completed,
        "on time",
        "quick",
    )
    lost = await _events(storage, "task.lease_lost")
    assert [(e.agent_id, e.task_id) for e in lost] == [("slow", "t")]
    completed = await _events(storage, "task.completed")
    assert [e.agent_id for e in completed] == ["quick"]
    assert slow_worker.stats.lease_lost == 1
    assert slow_worker.stats.completed == 0


async def test_the_worker_renews_the_lease_while_the_handler_runs(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_task(_task("t"))
    started, finish = asyncio.Event(), asyncio.Event()

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        await finish.wait()
        return "kept"

    worker = Worker(storage, "w1", {"job": handle}, lease=SHORT_LEASE)
    running = _start(worker)
    await within(started.wait())
    held = await _get(storage, "t")
    assert held.lease_expires_at is not None
    first_lease = held.lease_expires_at
    clock.advance(SHORT_LEASE / 2)

    async def renewed() -> None:
        # Polled: a renewal announces itself to nobody.
        while (await _get(storage, "t")).lease_expires_at == first_lease:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await within(renewed())
    clock.advance(SHORT_LEASE / 2)  # past the first lease: only the renewal keeps the task
    finish.set()
    done = await _final(storage, "t")
    await _stop(worker, running)
    assert (done.status, done.result, done.retry_count) == (TaskStatus.Completed, "kept", 0)


async def test_renew_from_the_handler_raises_lease_lost_once_the_task_is_gone(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    storage = await storage_factory(clock=clock, retry_policy=NO_BACKOFF)
    await storage.store_task(_task("t"))
    started, expired = asyncio.Event(), asyncio.Event()
    raised: list[BaseException] = []
    reports = _Reports()

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        await expired.wait()
        try:
            await ctx.renew()
        except LeaseLostError as exc:
            raised.append(exc)
            return "written anyway?"
        return "renewed"

    worker = Worker(storage, "w1", {"job": handle}, lease=LEASE, renew=False,
                    on_outcome=reports)  # fmt: skip
    running = _start(worker)
    await within(started.wait())
    clock.advance(LEASE.total_seconds() + 1)
    assert await storage.claim_task("t", "other")  # requeued on the way, and taken
    expired.set()
    [report] = await reports.wait_for(1)
    await _stop(worker, running)
    assert len(raised) == 1
    assert report.outcome == Outcome.LeaseLost
    task = await _get(storage, "t")
    assert (task.status, task.assigned_to, task.result) == (TaskStatus.Assigned, "other", None)


async def test_an_idle_worker_takes_over_a_task_when_its_lease_runs_out(
    storage_factory: StorageFactory,
) -> None:
    """Its holder died (it will never renew nor write): a worker waiting for work, which would
    otherwise look again only after ``idle_check``, takes the task when the lease ends."""
    storage = await storage_factory(retry_policy=NO_BACKOFF)  # the real clock
    await storage.store_task(_task("t"))
    assert await storage.claim_task("t", "dead", lease=SHORT_LEASE)
    worker = Worker(storage, "w1", {"job": lambda task, ctx: "taken over"}, idle_check=3600)
    running = _start(worker)
    done = await _final(storage, "t")
    await _stop(worker, running)
    assert (done.status, done.result, done.assigned_to, done.retry_count) == (
        TaskStatus.Completed,
        "taken over",
        "w1",
        1,  # the expired lease cost an attempt
    )


# --- cancellation -----------------------------------------------------------------------------


async def test_cancelling_a_running_task_cancels_its_handler(storage: Storage) -> None:
    await storage.store_tasks([_task("t"), _task("dependent", deps=["t"])])
    started, seen = _Started(), list[str]()
    reports = _Reports()
    worker = Worker(storage, "w1", {"job": _blocking(started, seen)}, lease=SHORT_LEASE,
                    on_outcome=reports)  # fmt: skip
    running = _start(worker)
    await started.wait_for()
    assert sorted(await storage.cancel_task("t", "no longer needed")) == ["dependent", "t"]
    [report] = await reports.wait_for(1)  # the next renewal found the task cancelled
    assert seen == ["t"]  # the handler saw its CancelledError
    assert report.outcome == Outcome.Cancelled
    assert report.task.status == TaskStatus.Cancelled
    await _stop(worker, running)
    task = await _get(storage, "t")
    assert task.status == TaskStatus.Cancelled
    assert task.error == "no longer needed"
    assert task.result is None
    assert [e.task_id for e in await _events(storage, "task.cancelled")] == ["t"]
    assert worker.stats.cancelled == 1


async def test_a_cancelled_tasks_late_result_is_refused(storage: Storage) -> None:
    """A handler in a thread cannot be interrupted: it sees ``cancel_requested`` and returns a
    result, which the worker does not write."""
    await storage.store_task(_task("t"))
    started = threading.Event()
    reports = _Reports()

    def handle(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        for _ in range(int(WAIT * 100)):
            if ctx.cancel_requested:
                return "too late"
            threading.Event().wait(0.01)
        return "never told"

    worker = Worker(storage, "w1", {"job": handle}, lease=SHORT_LEASE, on_outcome=reports)
    running = _start(worker)
    await within(asyncio.to_thread(started.wait, WAIT))
    await storage.cancel_task("t")
    [report] = await reports.wait_for(1)
    assert report.outcome == Outcome.Cancelled
    await _stop(worker, running)
    task = await _get(storage, "t")
    assert (task.status, task.result) == (TaskStatus.Cancelled, None)


# --- several workers --------------------------------------------------------------------------


async def test_two_workers_on_one_storage_never_run_a_task_twice(storage: Storage) -> None:
    tasks = [_task(f"t{i:03d}") for i in range(40)]
    await storage.store_tasks(tasks)
    runs: Counter[str] = Counter()
    by: dict[str, str] = {}

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        runs[task.id] += 1
        by[task.id] = ctx.agent_id
        await asyncio.sleep(0)  # let the other worker claim meanwhile
        return ctx.agent_id

    workers = [Worker(storage, f"w{k}", {"job": handle}, concurrency=3) for k in (1, 2)]
    running = [_start(w) for w in workers]
    for t in tasks:
        done = await _final(storage, t.id)
        assert done.status == TaskStatus.Completed
        assert done.result == done.assigned_to == by[t.id]
    for w, r in zip(workers, running, strict=True):
        await _stop(w, r)
    assert runs == dict.fromkeys((t.id for t in tasks), 1)
    assert sum(w.stats.completed for w in workers) == len(tasks)


# --- the agent and the event log --------------------------------------------------------------


async def test_the_worker_registers_its_agent_or_reuses_a_stored_one(storage: Storage) -> None:
    worker = Worker(storage, "fresh", {"job": lambda task, ctx: None}, heartbeat=None)
    running = _start(worker)
    await storage.store_task(_task("first"))
    await _final(storage, "first")  # the agent was registered before the claim
    agent = await storage.get_agent("fresh")
    assert agent is not None
    assert agent.status == AgentStatus.Active
    assert agent.capabilities == ["job"]
    await _stop(worker, running)
    stopped = await storage.get_agent("fresh")
    assert stopped is not None
    assert stopped.status == AgentStatus.Shutdown

    known = AgentModel.new("analyst", "analyst", ["analysis"], id="known")
    known.status = AgentStatus.Error  # reaped once; a new worker brings it back
    await storage.store_agent(known)
    again = Worker(storage, AgentModel.new("ignored", "other", [], id="known"),
                   {"job": lambda task, ctx: None})  # fmt: skip
    running = _start(again)
    await storage.store_task(_task("second"))
    await _final(storage, "second")
    reused = await storage.get_agent("known")
    assert reused is not None
    assert (reused.name, reused.agent_type, reused.status) == (
        "analyst",
        "analyst",
        AgentStatus.Active,
    )
    await _stop(again, running)


async def test_a_worker_with_events_off_records_none(storage: Storage) -> None:
    await storage.store_tasks([_task("ok"), _task("bad", max_retries=0)])

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        if task.id == "bad":
            raise RuntimeError("no")
        return 1

    worker = Worker(storage, "w1", {"job": handle}, events=False)
    running = _start(worker)
    await _final(storage, "ok")
    await _final(storage, "bad")
    await _stop(worker, running)
    assert await storage.read_events(0, 100) == []


__all__ = [name for name in list(globals()) if name.startswith("test_")]
