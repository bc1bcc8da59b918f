"""Opening a SQLite storage: paths, URLs, options, the crate's pool builder and the pool."""

from __future__ import annotations

import asyncio
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import (
    AgentModel,
    EventModel,
    PoolError,
    RetryPolicy,
    StorageError,
    ValidationError,
    init_storage,
)
from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.testing import FakeClock


async def _round_trip(storage: Any) -> None:
    agent = AgentModel.new("probe", "worker")
    await storage.store_agent(agent)
    assert await storage.get_agent(agent.id) == agent


async def test_init_storage_with_a_path(tmp_path: Path) -> None:
    storage = await init_storage(str(tmp_path / "plain.db"))
    try:
        assert isinstance(storage, SqliteStorage)
        await _round_trip(storage)
    finally:
        await storage.close()
    assert (tmp_path / "plain.db").exists()


async def test_init_storage_with_relative_and_absolute_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rel = await init_storage("sqlite:///rel.db")
    await _round_trip(rel)
    await rel.close()
    assert (tmp_path / "rel.db").exists()
    absolute = tmp_path / "sub" / "abs.db"
    absolute.parent.mkdir()
    abs_storage = await init_storage(f"sqlite:///{absolute}")
    await _round_trip(abs_storage)
    await abs_storage.close()
    assert absolute.exists()


async def test_default_url_is_swarm_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWARM_DB_URL", raising=False)
    storage = await init_storage()
    await storage.close()
    assert isinstance(storage, SqliteStorage)
    assert (tmp_path / "swarm.db").exists()


async def test_url_options_are_parsed(tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path / 'opts.db'}?readers=2&min_idle_readers=0&synchronous=FULL"
        "&busy_timeout=250&max_batch=8&lease=12.5&transaction_timeout=3"
        "&connection_timeout=1.5&idle_timeout=60"
    )
    storage = await init_storage(url)
    assert isinstance(storage, SqliteStorage)
    try:
        assert storage._pool is not None
        assert storage._pool.max_size == 2
        assert storage._pool.min_idle == 0
        assert storage._pool.connection_timeout_s == 1.5
        assert storage._pool.idle_timeout_s == 60
        assert storage._opts.synchronous == "FULL"
        assert storage._opts.busy_timeout_ms == 250
        assert storage._opts.max_batch == 8
        assert storage._lease_us == 12_500_000
        assert storage._opts.transaction_timeout_us == 3_000_000
        await _round_trip(storage)
    finally:
        await storage.close()


async def test_keyword_options_reach_the_storage(tmp_path: Path) -> None:
    clock = FakeClock()
    policy = RetryPolicy(base_us=5)
    storage = await init_storage(
        str(tmp_path / "kw.db"), clock=clock, retry_policy=policy, lease=timedelta(minutes=2)
    )
    assert isinstance(storage, SqliteStorage)
    try:
        assert storage._sqlite.ops.policy is policy
        assert storage._lease_us == 120_000_000
        agent = AgentModel.new("clocked", "worker")
        await storage.store_agent(agent)
        await storage.heartbeat(agent.id)
        stored = await storage.get_agent(agent.id)
        assert stored is not None
        assert stored.heartbeat == clock()
    finally:
        await storage.close()


@pytest.mark.parametrize(
    "query",
    [
        "bogus=1",
        "readers=0",
        "readers=many",
        "synchronous=off",
        "busy_timeout=-1",
        "max_batch=0",
        "lease=soon",
        "lease=-1",
        "transaction_timeout=0",
        "connection_timeout=x",
    ],
)
async def test_bad_url_options_are_refused(tmp_path: Path, query: str) -> None:
    with pytest.raises(ValidationError):
        await init_storage(f"sqlite:///{tmp_path / 'bad.db'}?{query}")


@pytest.mark.parametrize(
    "options",
    [
        {"unknown_option": 1},
        {"readers": True},
        {"clock": "now"},
        {"retry_policy": 3},
        {"limits": {}},
        {"synchronous": 2},
    ],
)
async def test_bad_keyword_options_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        await SqliteStorage.open(tmp_path / "bad.db", **options)


@pytest.mark.parametrize("path", [":memory:", "", "file:x.db?mode=memory"])
async def test_a_file_path_is_needed(path: str) -> None:
    with pytest.raises(ValidationError):
        await SqliteStorage.open(path)


async def test_open_works_with_async_with_and_await(tmp_path: Path) -> None:
    path = tmp_path / "cm.db"
    async with SqliteStorage.open(path) as storage:
        await _round_trip(storage)
    with pytest.raises(StorageError):
        await storage.list_agents()
    async with await SqliteStorage.open(path) as again:
        assert len(await again.list_agents()) == 1


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "keep.db"
    agent = AgentModel.new("kept", "worker", ["a"])
    async with SqliteStorage.open(path) as storage:
        await storage.store_agent(agent)
    async with SqliteStorage.open(path) as storage:
        assert await storage.get_agent(agent.id) == agent


async def test_an_unreadable_file_is_a_database_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError) as info:
        await SqliteStorage.open(path)
    assert info.value.__cause__ is not None


# --- the crate's pool builder --------------------------------------------------------------


async def test_builder_maps_onto_the_reader_pool(tmp_path: Path) -> None:
    storage = await (
        SqliteStorage.builder()
        .max_connections(32)
        .min_idle_connections(4)
        .connection_timeout(timedelta(seconds=60))
        .idle_timeout(timedelta(minutes=10))
        .build(tmp_path / "built.db")
    )
    try:
        pool = storage._pool
        assert pool is not None
        assert pool.max_size == 32
        assert pool.min_idle == 4
        assert pool.idle == 4  # opened at once
        assert pool.connection_timeout_s == 60
        assert pool.idle_timeout_s == 600
        await _round_trip(storage)
    finally:
        await storage.close()


async def test_builder_passes_other_options(tmp_path: Path) -> None:
    storage = await SqliteStorage.builder().option("busy_timeout", 123).build(tmp_path / "o.db")
    try:
        assert storage._opts.busy_timeout_ms == 123
    finally:
        await storage.close()


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("max_connections", 0),
        ("max_connections", 2.5),
        ("min_idle_connections", -1),
        ("connection_timeout", timedelta(0)),
        ("idle_timeout", "long"),
    ],
)
def test_builder_refuses_bad_settings(method: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        getattr(SqliteStorage.builder(), method)(value)


async def test_a_read_waiting_past_the_connection_timeout_gets_a_pool_error(
    tmp_path: Path,
) -> None:
    storage = await (
        SqliteStorage.builder()
        .max_connections(1)
        .min_idle_connections(1)
        .connection_timeout(timedelta(milliseconds=50))
        .build(tmp_path / "pool.db")
    )
    pool = storage._pool
    assert pool is not None
    held = await pool.acquire()  # a long read holds the only connection
    try:
        with pytest.raises(PoolError):
            await storage.list_agents()
        with pytest.raises(PoolError):
            await storage.get_agent("anyone")
    finally:
        pool.release(held)
    assert await storage.list_agents() == []
    await storage.close()


async def test_a_waiting_read_gets_the_connection_given_back(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(tmp_path / "wait.db", readers=1, connection_timeout=30)
    pool = storage._pool
    assert pool is not None
    held = await pool.acquire()
    reader = asyncio.create_task(storage.list_agents())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not reader.done()
    pool.release(held)
    assert await asyncio.wait_for(reader, 10) == []
    await storage.close()


async def test_idle_connections_above_the_minimum_are_closed(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(
        tmp_path / "idle.db", readers=3, min_idle_readers=1, idle_timeout=0.01
    )
    pool = storage._pool
    assert pool is not None
    conns = [await pool.acquire() for _ in range(3)]
    assert pool.size == 3
    pool.release(conns[0])
    pool.release(conns[1])
    await asyncio.sleep(0.05)  # both are now idle longer than the idle timeout
    pool.release(conns[2])
    assert pool.size == 1
    assert pool.idle == 1
    await storage.close()


async def test_a_new_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    async with SqliteStorage.open(path) as storage:
        await storage.store_event(EventModel.new("written"))
        made = [path, tmp_path / "private.db-wal", tmp_path / "private.db-shm"]
        assert all(p.exists() for p in made)
        for p in made:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name
        await storage.backup(tmp_path / "copy.db")
    assert stat.S_IMODE((tmp_path / "copy.db").stat().st_mode) == 0o600


async def test_an_existing_database_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SqliteStorage.open(path):
        pass
    path.chmod(0o640)
    async with SqliteStorage.open(path) as storage:
        await storage.store_event(EventModel.new("written"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
