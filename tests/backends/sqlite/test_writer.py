"""The group-commit writer and the error boundary of the SQLite backend."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
import pytest

from ruv_swarm_persistence import (
    AgentModel,
    ConflictError,
    DatabaseError,
    EventModel,
    MetricModel,
    NotFoundError,
    SerializationError,
    StorageError,
    TaskModel,
    TransactionError,
)
from ruv_swarm_persistence.backends.sqlite import SqliteStorage


def _writer(storage: SqliteStorage) -> Any:
    assert storage._writer is not None
    return storage._writer


async def _settle(results: list[Any]) -> list[str]:
    """Each gathered outcome as the name of its type (value or exception)."""
    return [type(r).__name__ for r in results]


async def test_concurrent_writes_share_one_commit_and_fail_alone(sqlite: SqliteStorage) -> None:
    await sqlite.store_agent(AgentModel.new("exists", "worker", id="dup"))
    await sqlite.store_event(EventModel.new("seen", id="e-dup"))
    before = _writer(sqlite).batches
    results = await asyncio.gather(
        sqlite.store_agent(AgentModel.new("new", "worker", id="a1")),
        sqlite.store_agent(AgentModel.new("again", "worker", id="dup")),
        sqlite.store_event(EventModel.new("t", id="e1")),
        sqlite.store_event(EventModel.new("t", id="e-dup")),
        sqlite.store_event(EventModel.new("t", id="e2")),
        sqlite.update_agent(AgentModel.new("ghost", "worker", id="missing")),
        sqlite.store_metric(MetricModel.new("m", 1.0, "ms", id="m1")),
        sqlite.store_metric(MetricModel.new("m", 2.0, "ms", id="m1")),
        sqlite.store_event(EventModel.new("t", id="e3")),
        return_exceptions=True,
    )
    assert _writer(sqlite).batches == before + 1  # one BEGIN IMMEDIATE … COMMIT for all
    kinds = await _settle(results)
    assert kinds == [
        "NoneType",
        "ConflictError",
        "int",
        "ConflictError",
        "int",
        "NotFoundError",
        "NoneType",
        "ConflictError",
        "int",
    ]
    # Sequences continue in commit order, with no hole where a row was refused.
    assert [results[2], results[4], results[8]] == [2, 3, 4]
    assert [e.id for e in await sqlite.read_events()] == ["e-dup", "e1", "e2", "e3"]
    assert await sqlite.get_agent("a1") is not None
    assert [m.value for m in await sqlite.query(sqlite.metrics.builder())] == [1.0]


async def test_sequences_follow_a_pruned_tail_when_the_first_row_is_refused(
    sqlite: SqliteStorage,
) -> None:
    # The first row of a run carries its sequence; SQLite numbers the rest from it.
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    await sqlite.store_event(EventModel("keep", "t", timestamp=t0 + timedelta(hours=1)))
    await sqlite.store_event(EventModel("gone", "t", timestamp=t0))
    await sqlite.prune(events_before=t0 + timedelta(minutes=1))  # the highest, 2, is gone
    results = await asyncio.gather(
        sqlite.store_event(EventModel.new("t", id="keep")),
        sqlite.store_event(EventModel.new("t", id="x")),
        sqlite.store_event(EventModel.new("t", id="x")),
        sqlite.store_event(EventModel.new("t", id="y")),
        return_exceptions=True,
    )
    assert await _settle(results) == ["ConflictError", "int", "ConflictError", "int"]
    assert [results[1], results[3]] == [3, 4]
    assert await sqlite.store_events([EventModel.new("t", id=i) for i in "pq"]) == [5, 6]
    with pytest.raises(ConflictError):
        await sqlite.store_events([EventModel.new("t", id="r"), EventModel.new("t", id="keep")])
    assert [(e.id, e.sequence) for e in await sqlite.read_events()] == [
        ("keep", 1), ("x", 3), ("y", 4), ("p", 5), ("q", 6),
    ]  # fmt: skip


async def test_a_call_returns_only_once_its_write_is_committed(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    other = raw()  # another connection sees only committed data
    for i in range(20):
        seq = await sqlite.store_event(EventModel.new("t", {"i": i}))
        rows = other.execute("SELECT sequence FROM events WHERE sequence = ?", (seq,)).fetchall()
        assert rows == [(seq,)]


async def test_an_operation_failing_halfway_leaves_nothing_and_spares_its_neighbours(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    await sqlite.store_task(TaskModel.new("w", id="parent"))
    await sqlite.store_task(TaskModel.new("w", id="boom"))
    # Fail the second statement of store_tasks (the dependency edge), after the task row.
    raw().execute(
        "CREATE TRIGGER fail_edge BEFORE INSERT ON task_dependencies"
        " WHEN NEW.depends_on = 'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    results = await asyncio.gather(
        sqlite.store_task(TaskModel.new("w", id="before")),
        sqlite.store_tasks(
            [TaskModel.new("w", id="c1"), TaskModel.new("w", id="c2", dependencies=["boom"])]
        ),
        sqlite.store_task(TaskModel.new("w", id="after", dependencies=["parent"])),
        return_exceptions=True,
    )
    assert results[0] == "before"
    assert isinstance(results[1], DatabaseError)
    assert isinstance(results[1].__cause__, apsw.ConstraintError)
    assert "injected failure" in str(results[1])
    assert results[2] == "after"
    assert await sqlite.get_task("c1") is None
    assert await sqlite.get_task("c2") is None
    assert {t.id for t in await sqlite.get_pending_tasks()} == {"parent", "boom", "before", "after"}
    assert await sqlite.integrity_check() == []


async def test_large_writes_run_off_the_loop(sqlite: SqliteStorage) -> None:
    events = [EventModel.new("bulk", {"i": i}) for i in range(5_000)]
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    seqs = await sqlite.store_events(events)
    done = True
    await tick
    assert seqs == list(range(1, 5_001))
    assert ticks > 1  # the loop kept running while the batch was written


async def test_a_lock_held_by_another_process_is_waited_for_off_the_loop(
    db_path: Path, raw: Callable[..., apsw.Connection]
) -> None:
    storage = await SqliteStorage.open(db_path, busy_timeout=10_000)
    blocker = raw()
    blocker.execute("BEGIN IMMEDIATE")
    released = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not released.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    tick = asyncio.create_task(ticker())
    write = asyncio.create_task(storage.store_event(EventModel.new("waits")))
    await asyncio.sleep(0.1)
    assert not write.done()
    seen = ticks
    blocker.execute("COMMIT")
    released.set()
    assert await asyncio.wait_for(write, 10) == 1
    await tick
    assert seen > 10  # the loop was free while the write waited for the lock
    await storage.close()


async def test_a_lock_held_past_the_busy_timeout_is_a_database_error(
    db_path: Path, raw: Callable[..., apsw.Connection]
) -> None:
    storage = await SqliteStorage.open(db_path, busy_timeout=50)
    blocker = raw()
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseError, match="busy timeout") as info:
            await storage.store_agent(AgentModel.new("late", "worker"))
        assert isinstance(info.value.__cause__, apsw.BusyError)
        with pytest.raises(DatabaseError):
            await storage.begin_transaction()
    finally:
        blocker.execute("ROLLBACK")
    await storage.store_agent(AgentModel.new("now", "worker"))  # usable again
    await storage.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("capabilities", "{not json"),
        ("status", "sleeping"),
        ("heartbeat", "yesterday"),
    ],
)
async def test_an_undecodable_row_is_a_serialization_error_naming_table_and_id(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection], column: str, value: Any
) -> None:
    agent = AgentModel.new("corrupt", "worker", id="bad-agent")
    await sqlite.store_agent(agent)
    raw().execute(f"UPDATE agents SET {column} = ? WHERE id = ?", (value, agent.id))
    with pytest.raises(SerializationError) as info:
        await sqlite.get_agent(agent.id)
    assert info.value.table == "agents"
    assert info.value.id == "bad-agent"
    with pytest.raises(SerializationError):
        await sqlite.list_agents()


async def test_an_undecodable_task_returned_by_a_write(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    await sqlite.store_task(TaskModel.new("w", id="t-bad"))
    raw().execute("UPDATE tasks SET payload = '{' WHERE id = 't-bad'")
    with pytest.raises(SerializationError, match="t-bad"):
        await sqlite.claim_next_task("worker")


async def test_conflicts_name_the_row(sqlite: SqliteStorage) -> None:
    await sqlite.store_events([EventModel.new("t", id="x1")])
    with pytest.raises(ConflictError) as info:
        await sqlite.store_events([EventModel.new("t", id="x2"), EventModel.new("t", id="x1")])
    assert (info.value.kind, info.value.id) == ("event", "x1")
    assert [e.id for e in await sqlite.read_events()] == ["x1"]


async def test_a_closed_storage_refuses_calls_and_queued_writes_were_committed(
    db_path: Path,
) -> None:
    storage = await SqliteStorage.open(db_path)
    pending = [
        asyncio.ensure_future(storage.store_event(EventModel.new("t", id=f"q{i}")))
        for i in range(10)
    ]
    await asyncio.sleep(0)
    await storage.close()
    assert [await p for p in pending] == list(range(1, 11))
    with pytest.raises(StorageError):
        await storage.store_event(EventModel.new("t"))
    async with SqliteStorage.open(db_path) as reopened:
        assert len(await reopened.read_events()) == 10


async def test_not_found_is_not_a_driver_error(sqlite: SqliteStorage) -> None:
    with pytest.raises(NotFoundError):
        await sqlite.heartbeat("nobody")
    with pytest.raises(NotFoundError):
        await sqlite.mark_message_read("nothing")


async def test_a_transaction_the_database_abandoned_ends_instead_of_autocommitting(
    sqlite: SqliteStorage,
) -> None:
    tx = await sqlite.begin_transaction()
    await tx.store_agent(AgentModel.new("first", "worker", id="first"))

    def abandon(ctx: Any) -> None:
        # What SQLite does on some I/O errors: roll the whole transaction back.
        ctx.conn.execute("ROLLBACK")

    with pytest.raises(TransactionError, match="rolled the transaction back"):
        await sqlite._sqlite._write(tx, abandon)
    assert not tx.is_active
    with pytest.raises(TransactionError):
        await tx.store_agent(AgentModel.new("second", "worker", id="second"))
    await sqlite.store_agent(AgentModel.new("after", "worker", id="after"))
    assert [a.id for a in await sqlite.list_agents()] == ["after"]
