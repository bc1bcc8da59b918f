"""A statement past ``command_timeout`` is a timeout: never retried as a lost connection.

The server may still be working on a statement that timed out, so a timed-out read or write
is reported at once, saying so; one that may have committed (a ``COMMIT``, or a statement
that is its own commit) says it may or may not have been applied. Its connection is kept,
so that asyncpg has the server cancel the statement. A blocker holds a lock on a raw
connection to make the storage's call wait; a deferred constraint trigger that sleeps makes
a ``COMMIT`` wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from ruv_swarm_persistence.backends.postgres import PostgresStorage, errors
from ruv_swarm_persistence.backends.postgres.options import application_name
from ruv_swarm_persistence.backends.postgres.runner import (
    READ,
    SELF_COMMITTING,
    WRITE,
    Attempt,
    Phase,
)
from ruv_swarm_persistence.errors import DatabaseError
from ruv_swarm_persistence.models import TaskModel
from ruv_swarm_persistence.testing._support import agent

from ._support import WAIT, Opener

TIMEOUT = 0.3
TIMED_OUT = "did not answer within command_timeout"
IN_DOUBT = "may or may not have been applied"


@pytest.fixture
async def blocker(pg_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to the test's schema, outside any storage's pool."""
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": f'"{schema}"'})
    yield conn
    await conn.close()


async def timed_storage(open_storage: Opener) -> PostgresStorage:
    """A storage with the short ``command_timeout``, on a schema migrated beforehand.

    Migrating a fresh schema runs DDL that may take longer than the short timeout on a loaded
    machine; only the calls under test should meet it.
    """
    await open_storage()
    return await open_storage(command_timeout=TIMEOUT)


def count_acquires(storage: PostgresStorage) -> list[int]:
    """Count the connections the storage takes from its pool (one per attempt)."""
    runner: Any = storage._runner
    acquire = runner.acquire
    count = [0]

    def counted() -> Any:
        count[0] += 1
        return acquire()

    runner.acquire = counted
    return count


async def slow_commits(conn: asyncpg.Connection, table: str) -> None:
    """Make every COMMIT of a transaction that wrote to ``table`` take a second."""
    await conn.execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$"
    )
    await conn.execute(
        f"CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON {table} "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
    )


# --- the classification ----------------------------------------------------------------------


def test_a_timeout_is_not_a_lost_connection() -> None:
    exc = TimeoutError()  # asyncio's too; an OSError, as lost connections are
    assert not errors.connection_lost(exc)
    assert errors.timed_out(exc)
    assert TIMED_OUT in str(errors.translate(exc))
    assert errors.connection_lost(ConnectionResetError())
    assert not errors.timed_out(ConnectionResetError())


@pytest.mark.parametrize(
    ("policy", "phase", "doubt"),
    [
        (READ, Phase.SENT, False),
        (WRITE, Phase.SENT, False),
        (WRITE, Phase.COMMITTING, True),
        (SELF_COMMITTING, Phase.SENT, True),
    ],
)
def test_no_policy_retries_a_timeout(policy: Any, phase: Phase, doubt: bool) -> None:
    error = policy.verdict(TimeoutError(), Attempt(0, phase))
    assert isinstance(error, DatabaseError)
    assert TIMED_OUT in str(error)
    assert (IN_DOUBT in str(error)) is doubt
    assert "lost" not in str(error)


# --- end to end ------------------------------------------------------------------------------


async def test_a_read_that_times_out_is_not_retried(
    open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await timed_storage(open_storage)
    await storage.store_agent(agent("a"))
    acquires = count_acquires(storage)
    async with blocker.transaction():
        await blocker.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(DatabaseError, match=TIMED_OUT) as info:
            await asyncio.wait_for(storage.get_agent("a"), WAIT)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert acquires[0] == 1
    assert await storage.get_agent("a") is not None


async def test_a_write_that_times_out_before_commit_is_not_retried(
    open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await timed_storage(open_storage)
    task = TaskModel.new("job", {"v": 1}, id="t")
    await storage.store_task(task)
    acquires = count_acquires(storage)
    task.payload = {"v": 2}
    async with blocker.transaction():
        await blocker.execute("SELECT 1 FROM tasks WHERE id = 't' FOR UPDATE")
        with pytest.raises(DatabaseError, match=TIMED_OUT) as info:
            await asyncio.wait_for(storage.update_task(task), WAIT)
    # COMMIT was never sent: the write certainly did not happen, and says nothing else.
    assert IN_DOUBT not in str(info.value)
    assert acquires[0] == 1
    got = await storage.get_task("t")
    assert got is not None
    assert got.payload == {"v": 1}


async def test_a_statement_that_times_out_may_or_may_not_have_been_applied(
    schema: str, open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await timed_storage(open_storage)
    acquires = count_acquires(storage)
    tx = blocker.transaction()
    await tx.start()
    # An uncommitted row with the same key makes the storage's insert wait.
    await blocker.execute(
        "INSERT INTO agents (id, name, agent_type, status, capabilities, metadata, "
        "heartbeat, created_at, updated_at) VALUES ('x', 'n', 't', 'idle', '[]', '{}', 0, 0, 0)"
    )
    with pytest.raises(DatabaseError, match=TIMED_OUT) as info:
        await asyncio.wait_for(storage.store_agent(agent("x")), WAIT)
    assert IN_DOUBT in str(info.value)
    assert "lost" not in str(info.value)
    assert acquires[0] == 1
    # The statement was cancelled on the server, not left waiting to apply itself later
    # (as it would be if its connection were merely dropped).
    waiting = await blocker.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
        "AND wait_event_type = 'Lock'",
        application_name(schema),
    )
    assert waiting == 0
    await tx.rollback()
    assert await storage.get_agent("x") is None


async def test_a_commit_that_times_out_may_or_may_not_have_been_applied(
    open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await timed_storage(open_storage)
    await slow_commits(blocker, "tasks")
    acquires = count_acquires(storage)
    # A batch is written in a transaction: its COMMIT is what times out.
    batch = [TaskModel.new("job", {}, id="t"), TaskModel.new("job", {}, id="u")]
    with pytest.raises(DatabaseError, match=TIMED_OUT) as info:
        await asyncio.wait_for(storage.store_tasks(batch), WAIT)
    assert "while committing" in str(info.value)
    assert IN_DOUBT in str(info.value)
    assert "lost" not in str(info.value)
    assert acquires[0] == 1
    # A lone task is one statement that commits by itself: in doubt the same way.
    with pytest.raises(DatabaseError, match=TIMED_OUT) as info:
        await asyncio.wait_for(storage.store_task(TaskModel.new("job", {}, id="v")), WAIT)
    assert IN_DOUBT in str(info.value)
    assert "lost" not in str(info.value)
    await blocker.execute("DROP TRIGGER slow_commit ON tasks")
    await storage.store_task(TaskModel.new("job", {}, id="after"))
    assert await storage.get_task("after") is not None


async def test_a_transaction_whose_commit_times_out_may_or_may_not_have_been_applied(
    open_storage: Opener, blocker: asyncpg.Connection
) -> None:
    storage = await timed_storage(open_storage)
    await slow_commits(blocker, "tasks")
    tx = await storage.begin_transaction()
    await tx.store_task(TaskModel.new("job", {}, id="t"))
    with pytest.raises(DatabaseError, match=TIMED_OUT) as info:
        await asyncio.wait_for(tx.commit(), WAIT)
    assert "the transaction may or may not have been applied" in str(info.value)
    assert "lost" not in str(info.value)
    assert not tx.is_active
    await blocker.execute("DROP TRIGGER slow_commit ON tasks")
    await storage.store_task(TaskModel.new("job", {}, id="after"))
    assert await storage.get_task("after") is not None
