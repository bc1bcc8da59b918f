"""The worker's own rules, on the memory backend: arguments, storage trouble, callbacks.

What every backend must give the worker is in the conformance suite
(``ruv_swarm_persistence.testing.workers``); these are the worker's decisions.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import pytest

from ruv_swarm_persistence import MemoryStorage, TaskModel, TaskStatus, ValidationError
from ruv_swarm_persistence.errors import DatabaseError
from ruv_swarm_persistence.storage import Duration
from ruv_swarm_persistence.testing._support import WAIT, within
from ruv_swarm_persistence.worker import (
    MAX_ERROR_CHARS,
    Outcome,
    TaskContext,
    TaskReport,
    Worker,
)
from ruv_swarm_persistence.worker_reports import error_text


async def _noop(task: TaskModel, ctx: TaskContext) -> Any:
    return None


async def _final(storage: MemoryStorage, task_id: str) -> TaskModel:
    task = await storage.wait_for_task(task_id, WAIT)
    assert task is not None
    return task


async def _run(worker: Worker, storage: MemoryStorage, task_ids: Sequence[str]) -> None:
    running = asyncio.create_task(worker.run())
    for task_id in task_ids:
        await _final(storage, task_id)
    worker.stop()
    await within(running)


def test_arguments_are_checked_when_the_worker_is_made() -> None:
    storage = MemoryStorage()
    with pytest.raises(ValueError, match="at least one handler"):
        Worker(storage, "w", {})
    with pytest.raises(ValueError, match="no handler for task type"):
        Worker(storage, "w", {"a": _noop}, task_types=["a", "b"])
    with pytest.raises(TypeError, match="not one string"):
        Worker(storage, "w", {"a": _noop}, task_types="a")
    with pytest.raises(TypeError, match="not callable"):
        Worker(storage, "w", {"a": 42})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="concurrency"):
        Worker(storage, "w", {"a": _noop}, concurrency=0)
    with pytest.raises(ValidationError):
        Worker(storage, "", {"a": _noop})
    bad: Duration
    for bad in (-1, 0, float("nan")):
        with pytest.raises(ValidationError):
            Worker(storage, "w", {"a": _noop}, lease=bad)
    Worker(storage, "w", {"a": _noop}, grace=0)  # no grace: allowed


def test_error_text_is_what_the_storage_accepts() -> None:
    assert error_text(RuntimeError("boom")) == "RuntimeError: boom"
    assert error_text(KeyError()) == "KeyError"
    assert error_text(ValueError("a\x00b")) == "ValueError: a\\0b"
    assert error_text(ValueError("lone \udc80")) == "ValueError: lone \\udc80"
    long = error_text(ValueError("x" * 100_000))
    assert len(long) == MAX_ERROR_CHARS
    assert long.endswith("…")


async def test_a_worker_runs_once() -> None:
    async with MemoryStorage() as storage:
        worker = Worker(storage, "w", {"a": _noop})
        worker.stop()  # before run(): run() registers, then stops at once
        await within(worker.run())
        with pytest.raises(RuntimeError, match="runs once"):
            await worker.run()


async def test_handlers_of_every_shape_are_awaited_or_run_in_a_thread() -> None:
    class Handler:
        async def __call__(self, task: TaskModel, ctx: TaskContext) -> Any:
            return "instance"

    async def with_prefix(prefix: str, task: TaskModel, ctx: TaskContext) -> Any:
        return prefix + task.id

    def returns_coroutine(task: TaskModel, ctx: TaskContext) -> Any:
        return with_prefix("coroutine-", task, ctx)

    async with MemoryStorage() as storage:
        await storage.store_tasks(
            [TaskModel.new(t, id=t) for t in ("instance", "partial", "coroutine")]
        )
        handlers = {
            "instance": Handler(),
            "partial": functools.partial(with_prefix, "partial-"),
            "coroutine": returns_coroutine,
        }
        await _run(Worker(storage, "w", handlers), storage, ["instance", "partial", "coroutine"])
        results = {t: (await _final(storage, t)).result for t in handlers}
    assert results == {
        "instance": "instance",
        "partial": "partial-partial",
        "coroutine": "coroutine-coroutine",
    }


class _Flaky(MemoryStorage):
    """A storage whose claims (or completions) fail for a while, as a lost connection does."""

    claim_failures = 0
    complete_failures = 0

    async def claim_next_task(
        self, agent_id: str, task_types: Sequence[str] | None = None, lease: Duration | None = None
    ) -> TaskModel | None:
        if self.claim_failures:
            self.claim_failures -= 1
            raise DatabaseError("connection lost")
        return await super().claim_next_task(agent_id, task_types, lease)

    async def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        if self.complete_failures:
            self.complete_failures -= 1
            raise DatabaseError("connection lost")
        return await super().complete_task(task_id, agent_id, result)


async def test_failing_claims_pause_the_worker_instead_of_ending_it() -> None:
    async with _Flaky() as storage:
        storage.claim_failures = 2
        await storage.store_task(TaskModel.new("a", id="t"))
        worker = Worker(storage, "w", {"a": lambda task, ctx: "done"})
        await _run(worker, storage, ["t"])
        assert (await _final(storage, "t")).result == "done"
        assert storage.claim_failures == 0


async def test_an_outcome_that_cannot_be_written_is_reported_and_left_to_the_lease() -> None:
    reports: list[TaskReport] = []
    async with _Flaky() as storage:
        storage.complete_failures = 1
        await storage.store_task(TaskModel.new("a", id="t"))
        worker = Worker(storage, "w", {"a": lambda task, ctx: "lost"}, on_outcome=reports.append)
        running = asyncio.create_task(worker.run())

        async def reported() -> None:
            while not reports:  # noqa: ASYNC110 - the callback is a plain list append
                await asyncio.sleep(0.01)

        await within(reported())
        worker.stop()
        await within(running)
        task = await storage.get_task("t")
    assert [r.outcome for r in reports] == [Outcome.Unrecorded]
    assert worker.stats.unrecorded == 1
    assert task is not None
    # Never written, never released: the lease runs out and counts an attempt, as for a crash.
    assert (task.status, task.assigned_to) == (TaskStatus.Running, "w")


async def test_a_failing_callback_does_not_stop_the_worker() -> None:
    calls: list[str] = []

    async def callback(report: TaskReport) -> None:
        calls.append(report.task.id)
        raise RuntimeError("callback broke")

    async with MemoryStorage() as storage:
        await storage.store_tasks([TaskModel.new("a", id="t1"), TaskModel.new("a", id="t2")])
        worker = Worker(storage, "w", {"a": _noop}, on_outcome=callback)
        await _run(worker, storage, ["t1", "t2"])
    assert sorted(calls) == ["t1", "t2"]
    assert worker.stats.completed == 2


async def test_a_task_claimed_as_the_worker_stops_is_given_back_unstarted() -> None:
    started: list[str] = []

    class StopsWhileClaiming(MemoryStorage):
        async def claim_next_task(
            self,
            agent_id: str,
            task_types: Sequence[str] | None = None,
            lease: Duration | None = None,
        ) -> TaskModel | None:
            claimed = await super().claim_next_task(agent_id, task_types, lease)
            worker.stop()
            return claimed

    async def handler(task: TaskModel, ctx: TaskContext) -> Any:
        started.append(task.id)

    async with StopsWhileClaiming() as storage:
        await storage.store_task(TaskModel.new("a", id="t"))
        worker = Worker(storage, "w", {"a": handler})
        await within(worker.run())
        task = await storage.get_task("t")
    assert started == []
    assert task is not None
    assert (task.status, task.assigned_to, task.started_at) == (TaskStatus.Pending, None, None)
    assert worker.stats.released == 1


async def test_the_context_can_be_made_to_test_a_handler() -> None:
    async with MemoryStorage() as storage:
        task = TaskModel.new("a", {"n": 2})
        ctx = TaskContext(task, "w", storage, {"dep": 40})
        assert ctx.attempt == 1
        assert ctx.lease.total_seconds() == 30
        assert not ctx.cancel_requested

        async def handler(task: TaskModel, ctx: TaskContext) -> Any:
            return ctx.dependency_results["dep"] + task.payload["n"]

        assert await handler(task, ctx) == 42


async def test_a_handler_that_ignores_its_cancellation_is_left_behind_on_stop() -> None:
    started, finish = asyncio.Event(), asyncio.Event()

    async def stubborn(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        while True:
            try:
                await finish.wait()
                return "late"
            except asyncio.CancelledError:
                continue  # swallowed: the worker cannot stop it

    async with MemoryStorage() as storage:
        await storage.store_task(TaskModel.new("a", id="t"))
        worker = Worker(storage, "w", {"a": stubborn}, grace=0)
        running = asyncio.create_task(worker.run())
        await within(started.wait())
        worker.stop()
        await within(running)  # after the unwind time, without the handler
        released = await storage.get_task("t")
        assert released is not None
        assert (released.status, released.assigned_to) == (TaskStatus.Pending, None)
        assert (worker.stats.released, worker.stats.running) == (1, 0)
        finish.set()  # the handler returns at last: its result is not written
        for _ in range(5):
            await asyncio.sleep(0)
        after = await storage.get_task("t")
        assert after is not None
        assert (after.status, after.result) == (TaskStatus.Pending, None)
        assert worker.stats.completed == 0
