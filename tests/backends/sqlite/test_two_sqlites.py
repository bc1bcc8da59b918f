"""The standard sqlite3 module and this library's SQLite in one process.

Closing a sqlite3 connection to the storage's file releases the process's POSIX locks on it,
the storage's included (SQLite shares them between connections of one library only). The
storage cannot prevent that; it says what happened instead of a bare "disk I/O error".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ruv_swarm_persistence import DatabaseError, EventModel
from ruv_swarm_persistence.backends.sqlite import SqliteStorage


async def _write_and_read(storage: SqliteStorage, times: int) -> None:
    for _ in range(times):
        await storage.store_event(EventModel.new("after"))
        await storage.read_events()


async def test_locks_lost_to_the_sqlite3_module_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "swarm.db"
    async with SqliteStorage.open(path) as storage:
        await storage.store_event(EventModel.new("before"))
        other = sqlite3.connect(path)
        assert other.execute("SELECT count(*) FROM events").fetchone() == (1,)
        other.close()
        with pytest.raises(DatabaseError, match="another SQLite library") as info:
            await _write_and_read(storage, 50)
        assert "disk I/O error" in str(info.value)
