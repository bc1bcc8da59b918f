"""The blocking Worker: the async worker run on the facade's loop thread, driven from threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import AgentStatus, StorageError, TaskModel, TaskStatus
from ruv_swarm_persistence.sync import SyncStorage, Worker, open_storage
from ruv_swarm_persistence.worker import TaskContext
from ruv_swarm_persistence.worker_reports import Outcome, TaskReport

#: Bounds a wait for another thread; never an assertion about speed.
WAIT = 30.0


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncStorage]:
    url = "memory://" if request.param == "memory" else str(tmp_path / "worker.db")
    with open_storage(url) as s:
        yield s


def _final(storage: SyncStorage, task_id: str) -> TaskModel:
    task = storage.wait_for_task(task_id, WAIT)
    assert task is not None, f"task {task_id} did not finish"
    return task


def test_plain_handlers_run_in_threads_and_may_use_the_blocking_storage(
    storage: SyncStorage,
) -> None:
    storage.store_tasks([TaskModel.new("square", {"n": n}, id=f"t{n}") for n in range(6)])
    threads: set[int] = set()

    def square(task: TaskModel, ctx: TaskContext) -> Any:
        threads.add(threading.get_ident())
        running = storage.get_task(task.id)  # a blocking call from the handler's thread
        assert running is not None
        assert running.status == TaskStatus.Running
        return task.payload["n"] ** 2

    with Worker(storage, "w1", {"square": square}, concurrency=3) as worker:
        done = [_final(storage, f"t{n}") for n in range(6)]
    assert [t.result for t in done] == [n**2 for n in range(6)]
    assert threading.get_ident() not in threads
    assert not worker.running
    assert worker.stats.completed == 6
    agent = storage.get_agent("w1")
    assert agent is not None
    assert agent.status == AgentStatus.Shutdown


def test_async_handlers_run_on_the_storages_loop_thread(storage: SyncStorage) -> None:
    storage.store_task(TaskModel.new("job", id="t"))
    seen: list[threading.Thread] = []

    async def handle(task: TaskModel, ctx: TaskContext) -> Any:
        seen.append(threading.current_thread())
        return (await ctx.storage.get_task(task.id)) is not None

    with Worker(storage, "w1", {"job": handle}):
        assert _final(storage, "t").result is True
    assert len(seen) == 1
    assert seen[0] is not threading.current_thread()


def test_run_blocks_until_a_handler_stops_the_worker(storage: SyncStorage) -> None:
    storage.store_tasks([TaskModel.new("job", id=f"t{i}") for i in range(3)])
    reports: list[TaskReport] = []
    worker: Worker

    def handle(task: TaskModel, ctx: TaskContext) -> Any:
        return task.id

    def counted(report: TaskReport) -> None:
        reports.append(report)
        if len(reports) == 3:
            worker.stop()  # on the loop thread, from the callback

    worker = Worker(storage, "w1", {"job": handle}, on_outcome=counted)
    done = threading.Event()

    def run() -> None:
        worker.run()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(WAIT)
    assert sorted(r.task.id for r in reports) == ["t0", "t1", "t2"]
    assert {r.outcome for r in reports} == {Outcome.Completed}
    assert worker.join(0) is True


def test_stop_now_releases_a_running_handlers_task(storage: SyncStorage) -> None:
    storage.store_task(TaskModel.new("job", id="t"))
    started, told = threading.Event(), threading.Event()

    def handle(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        for _ in range(int(WAIT * 100)):
            if ctx.cancel_requested:
                told.set()
                return "too late"
            threading.Event().wait(0.01)
        return "never told"

    worker = Worker(storage, "w1", {"job": handle}, grace=WAIT * 10)
    worker.start()
    assert started.wait(WAIT)
    assert worker.join(0) is False  # still running
    worker.stop(now=True)  # from this thread
    assert worker.join(WAIT)
    assert told.wait(WAIT)
    task = storage.get_task("t")
    assert task is not None
    assert (task.status, task.assigned_to, task.result) == (TaskStatus.Pending, None, None)
    assert worker.stats.released == 1


def test_a_worker_runs_once_and_not_on_a_closed_storage(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "once.db"))
    worker = Worker(storage, "w1", {"job": lambda task, ctx: None})
    with pytest.raises(RuntimeError, match="not started"):
        worker.join()
    worker.start()
    with pytest.raises(RuntimeError, match="runs once"):
        worker.start()
    worker.stop()
    assert worker.join(WAIT)
    storage.close()
    late = Worker(storage, "w2", {"job": lambda task, ctx: None})
    with pytest.raises(StorageError, match="closed"):
        late.start()


def test_ctrl_c_in_run_stops_the_worker_gracefully(
    storage: SyncStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.store_task(TaskModel.new("job", id="t"))
    started = threading.Event()

    def handle(task: TaskModel, ctx: TaskContext) -> Any:
        started.set()
        while not ctx.cancel_requested:  # past the grace
            threading.Event().wait(0.01)
        return "too late"

    worker = Worker(storage, "w1", {"job": handle}, grace=0.2)
    join = worker.join
    interrupts = []

    def interrupted_join(timeout: float | None = None) -> bool:
        # Ctrl-C lands while run() waits (a real SIGINT would end the test process itself).
        if not interrupts:
            interrupts.append(started.wait(WAIT))
            raise KeyboardInterrupt
        return join(timeout)

    monkeypatch.setattr(worker, "join", interrupted_join)
    worker.run()  # returns: the interrupt stopped the worker instead of escaping
    assert interrupts == [True]
    assert worker.stopping
    task = storage.get_task("t")
    assert task is not None
    assert (task.status, task.assigned_to) == (TaskStatus.Pending, None)
    assert worker.stats.released == 1
