"""Maintenance of a SQLite storage: checkpoints, incremental vacuum, backup, integrity."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import apsw
import pytest

from ruv_swarm_persistence import AgentModel, EventModel, MetricModel, TaskModel, ValidationError
from ruv_swarm_persistence._time import utc_now
from ruv_swarm_persistence.backends.sqlite import SqliteStorage

WAIT = 10.0


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _size(path: Path) -> int:
    """The file's size in bytes, 0 when it does not exist."""
    return path.stat().st_size if os.path.exists(path) else 0


async def _fill(storage: SqliteStorage, n: int, size: int = 2_000) -> None:
    for start in range(0, n, 500):
        await storage.store_events(
            [
                EventModel.new("bulk", {"blob": "x" * size, "i": i})
                for i in range(start, start + 500)
            ]
        )


async def test_checkpoint_truncates_the_log(sqlite: SqliteStorage, db_path: Path) -> None:
    await _fill(sqlite, 1_000)
    assert _size(_wal(db_path)) > 0
    await sqlite.checkpoint()
    assert _size(_wal(db_path)) == 0
    assert len(await sqlite.read_events(0, 5_000)) == 1_000


async def test_the_log_is_copied_into_the_file_once_the_writer_is_idle(
    sqlite: SqliteStorage, db_path: Path
) -> None:
    before = _size(db_path)
    await _fill(sqlite, 1_000)
    page_size = 4096
    expected = (await sqlite.get_storage_size()) // page_size * page_size

    async def copied() -> None:
        # The background checkpoint runs by itself; poll the file, bounded by WAIT.
        while _size(db_path) < expected:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    await asyncio.wait_for(copied(), WAIT)
    assert _size(db_path) > before


async def test_prune_gives_the_space_back(sqlite: SqliteStorage, db_path: Path) -> None:
    await _fill(sqlite, 2_000)
    await sqlite.checkpoint()
    full = await sqlite.get_storage_size()
    result = await sqlite.prune(events_before=utc_now() + timedelta(seconds=1))
    assert result.events == 2_000
    await sqlite.checkpoint()
    small = await sqlite.get_storage_size()
    assert small < full / 4
    # Freed pages went back to the file system (incremental vacuum), not to a free list.
    assert _size(db_path) == small
    writer = sqlite._writer
    assert writer is not None
    assert writer.conn.execute("PRAGMA freelist_count").fetchall() == [(0,)]


async def test_sequences_never_repeat_after_pruning_everything(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        seqs = await storage.store_events([EventModel.new("old") for _ in range(5)])
        await storage.prune(events_before=utc_now() + timedelta(seconds=1))
        assert await storage.read_events() == []
        assert await storage.store_event(EventModel.new("new")) == seqs[-1] + 1
        await storage.prune(events_before=utc_now() + timedelta(seconds=1))
    async with SqliteStorage.open(db_path) as storage:
        assert await storage.store_event(EventModel.new("newer")) == seqs[-1] + 2


async def test_vacuum_keeps_the_data(sqlite: SqliteStorage) -> None:
    await _fill(sqlite, 500)
    await sqlite.vacuum()
    assert len(await sqlite.read_events(0, 1_000)) == 500
    assert await sqlite.integrity_check() == []


async def test_integrity_check_reports_a_drifted_dependency_count(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    parent = TaskModel.new("w", id="parent")
    await sqlite.store_tasks([parent, TaskModel.new("w", id="child", dependencies=["parent"])])
    assert await sqlite.integrity_check() == []
    raw().execute("UPDATE tasks SET unfinished_deps = 0 WHERE id = 'child'")
    problems = await sqlite.integrity_check()
    assert len(problems) == 1
    assert "child" in problems[0]


async def test_integrity_check_reports_a_dangling_reference(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    await sqlite.store_task(TaskModel.new("w", id="lonely"))
    conn = raw()
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO task_dependencies (task_id, depends_on) VALUES ('lonely', 'gone')")
    problems = await sqlite.integrity_check()
    assert any("task_dependencies" in p for p in problems)


async def test_backup_while_writes_go_on(sqlite: SqliteStorage, tmp_path: Path) -> None:
    await sqlite.store_agent(AgentModel.new("agent", "worker", id="a"))
    await sqlite.store_metric(MetricModel.new("m", 1.0, "ms", id="m"))
    stop = False

    async def keep_writing() -> int:
        n = 0
        while not stop:
            await sqlite.store_event(EventModel.new("live", {"n": n}))
            n += 1
        return n

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.05)
    dest = tmp_path / "copy.db"
    await sqlite.backup(dest)
    stop = True
    written = await writer
    async with SqliteStorage.open(dest) as copy:
        events = await copy.read_events(0, 1_000_000)
        seqs = [e.sequence for e in events]
        # A consistent snapshot: a gapless prefix of what was written.
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) <= written
        assert await copy.get_agent("a") is not None
        assert await copy.integrity_check() == []


async def test_backup_onto_itself_is_refused(sqlite: SqliteStorage) -> None:
    with pytest.raises(ValidationError):
        await sqlite.backup(sqlite.path)


async def test_storage_size_counts_the_database_pages(
    sqlite: SqliteStorage, raw: Callable[..., apsw.Connection]
) -> None:
    await _fill(sqlite, 200)
    conn = raw()
    pages = int(conn.execute("PRAGMA page_count").fetchall()[0][0])  # type: ignore[arg-type]
    page_size = int(conn.execute("PRAGMA page_size").fetchall()[0][0])  # type: ignore[arg-type]
    assert await sqlite.get_storage_size() == pages * page_size


async def test_maintenance_inside_a_transaction(sqlite: SqliteStorage) -> None:
    await sqlite.store_events([EventModel.new("old") for _ in range(3)])
    async with sqlite.transaction() as tx:
        await tx.store_event(EventModel.new("kept"))
        pruned = await tx.prune(events_before=utc_now() + timedelta(seconds=1))
        assert pruned.events == 4
        await tx.vacuum()  # cannot run in a transaction: nothing to do
        await tx.checkpoint()
        assert await tx.get_storage_size() > 0
    assert await sqlite.read_events() == []


async def test_closing_removes_the_log(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        await _fill(storage, 100)
    assert _size(_wal(db_path)) == 0
