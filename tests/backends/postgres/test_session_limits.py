"""Server-side limits on every session: a client that stops inside a transaction (frozen,
suspended, stuck) cannot hold its locks for ever, and lock waits can be bounded.

A helper process opens the storage, begins a transaction, changes a task and then stops
itself with SIGSTOP: its transaction timer can no longer run, exactly like a frozen process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from ruv_swarm_persistence import init_storage
from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.errors import ValidationError
from ruv_swarm_persistence.models import TaskModel, TaskPriority

from ._support import WAIT, Opener, url_with

FREEZE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from ruv_swarm_persistence.backends.postgres import PostgresStorage
    from ruv_swarm_persistence.models import TaskPriority

    async def main() -> None:
        url, schema, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
        storage = await PostgresStorage.open(
            url, schema=schema, idle_in_transaction_timeout=idle, migrate=False
        )
        tx = await storage.begin_transaction()
        task = await tx.get_task("t1")
        task.priority = TaskPriority.Low
        await tx.update_task(task)  # holds the row lock until the transaction ends
        print("holding", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

    asyncio.run(main())
    """
)


@pytest.fixture
def frozen(pg_url: str, schema: str) -> Iterator[Any]:
    """Start a process that freezes holding task t1's row lock (killed after the test)."""
    procs: list[subprocess.Popen[str]] = []

    def start(idle_timeout: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", FREEZE, pg_url, schema, str(idle_timeout)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "holding"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=WAIT)
        assert proc.stdout is not None
        proc.stdout.close()


async def _stored(open_storage: Opener, **options: Any) -> PostgresStorage:
    storage = await open_storage(**options)
    await storage.store_task(TaskModel.new("job", {}, TaskPriority.High, id="t1"))
    return storage


async def test_a_frozen_transaction_is_ended_by_the_server(
    open_storage: Opener, frozen: Any
) -> None:
    storage = await _stored(open_storage)
    frozen(1.0)
    task = await storage.get_task("t1")
    assert task is not None
    task.priority = TaskPriority.Critical
    # Waits for the frozen session's lock until the server ends that session (about 1 s).
    await asyncio.wait_for(storage.update_task(task), WAIT)
    stored = await storage.get_task("t1")
    assert stored is not None
    assert stored.priority == TaskPriority.Critical


async def test_without_the_limit_a_frozen_transaction_blocks_writers(
    open_storage: Opener, frozen: Any
) -> None:
    # The control: with the limit off the same write waits for as long as the process is frozen.
    storage = await _stored(open_storage)
    proc = frozen(0)
    task = await storage.get_task("t1")
    assert task is not None
    task.priority = TaskPriority.Critical
    write = asyncio.ensure_future(storage.update_task(task))
    done, _ = await asyncio.wait([write], timeout=2.0)
    assert not done
    os.kill(proc.pid, signal.SIGKILL)  # its connection closes; the lock goes with it
    await asyncio.wait_for(write, WAIT)


async def _setting(storage: PostgresStorage, name: str) -> str:
    value: str = await storage._runner.read(lambda conn: conn.fetchval(f"SHOW {name}"))
    return value


async def test_the_limits_are_set_on_every_session(open_storage: Opener) -> None:
    default = await open_storage(transaction_timeout=20)
    assert await _setting(default, "idle_in_transaction_session_timeout") == "30s"
    assert await _setting(default, "lock_timeout") == "0"
    tuned = await open_storage(lock_timeout=2.5, idle_in_transaction_timeout=0)
    assert await _setting(tuned, "lock_timeout") == "2500ms"
    assert await _setting(tuned, "idle_in_transaction_session_timeout") == "0"


async def test_a_longer_transaction_may_idle_longer(open_storage: Opener) -> None:
    storage = await open_storage(transaction_timeout=5)
    async with storage.transaction(timeout=100) as tx:
        conn = tx._conn  # type: ignore[attr-defined]
        assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "110s"
    async with storage.transaction() as tx:
        conn = tx._conn  # type: ignore[attr-defined]
        assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "15s"


async def test_the_limits_come_from_the_url(pg_url: str, schema: str) -> None:
    url = url_with(pg_url, schema=schema, lock_timeout="1", idle_in_transaction_timeout="60")
    storage = await init_storage(url)
    assert isinstance(storage, PostgresStorage)
    try:
        assert await _setting(storage, "lock_timeout") == "1s"
        assert await _setting(storage, "idle_in_transaction_session_timeout") == "1min"
    finally:
        await storage.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lock_timeout", -1),
        ("lock_timeout", 0),
        ("lock_timeout", 3_000_000),
        ("idle_in_transaction_timeout", -1),
        ("idle_in_transaction_timeout", float("nan")),
        ("idle_in_transaction_timeout", 3_000_000),
        ("idle_in_transaction_timeout", "soon"),
    ],
)
async def test_bad_limits_are_refused_before_connecting(option: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        await PostgresStorage.open("postgresql://nobody@127.0.0.1:1/none", **{option: value})
    assert info.value.field == option
