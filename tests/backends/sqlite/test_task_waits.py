"""SQLite: ``wait_for_task`` woken by this process's commits and by other processes' commits,
and ``get_dependency_results`` in one statement."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import AgentModel, TaskModel, TaskStatus
from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.errors import NotFoundError
from ruv_swarm_persistence.testing import FakeClock

WAIT = 20.0

CHILD = """
import asyncio, sys
from ruv_swarm_persistence.backends.sqlite import SqliteStorage

async def main(path: str, action: str) -> None:
    async with SqliteStorage.open(path) as storage:
        if action == "complete":
            assert await storage.claim_task("t1", "child")
            await storage.complete_task("t1", "child", {"by": "child"})
        else:
            await storage.cancel_task("root", "from afar")
    print("done")

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _run_child(path: Path, action: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(path),
        action,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT * 3)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "done"


async def _blocked(waiter: asyncio.Future[Any]) -> None:
    """Let the waiter reach its wait; it must not return on its own."""
    await asyncio.sleep(0.2)
    assert not waiter.done()


@pytest.mark.parametrize("action", ["complete", "cancel"])
async def test_a_task_waiter_wakes_for_another_process(db_path: Path, action: str) -> None:
    async with SqliteStorage.open(db_path) as storage:
        await storage.store_tasks(
            [
                TaskModel.new("job", {}, id="t1"),
                TaskModel.new("job", {}, id="root"),
                TaskModel.new("job", {}, id="leaf", dependencies=["root"]),
            ]
        )
        task_id = "t1" if action == "complete" else "leaf"
        # Its own timeout is far beyond the bound: only a wake-up answers it in time.
        waiter = asyncio.create_task(storage.wait_for_task(task_id, timeout=WAIT * 30))
        await _blocked(waiter)
        await _run_child(db_path, action)
        got = await asyncio.wait_for(waiter, WAIT)
    assert got is not None
    if action == "complete":
        assert (got.status, got.result, got.assigned_to) == (
            TaskStatus.Completed,
            {"by": "child"},
            "child",
        )
    else:
        assert (got.status, got.error) == (TaskStatus.Cancelled, "dependency root cancelled")


# --- this process's commits wake its waiters without looking at the file ----------------------


async def _finish(storage: SqliteStorage, clock: FakeClock, how: str) -> None:
    """Make task ``t1`` final (held by ``w1`` without retries; blocked by ``root`` for
    ``cascade``)."""
    if how == "complete":
        await storage.complete_task("t1", "w1", "ok")
    elif how == "fail":
        await storage.fail_task("t1", "w1", "boom")
    elif how == "cascade":
        await storage.cancel_task("root")
    elif how == "lease":
        clock.advance(timedelta(minutes=5))
        assert await storage.claim_next_task("w2") is None
    elif how == "delete_agent":
        await storage.delete_agent("w1")
    elif how == "update":
        task = await storage.get_task("t1")
        assert task is not None
        task.status = TaskStatus.Failed
        await storage.update_task(task)
    else:
        assert how == "transaction"
        async with storage.transaction() as tx:
            await tx.complete_task("t1", "w1", "ok")


HOWS = ["complete", "fail", "cascade", "lease", "delete_agent", "update", "transaction"]


@pytest.mark.parametrize("how", HOWS)
async def test_a_local_commit_wakes_task_waiters_without_the_file_watcher(
    db_path: Path, how: str
) -> None:
    clock = FakeClock()
    async with SqliteStorage.open(db_path, clock=clock) as storage:
        await storage.store_agent(AgentModel.new("worker 1", "worker", id="w1"))
        root = TaskModel.new("job", {}, id="root")
        if how != "cascade":
            root.status = TaskStatus.Completed
        t1 = TaskModel.new("job", {}, id="t1", dependencies=["root"])
        t1.max_retries = 0
        await storage.store_tasks([root, t1])
        if how != "cascade":
            assert await storage.claim_task("t1", "w1")
        # Other processes' commits are found by watching the file; switched off here, so
        # only the writer's own announcement (the write context's flag) can wake the waiter.
        storage._sqlite.watch = lambda: None  # type: ignore[method-assign]
        waiter = asyncio.create_task(storage.wait_for_task("t1", timeout=WAIT * 30))
        await _blocked(waiter)
        await _finish(storage, clock, how)
        got = await asyncio.wait_for(waiter, WAIT)
    assert got is not None
    assert got.status in (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled)


async def test_a_local_delete_wakes_task_waiters_without_the_file_watcher(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        await storage.store_task(TaskModel.new("job", {}, id="t1"))
        storage._sqlite.watch = lambda: None  # type: ignore[method-assign]
        waiter = asyncio.create_task(storage.wait_for_task("t1", timeout=WAIT * 30))
        await _blocked(waiter)
        await storage.delete_task("t1")
        with pytest.raises(NotFoundError):
            await asyncio.wait_for(waiter, WAIT)


# --- one statement ----------------------------------------------------------------------------


async def test_dependency_results_are_read_in_one_statement(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        deps = [TaskModel.new("job", {}, id=f"d{i}") for i in range(20)]
        await storage.store_tasks(deps)
        await storage.store_task(
            TaskModel.new("job", {}, id="t", dependencies=[d.id for d in deps])
        )
        for d in deps[:10]:
            assert await storage.claim_task(d.id, "w")
            await storage.complete_task(d.id, "w", {"id": d.id})
        statements: list[str] = []
        async with storage.transaction() as tx:
            conn = tx.ctx.conn  # type: ignore[attr-defined]

            def trace(_cursor: Any, statement: str, _bindings: Any) -> bool:
                statements.append(statement)
                return True

            conn.exec_trace = trace
            try:
                got = await tx.get_dependency_results("t")
            finally:
                conn.exec_trace = None
        assert got == {d.id: {"id": d.id} for d in deps[:10]}
        assert len(statements) == 1, statements
        assert await storage.get_dependency_results("t") == got
