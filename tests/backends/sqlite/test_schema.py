"""The SQLite schema: built by migrations, equal to the schema kept as data, set up right."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import apsw
import pytest

from ruv_swarm_persistence import (
    AgentModel,
    EventModel,
    MetricModel,
    MigrationError,
)
from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.migrations import Migration, MigrationRunner, bundled_migrations

#: The library's own migrations, and a version past them for the user's.
CORE = [m.version for m in bundled_migrations("sqlite")]
USER_VERSION = 100

SCHEMA_TABLES = (
    "agents",
    "tasks",
    "task_dependencies",
    "events",
    "messages",
    "metrics",
    "swarm_meta",
    "queue_limits",
    "queue_claims",
)


def _schema(conn: apsw.Connection) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema"
        " WHERE name NOT IN ('schema_migrations', 'sqlite_sequence') ORDER BY type, name"
    ).fetchall()
    # Statements keep their text as written: compare them with white space folded.
    return [(t, n, tbl, re.sub(r"\s+", " ", str(sql or "")).strip()) for t, n, tbl, sql in rows]


async def test_migrations_build_the_schema_kept_as_data(tmp_path: Path) -> None:
    text = resources.files("ruv_swarm_persistence.migrations").joinpath("sqlite", "schema.sql")
    from_file = apsw.Connection(str(tmp_path / "from_schema.db"))
    from_file.execute(text.read_text(encoding="utf-8"))
    async with SqliteStorage.open(tmp_path / "migrated.db"):
        pass
    migrated = apsw.Connection(str(tmp_path / "migrated.db"))
    try:
        assert _schema(migrated) == _schema(from_file)
        assert {name for _, name, _, _ in _schema(migrated)} >= set(SCHEMA_TABLES)
    finally:
        from_file.close()
        migrated.close()


async def test_every_migration_rolls_back_to_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "down.db"
    async with SqliteStorage.open(path) as storage:
        runner = MigrationRunner(storage)
        undone = await runner.rollback_to(0)
        assert undone == sorted((m.version for m in bundled_migrations("sqlite")), reverse=True)
        assert await runner.current_version() == 0
        conn = apsw.Connection(str(path))
        try:
            assert _schema(conn) == []
        finally:
            conn.close()
        assert await runner.migrate() == [m.version for m in bundled_migrations("sqlite")]
        await storage.store_agent(AgentModel.new("back", "worker"))


async def test_fresh_file_settings(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    conn = raw()
    assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    # INCREMENTAL (2): set before the first table, so pruned space can be given back.
    assert conn.execute("PRAGMA auto_vacuum").fetchall() == [(2,)]
    writer = sqlite._writer
    assert writer is not None
    w = writer.conn
    assert w.execute("PRAGMA foreign_keys").fetchall() == [(1,)]
    assert w.execute("PRAGMA synchronous").fetchall() == [(1,)]  # NORMAL
    assert w.execute("PRAGMA wal_autocheckpoint").fetchall() == [(0,)]
    assert w.execute("PRAGMA journal_size_limit").fetchall() == [(64 * 1024 * 1024,)]
    pool = sqlite._pool
    assert pool is not None
    reader = pool.try_acquire()
    assert reader is not None
    try:
        assert reader.execute("PRAGMA foreign_keys").fetchall() == [(1,)]
        assert reader.execute("PRAGMA query_only").fetchall() == [(1,)]
        # The query builder's LIKE is case-sensitive.
        assert reader.execute("SELECT 'abc' LIKE 'ABC'").fetchall() == [(0,)]
    finally:
        pool.release(reader)


async def test_synchronous_full_is_applied(db_path: Path) -> None:
    async with SqliteStorage.open(db_path, synchronous="full") as storage:
        assert storage._writer is not None
        assert storage._writer.conn.execute("PRAGMA synchronous").fetchall() == [(2,)]


async def test_migrations_are_recorded_once(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    rows = raw().execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    assert rows == [(m.version, f"core:{m.name}", m.checksum) for m in bundled_migrations("sqlite")]
    await sqlite.close()
    async with SqliteStorage.open(sqlite.path):
        pass
    again = raw().execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    assert again == rows


async def test_the_crates_user_migration_works_and_the_storage_keeps_working(
    sqlite: SqliteStorage,
) -> None:
    await sqlite.store_agent(AgentModel.new("before", "worker", ["x"]))
    migration = Migration.new(
        USER_VERSION, "add_agent_tags", "ALTER TABLE agents ADD COLUMN tags TEXT DEFAULT '{}';"
    )
    runner = MigrationRunner(sqlite)
    assert await runner.run_migration(migration) is True
    assert await runner.run_migration(migration) is False  # the same one again: nothing to do
    after = AgentModel.new("after", "worker", ["y"])
    await sqlite.store_agent(after)
    assert await sqlite.get_agent(after.id) == after
    assert [a.name for a in await sqlite.list_agents()] == ["before", "after"]
    assert [s.version for s in await runner.status() if s.applied] == [*CORE, USER_VERSION]
    await sqlite.close()
    # Reopening keeps the user's migration and refuses nothing.
    async with SqliteStorage.open(sqlite.path) as reopened:
        assert await reopened.get_agent(after.id) == after


async def test_a_user_migration_with_down_sql_rolls_back(sqlite: SqliteStorage) -> None:
    migration = Migration.new(
        USER_VERSION,
        "add_agent_tags",
        "ALTER TABLE agents ADD COLUMN tags TEXT DEFAULT '{}';",
        "ALTER TABLE agents DROP COLUMN tags;",
    )
    runner = MigrationRunner(sqlite, [migration])
    assert await runner.migrate() == [USER_VERSION]
    assert await runner.rollback_to(CORE[-1]) == [USER_VERSION]
    assert await runner.current_version() == CORE[-1]
    agent = AgentModel.new("plain", "worker")
    await sqlite.store_agent(agent)
    assert await sqlite.get_agent(agent.id) == agent


async def test_a_failing_migration_changes_nothing(sqlite: SqliteStorage) -> None:
    bad = Migration.new(
        USER_VERSION,
        "half_done",
        "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);",
    )
    with pytest.raises(MigrationError, match="no_such_table") as info:
        await MigrationRunner(sqlite).run_migration(bad)
    assert isinstance(info.value.__cause__, apsw.Error)
    assert await MigrationRunner(sqlite).current_version() == CORE[-1]
    writer = sqlite._writer
    assert writer is not None
    tables = writer.conn.execute("SELECT name FROM sqlite_schema WHERE name = 'half'").fetchall()
    assert tables == []


async def test_an_edited_migration_is_refused(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    await sqlite.close()
    raw().execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="edited"):
        await SqliteStorage.open(sqlite.path)


async def test_a_newer_schema_is_refused(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    await sqlite.close()
    raw().execute("INSERT INTO schema_migrations VALUES (99, 'core:from_the_future', 'x', 0)")
    with pytest.raises(MigrationError, match="newer"):
        await SqliteStorage.open(sqlite.path)


OPEN_AND_REPORT = """
import asyncio, sys
from ruv_swarm_persistence.backends.sqlite import SqliteStorage

async def main() -> None:
    storage = await SqliteStorage.open(sys.argv[1])
    await storage.close()
    print("opened")

asyncio.run(main())
"""


async def test_processes_opening_a_fresh_file_at_once_migrate_it_once(db_path: Path) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OPEN_AND_REPORT,
            str(db_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [await p.communicate() for p in procs]
    for (out, err), p in zip(outputs, procs, strict=True):
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == "opened"
    conn = apsw.Connection(str(db_path))
    try:
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [(m.version,) for m in bundled_migrations("sqlite")]
        assert conn.execute("PRAGMA auto_vacuum").fetchall() == [(2,)]
    finally:
        conn.close()


async def test_rows_are_counted_right_when_a_user_trigger_writes_too(
    sqlite: SqliteStorage,
) -> None:
    # Appends count the rows that went in by rowid, which a trigger's own writes leave alone.
    audit = Migration.new(
        USER_VERSION,
        "audit_appends",
        "CREATE TABLE audit (what TEXT NOT NULL);"
        "CREATE TRIGGER events_audit AFTER INSERT ON events"
        " BEGIN INSERT INTO audit VALUES (NEW.id); INSERT INTO audit VALUES (NEW.id); END;"
        "CREATE TRIGGER metrics_audit AFTER INSERT ON metrics"
        " BEGIN INSERT INTO audit VALUES (NEW.id); END;",
    )
    assert await MigrationRunner(sqlite).run_migration(audit) is True
    await sqlite.store_event(EventModel.new("t", id="taken"))
    await sqlite.store_metric(MetricModel.new("m", 1.0, "ms", id="m-taken"))
    results = await asyncio.gather(
        sqlite.store_event(EventModel.new("t", id="a")),
        sqlite.store_event(EventModel.new("t", id="b")),
        sqlite.store_event(EventModel.new("t", id="taken")),
        sqlite.store_event(EventModel.new("t", id="c")),
        sqlite.store_metric(MetricModel.new("m", 2.0, "ms", id="m1")),
        sqlite.store_metric(MetricModel.new("m", 3.0, "ms", id="m-taken")),
        sqlite.store_metric(MetricModel.new("m", 4.0, "ms", id="m2")),
        return_exceptions=True,
    )
    outcomes = [r if isinstance(r, int | None) else (type(r).__name__, r.id) for r in results]
    assert outcomes == [
        2,
        3,
        ("ConflictError", "taken"),
        4,
        None,
        ("ConflictError", "m-taken"),
        None,
    ]
    assert await sqlite.store_events([EventModel.new("t", id=i) for i in "de"]) == [5, 6]
    assert [e.id for e in await sqlite.read_events()] == ["taken", "a", "b", "c", "d", "e"]
    assert sorted(m.id for m in await sqlite.query(sqlite.metrics.builder())) == [
        "m-taken", "m1", "m2",
    ]  # fmt: skip


async def test_a_database_of_the_schedules_schema_is_migrated_and_keeps_its_tasks(
    db_path: Path,
) -> None:
    from ruv_swarm_persistence import TaskModel, TaskPriority

    schedules = next(m.version for m in bundled_migrations("sqlite") if m.name == "schedules")
    async with SqliteStorage.open(db_path) as storage:
        await MigrationRunner(storage).rollback_to(schedules)
        high = TaskPriority.High
        await storage.store_tasks(
            [
                TaskModel.new("job", {}, id="root", max_retries=0),
                TaskModel.new("job", {}, id="blocked", dependencies=["root"]),
                TaskModel.new("job", {}, high, id="urgent-blocked", dependencies=["root"]),
                TaskModel.new("job", {}, id="ready"),
                TaskModel.new("other", {}, high, id="urgent"),
                TaskModel.new("job", {}, id="done"),
                TaskModel.new("job", {}, id="broke", max_retries=0),
            ]
        )
        for task_id in ("done", "broke"):
            assert await storage.claim_task(task_id, "w")
        await storage.complete_task("done", "w", {"ok": True})
        await storage.fail_task("broke", "w", "no")
    async with SqliteStorage.open(db_path) as storage:
        assert await MigrationRunner(storage).current_version() == CORE[-1]
        assert [t.id for t in await storage.get_pending_tasks()] == [
            "urgent-blocked", "urgent", "root", "blocked", "ready",
        ]  # fmt: skip
        assert [t.id for t in await storage.get_failed_tasks()] == ["broke"]
        assert [t.id for t in await storage.get_failed_tasks("job")] == ["broke"]
        assert await storage.apply_retention("tasks:0")
        assert await storage.get_task("done") is None
        claimed = await storage.claim_next_task("w")
        assert claimed is not None
        assert claimed.id == "urgent"
        assert await storage.claim_next_task("w", ["job"]) is not None  # root
        await storage.complete_task("root", "w")
        assert [t.id for t in await storage.get_pending_tasks()] == [
            "urgent-blocked", "blocked", "ready",
        ]  # fmt: skip
    conn = apsw.Connection(str(db_path))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
