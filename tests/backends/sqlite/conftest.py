"""Fixtures of the SQLite backend's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from ruv_swarm_persistence.backends.sqlite import SqliteStorage


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh database file."""
    return tmp_path / "swarm.db"


@pytest.fixture
async def sqlite(db_path: Path) -> AsyncIterator[SqliteStorage]:
    """A fresh open storage on ``db_path``."""
    storage = await SqliteStorage.open(db_path)
    yield storage
    await storage.close()


@pytest.fixture
def raw(db_path: Path) -> Iterator[Callable[..., apsw.Connection]]:
    """Opens plain apsw connections to ``db_path`` (closed after the test)."""
    opened: list[apsw.Connection] = []

    def connect(**kwargs: Any) -> apsw.Connection:
        conn = apsw.Connection(str(db_path), **kwargs)
        conn.set_busy_timeout(5_000)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()
