"""PostgreSQL: ``wait_for_task`` woken through LISTEN/NOTIFY by other connections and processes;
``complete_task`` and ``get_dependency_results`` each one statement.

Each storage object has its own pool and listener, so a write through one storage reaches the
waiters of another only through PostgreSQL's notifications. Polling is switched off
(``poll_interval`` of an hour) and each waiter's own timeout is far beyond the bound it is
awaited with, so a missing notification fails the test.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.errors import NotFoundError
from ruv_swarm_persistence.models import AgentModel, TaskModel, TaskStatus
from ruv_swarm_persistence.testing import FakeClock

from ._support import WAIT, Opener, log_queries, settled, url_with, wait_until

LONG = WAIT * 60


async def _listening(open_storage: Opener, **options: Any) -> PostgresStorage:
    storage = await open_storage(**options)
    storage.listener.poll_interval = 3600.0
    storage.listener.start()
    await wait_until(lambda: storage.listener.connected)
    return storage


async def _blocked(task: asyncio.Future[Any]) -> None:
    """Let ``task`` reach its wait; it must not finish on its own."""
    for _ in range(50):
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    assert not task.done()


def _tasks(*, cascade: bool) -> list[TaskModel]:
    """``root`` (pending under ``cascade``, else completed) and ``t1`` on it, no retries."""
    root = TaskModel.new("job", {}, id="root")
    if not cascade:
        root.status = TaskStatus.Completed
    return [root, TaskModel.new("job", {}, id="t1", dependencies=["root"], max_retries=0)]


async def _complete_the_long_way(writer: PostgresStorage, clock: FakeClock) -> None:
    # A lease run out elsewhere sends the completion down the full path (expire, then
    # transition) instead of the one-statement one.
    await writer.store_task(TaskModel.new("job", {}, id="other"))
    assert await writer.claim_task("other", "w9", lease=1)
    clock.advance(2)
    await writer.complete_task("t1", "w1", "the long way")
    other = await writer.get_task("other")
    assert other is not None
    assert other.retry_count == 1


async def _update(writer: PostgresStorage) -> None:
    task = await writer.get_task("t1")
    assert task is not None
    task.status = TaskStatus.Failed
    await writer.update_task(task)


async def _in_transaction(writer: PostgresStorage) -> None:
    async with writer.transaction() as tx:
        await tx.complete_task("t1", "w1", "in a transaction")


Finish = Callable[[PostgresStorage, FakeClock], Awaitable[Any]]

FINISHES: dict[str, Finish] = {
    "complete": lambda w, c: w.complete_task("t1", "w1", "fast"),
    "complete-long-way": _complete_the_long_way,
    "fail": lambda w, c: w.fail_task("t1", "w1", "boom"),
    "cascade": lambda w, c: w.cancel_task("root"),
    "lease": lambda w, c: (c.advance(timedelta(minutes=5)), w.claim_next_task("w2"))[1],
    "delete-agent": lambda w, c: w.delete_agent("w1"),
    "update": lambda w, c: _update(w),
    "transaction": lambda w, c: _in_transaction(w),
}


@pytest.mark.parametrize("how", list(FINISHES))
async def test_task_waiter_wakes_on_another_connections_commit(
    open_storage: Opener, how: str
) -> None:
    clock = FakeClock()
    reader = await _listening(open_storage, clock=clock)
    writer = await open_storage(clock=clock)
    await writer.store_agent(AgentModel.new("worker 1", "worker", id="w1"))
    await writer.store_tasks(_tasks(cascade=how == "cascade"))
    if how != "cascade":
        assert await writer.claim_task("t1", "w1")
    waiter = asyncio.ensure_future(reader.wait_for_task("t1", timeout=LONG))
    await _blocked(waiter)
    await FINISHES[how](writer, clock)
    got = await asyncio.wait_for(waiter, WAIT)
    assert got is not None
    assert got == await writer.get_task("t1")
    assert got.status in (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled)


async def test_task_waiter_learns_of_a_deletion_on_another_connection(
    open_storage: Opener,
) -> None:
    reader = await _listening(open_storage)
    writer = await open_storage()
    await writer.store_task(TaskModel.new("job", {}, id="t1"))
    waiter = asyncio.ensure_future(reader.wait_for_task("t1", timeout=LONG))
    await _blocked(waiter)
    await writer.delete_task("t1")
    with pytest.raises(NotFoundError):
        await asyncio.wait_for(waiter, WAIT)


async def test_a_retry_elsewhere_does_not_finish_the_task(open_storage: Opener) -> None:
    reader = await _listening(open_storage)
    writer = await open_storage()
    await writer.store_task(TaskModel.new("job", {}, id="t1", max_retries=1))
    assert await writer.claim_task("t1", "w1")
    waiter = asyncio.ensure_future(reader.wait_for_task("t1", timeout=LONG))
    await _blocked(waiter)
    assert (await writer.fail_task("t1", "w1", "again")).status == TaskStatus.Pending
    await _blocked(waiter)
    await writer.cancel_task("t1")
    assert (await asyncio.wait_for(waiter, WAIT)) is not None


async def test_task_waiter_wakes_on_another_process(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    reader = await _listening(open_storage)
    await reader.store_task(TaskModel.new("job", {}, id="t1"))
    waiter = asyncio.ensure_future(reader.wait_for_task("t1", timeout=LONG))
    await _blocked(waiter)
    code = (
        "import asyncio, sys\n"
        "from ruv_swarm_persistence import init_storage\n"
        "async def main():\n"
        "    s = await init_storage(sys.argv[1])\n"
        "    assert await s.claim_task('t1', 'afar')\n"
        "    await s.complete_task('t1', 'afar', {'pid': 1})\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, url_with(pg_url, schema=schema)
    )
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    got = await asyncio.wait_for(waiter, WAIT)
    assert got is not None
    assert (got.status, got.result, got.assigned_to) == (TaskStatus.Completed, {"pid": 1}, "afar")


# --- statements per call ----------------------------------------------------------------------


async def test_complete_task_is_still_one_statement(open_storage: Opener) -> None:
    storage = await open_storage()
    await storage.store_tasks(
        [TaskModel.new("job", {}, id="t1"), TaskModel.new("job", {}, id="t2", dependencies=["t1"])]
    )
    assert await storage.claim_task("t1", "w1")
    queries = log_queries(storage)
    done = await storage.complete_task("t1", "w1", {"ok": True})
    await settled()
    assert done.status == TaskStatus.Completed
    assert len(queries) == 1, queries
    assert "pg_notify($9, 'f')" in queries[0]


async def test_dependency_results_are_read_in_one_statement(open_storage: Opener) -> None:
    storage = await open_storage()
    deps = [TaskModel.new("job", {}, id=f"d{i}") for i in range(20)]
    await storage.store_tasks(deps)
    await storage.store_task(TaskModel.new("job", {}, id="t", dependencies=[d.id for d in deps]))
    for d in deps[:10]:
        assert await storage.claim_task(d.id, "w")
        await storage.complete_task(d.id, "w", {"id": d.id})
    queries = log_queries(storage)
    got = await storage.get_dependency_results("t")
    await settled()
    assert got == {d.id: {"id": d.id} for d in deps[:10]}
    assert len(queries) == 1, queries
