"""Opening a SQLite file only to read it: nothing created, migrated or written, ever."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import apsw
import pytest

from ruv_swarm_persistence import AgentModel, DatabaseError, EventModel, init_storage
from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.errors import NotASwarmDatabaseError, ValidationError
from ruv_swarm_persistence.migrations import MigrationRunner


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(folder: Path) -> list[str]:
    """The files in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir())


def foreign(path: Path, mode: str = "delete") -> Path:
    """A SQLite file with someone else's table in it."""
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA journal_mode = {mode}")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    return path


async def swarm(path: Path) -> Path:
    """A swarm database with one agent and one event, closed."""
    async with SqliteStorage.open(path) as storage:
        await storage.store_agent(AgentModel.new("a1", "worker", ["x"]))
        await storage.store_event(EventModel.new("started", {"n": 1}))
    return path


@pytest.mark.parametrize("mode", ["delete", "wal"])
async def test_a_foreign_database_is_refused_and_left_unchanged(tmp_path: Path, mode: str) -> None:
    path = foreign(tmp_path / "app.db", mode)
    before, files = digest(path), names(tmp_path)
    with pytest.raises(NotASwarmDatabaseError, match="not a swarm database") as caught:
        await SqliteStorage.open(path, read_only=True)
    assert caught.value.empty is False
    assert "users" in str(caught.value)
    assert digest(path) == before
    assert names(tmp_path) == files


@pytest.mark.parametrize(
    ("content", "message", "empty"),
    [
        (b"", "empty file", True),
        (b"hello, not a database\n", "not a SQLite database", False),
    ],
    ids=["empty", "text"],
)
async def test_a_file_that_is_no_database_is_refused_untouched(
    tmp_path: Path, content: bytes, message: str, empty: bool
) -> None:
    path = tmp_path / "thing.db"
    path.write_bytes(content)
    with pytest.raises(NotASwarmDatabaseError, match=message) as caught:
        await init_storage(str(path), read_only=True)
    assert caught.value.empty is empty
    assert path.read_bytes() == content
    assert names(tmp_path) == ["thing.db"]


async def test_an_empty_sqlite_database_is_refused_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA user_version = 1")  # a valid SQLite file without tables
    conn.close()
    before = digest(path)
    with pytest.raises(NotASwarmDatabaseError, match="empty database") as caught:
        await init_storage(str(path), read_only=True)
    assert caught.value.empty is True
    assert digest(path) == before


async def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no database at"):
        await init_storage(str(tmp_path / "nowhere.db"), read_only=True)
    assert names(tmp_path) == []


async def test_a_swarm_database_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = await swarm(tmp_path / "swarm.db")
    before, files = digest(path), names(tmp_path)
    storage = await init_storage(f"sqlite:///{path}?read_only=true")
    try:
        assert [a.name for a in await storage.list_agents()] == ["a1"]
        assert [e.event_type for e in await storage.read_events(0)] == ["started"]
        with pytest.raises(DatabaseError, match="read-only"):
            await storage.store_agent(AgentModel.new("a2", "worker", []))
        with pytest.raises(DatabaseError, match="read-only"):
            await storage.heartbeat("a1")
        assert [a.name for a in await storage.list_agents()] == ["a1"]
    finally:
        await storage.close()
    assert digest(path) == before
    # Closing the last connection tidies the WAL files as SQLite does: none left behind.
    assert names(tmp_path) == files


async def test_a_read_only_storage_follows_another_writer(tmp_path: Path) -> None:
    path = await swarm(tmp_path / "swarm.db")
    async with SqliteStorage.open(path) as writer, SqliteStorage.open(path, read_only=True) as r:
        subscription = r.subscribe(1)
        nxt = asyncio.ensure_future(anext(subscription))
        await writer.store_event(EventModel.new("later", {}))
        got = await asyncio.wait_for(nxt, 10)
        assert got.event_type == "later"
        await subscription.aclose()  # type: ignore[attr-defined]


async def test_a_commit_between_a_waiters_read_and_its_wait_wakes_it(tmp_path: Path) -> None:
    """Another process commits right after a subscriber's read, before it starts waiting.

    The commit is made from a separate connection in that very gap; the subscriber must
    still see it (before, the watcher took its baseline after the commit and slept on).
    """
    path = await swarm(tmp_path / "swarm.db")
    other = apsw.Connection(str(path))
    async with SqliteStorage.open(path, read_only=True) as storage:
        real = storage.read_events
        calls = 0

        async def read_then_commit(after: int = 0, limit: int = 1000) -> list[EventModel]:
            nonlocal calls
            rows = await real(after, limit)
            calls += 1
            if calls == 1:  # in the gap: after the read, before the wait
                other.execute(
                    "INSERT INTO events (id, event_type, payload, metadata, timestamp) "
                    "VALUES ('gap', 'in-the-gap', '{}', '{}', 0)"
                )
            return rows

        storage.read_events = read_then_commit  # type: ignore[method-assign]
        subscription = storage.subscribe(1)
        got = await asyncio.wait_for(anext(subscription), 10)
        assert got.event_type == "in-the-gap"
        await subscription.aclose()  # type: ignore[attr-defined]
    other.close()


async def test_open_without_migrating_shows_pending_migrations(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with SqliteStorage.open(path, migrate=False) as storage:
        states = await MigrationRunner(storage).status()
        assert states
        assert not any(m.applied for m in states)
        assert await MigrationRunner(storage).current_version() == 0
    async with SqliteStorage.open(path) as storage:  # opening for writes migrates as before
        assert all(m.applied for m in await MigrationRunner(storage).status())


async def test_a_rolled_back_swarm_database_still_opens_read_only(tmp_path: Path) -> None:
    path = await swarm(tmp_path / "swarm.db")
    async with SqliteStorage.open(path, migrate=False) as storage:
        await MigrationRunner(storage).rollback_to(0)
    async with SqliteStorage.open(path, read_only=True) as storage:
        assert await MigrationRunner(storage).current_version() == 0


@pytest.mark.parametrize(
    "options",
    [{"read_only": "maybe"}, {"migrate": 2}, {"read_only": None}],
    ids=repr,
)
async def test_bad_flags_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        await SqliteStorage.open(tmp_path / "x.db", **options)
    assert names(tmp_path) == []
