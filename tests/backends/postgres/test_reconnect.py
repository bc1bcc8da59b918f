"""Connections that die are replaced; callers see a retry where it is safe, an error otherwise.

A blocker holds a lock on a raw connection so that the storage's call is in flight on the
server when its connection is killed with ``pg_terminate_backend``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ruv_swarm_persistence.errors import DatabaseError
from ruv_swarm_persistence.models import TaskModel
from ruv_swarm_persistence.testing._support import agent

from ._support import WAIT, Opener, kill_backends


@pytest.fixture
async def blocker(pg_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to the test's schema, outside any storage's pool."""
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": f'"{schema}"'})
    yield conn
    await conn.close()


async def _waiting_on_a_lock(pg_url: str, schema: str) -> None:
    """Return once a pool connection of the schema's storage waits on a lock."""
    conn = await asyncpg.connect(pg_url)
    try:
        for _ in range(1000):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = $1 AND wait_event_type = 'Lock'",
                f"ruv-swarm pool {schema}",
            )
            if waiting:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the call never reached the server")
    finally:
        await conn.close()


async def test_idle_connections_killed_are_replaced(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    storage = await open_storage(min_size=3, max_size=3)
    await storage.store_agent(agent("a"))
    assert await kill_backends(pg_url, schema) >= 1
    failures = 0
    for i in range(5):
        try:
            await storage.store_agent(agent(f"b{i}"))
        except DatabaseError:
            failures += 1
    assert failures <= 1
    assert await storage.get_agent("a") is not None
    assert len(await storage.list_agents()) == 1 + 5 - failures


async def test_read_in_flight_is_retried_on_a_new_connection(
    pg_url: str, schema: str, open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await open_storage()
    await storage.store_agent(agent("a"))
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
    read = asyncio.ensure_future(storage.get_agent("a"))
    await _waiting_on_a_lock(pg_url, schema)
    assert await kill_backends(pg_url, schema) == 1
    await _waiting_on_a_lock(pg_url, schema)  # the retry, on a fresh connection
    await tx.rollback()
    got = await asyncio.wait_for(read, WAIT)
    assert got is not None
    assert got.id == "a"


async def test_write_that_did_not_commit_is_retried(
    pg_url: str, schema: str, open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await open_storage()
    task = TaskModel.new("job", {"v": 1}, id="t")
    await storage.store_task(task)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM tasks WHERE id = 't' FOR UPDATE")
    task.payload = {"v": 2}
    write = asyncio.ensure_future(storage.update_task(task))
    await _waiting_on_a_lock(pg_url, schema)
    # Killed before COMMIT was sent: the server rolled it back, so it is retried.
    assert await kill_backends(pg_url, schema) == 1
    await _waiting_on_a_lock(pg_url, schema)
    await tx.rollback()
    await asyncio.wait_for(write, WAIT)
    got = await storage.get_task("t")
    assert got is not None
    assert got.payload == {"v": 2}


async def test_write_whose_commit_is_unknown_is_an_error(
    pg_url: str, schema: str, open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await open_storage()
    tx = blocker.transaction()
    await tx.start()
    # An uncommitted row with the same key makes the storage's insert wait.
    await blocker.execute(
        "INSERT INTO agents (id, name, agent_type, status, capabilities, metadata, heartbeat, "
        "created_at, updated_at) VALUES ('x', 'n', 't', 'idle', '[]', '{}', 0, 0, 0)"
    )
    write = asyncio.ensure_future(storage.store_agent(agent("x")))
    await _waiting_on_a_lock(pg_url, schema)
    assert await kill_backends(pg_url, schema) == 1
    # A single statement is its own commit: once sent, its outcome is unknown to the caller.
    with pytest.raises(DatabaseError, match="may or may not"):
        await asyncio.wait_for(write, WAIT)
    await tx.rollback()
    assert await storage.get_agent("x") is None
    await storage.store_agent(agent("x"))
    assert await storage.get_agent("x") is not None


async def test_transaction_whose_connection_dies_fails_and_applies_nothing(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    storage = await open_storage()
    tx = await storage.begin_transaction()
    await tx.store_agent(agent("in-tx"))
    assert await kill_backends(pg_url, schema) == 1
    with pytest.raises(DatabaseError):
        await tx.store_agent(agent("more"))
    with pytest.raises(DatabaseError):
        await tx.commit()
    assert await storage.get_agent("in-tx") is None
    await storage.store_agent(agent("after"))
    assert await storage.get_agent("after") is not None


async def test_calls_after_every_pooled_connection_is_killed(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    # A killed session looks alive to the driver until it reads the end of the socket, so
    # the pool used to hand the dead ones out again, and a call's one retry drew another:
    # reads and transactions failed with the driver's "cannot switch to state".
    storage = await open_storage(min_size=4, max_size=4)
    await storage.store_agent(agent("a"))

    async def call(i: int, rnd: int) -> str | None:
        """``None`` on success, else the kind of call and its error."""
        try:
            if i % 4 == 0:
                assert await storage.get_agent("a") is not None
            elif i % 4 == 1:
                assert len(await storage.list_agents()) >= 1
            elif i % 4 == 2:
                async with storage.transaction() as tx:
                    await tx.store_task(TaskModel.new("job"))
            else:
                await storage.store_agent(agent(f"b{rnd}-{i}"))
        except DatabaseError as exc:
            return f"{'write' if i % 4 == 3 else 'read'}: {exc}"
        return None

    for rnd in range(10):
        assert await kill_backends(pg_url, schema) == 4
        outcomes = await asyncio.gather(*(call(i, rnd) for i in range(40)))
        failed = [o for o in outcomes if o is not None]
        # Only a write sent to a dying session may fail, and it says so.
        assert [f for f in failed if not f.startswith("write: ")] == []
        assert all("may or may not" in f for f in failed), failed
        assert len(failed) < 10, failed
