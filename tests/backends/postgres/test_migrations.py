"""Schema migrations on PostgreSQL: once under an advisory lock, in a transaction each."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import pytest

from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.errors import MigrationError
from ruv_swarm_persistence.migrations import Migration, MigrationRunner, bundled_migrations
from ruv_swarm_persistence.testing._support import agent

from ._support import Opener, url_with

#: The library's own migrations, and a version past them for the user's.
CORE = [m.version for m in bundled_migrations("postgres")]
USER_VERSION = 100


async def _rows(pg_url: str, schema: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": f'"{schema}"'})
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_many_openers_at_once_migrate_once(pg_url: str, schema: str) -> None:
    # Four processes and eight storages of this one start on the same empty schema together.
    code = (
        "import asyncio, sys\n"
        "from ruv_swarm_persistence import init_storage\n"
        "async def main():\n"
        "    s = await init_storage(sys.argv[1])\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    url = url_with(pg_url, schema=schema)
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", code, url) for _ in range(4)
    ]
    opened = await asyncio.gather(*(PostgresStorage.open(pg_url, schema=schema) for _ in range(8)))
    try:
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 120)
        assert codes == [0, 0, 0, 0]
        rows = await _rows(pg_url, schema, "SELECT version, name FROM schema_migrations")
        assert sorted((r[0], r[1]) for r in rows) == [
            (m.version, f"core:{m.name}") for m in bundled_migrations("postgres")
        ]
        await opened[0].store_agent(agent("a"))
        assert all([await s.get_agent("a") is not None for s in opened])
    finally:
        for s in opened:
            await s.close()


async def test_status_rollback_and_migrate_again(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    storage = await open_storage()
    runner = MigrationRunner(storage)
    status = await runner.status()
    assert [(s.version, s.name, s.applied, s.checksum_ok) for s in status] == [
        (m.version, f"core:{m.name}", True, True) for m in bundled_migrations("postgres")
    ]
    assert await runner.rollback_to(0) == CORE[::-1]
    tables = await _rows(
        pg_url, schema, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )
    assert [r[0] for r in tables] == ["schema_migrations"]
    assert await runner.migrate() == CORE
    await storage.store_agent(agent("back"))
    assert await storage.get_agent("back") is not None


async def test_a_failing_migration_changes_nothing(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    storage = await open_storage()
    runner = MigrationRunner(storage)
    bad = Migration.new(USER_VERSION, "half_done", "CREATE TABLE half (a int); SELECT 1 / 0;")
    with pytest.raises(MigrationError, match="half_done"):
        await runner.run_migration(bad)
    assert await runner.current_version() == CORE[-1]
    assert await _rows(pg_url, schema, "SELECT to_regclass('half')") == [(None,)]


async def test_the_crate_example_migration(open_storage: Opener) -> None:
    storage = await open_storage()
    runner = MigrationRunner(storage)
    migration = Migration.new(
        USER_VERSION, "add_agent_tags", "ALTER TABLE agents ADD COLUMN tags TEXT DEFAULT '{}';"
    )
    assert await runner.run_migration(migration) is True
    assert await runner.run_migration(migration) is False
    await storage.store_agent(agent("tagged"))
    assert await storage.get_agent("tagged") == agent("tagged")


async def test_an_edited_migration_is_refused_at_open(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    await open_storage()
    await _rows(pg_url, schema, "UPDATE schema_migrations SET checksum = 'edited'")
    with pytest.raises(MigrationError, match="edited"):
        await PostgresStorage.open(pg_url, schema=schema)


async def test_a_newer_schema_is_refused_at_open(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    await open_storage()
    await _rows(
        pg_url,
        schema,
        "INSERT INTO schema_migrations VALUES (99, 'core:from_the_future', 'x', 0)",
    )
    with pytest.raises(MigrationError, match="newer"):
        await PostgresStorage.open(pg_url, schema=schema)


async def test_migrate_false_leaves_an_empty_schema_alone(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    storage = await open_storage(migrate=False)
    assert await MigrationRunner(storage).current_version() == 0
    assert await MigrationRunner(storage).migrate() == CORE
