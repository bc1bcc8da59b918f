"""Opening a PostgreSQL schema only to read it: nothing created, migrated or written."""

from __future__ import annotations

import asyncpg
import pytest

from ruv_swarm_persistence import AgentModel, DatabaseError, init_storage
from ruv_swarm_persistence.errors import NotASwarmDatabaseError
from ruv_swarm_persistence.migrations import MigrationRunner

from ._support import url_with

pytestmark = pytest.mark.postgres


async def _schema_exists(pg_url: str, schema: str) -> bool:
    conn = await asyncpg.connect(pg_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema))
    finally:
        await conn.close()


async def test_a_missing_schema_is_refused_and_not_created(pg_url: str, schema: str) -> None:
    with pytest.raises(NotASwarmDatabaseError, match="holds no swarm database") as caught:
        await init_storage(url_with(pg_url, schema=schema, read_only="true"))
    assert caught.value.empty is True
    assert not await _schema_exists(pg_url, schema)


async def test_a_foreign_schema_is_refused(pg_url: str, schema: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".users (id int)')
    finally:
        await conn.close()
    with pytest.raises(NotASwarmDatabaseError) as caught:
        await init_storage(url_with(pg_url, schema=schema), read_only=True)
    assert caught.value.empty is False


async def test_a_swarm_schema_reads_and_refuses_writes(pg_url: str, schema: str) -> None:
    async with init_storage(url_with(pg_url, schema=schema)) as storage:
        await storage.store_agent(AgentModel.new("a1", "worker", []))
    async with init_storage(url_with(pg_url, schema=schema), read_only=True) as storage:
        assert [a.name for a in await storage.list_agents()] == ["a1"]
        with pytest.raises(DatabaseError, match="read-only"):
            await storage.store_agent(AgentModel.new("a2", "worker", []))
        assert [a.name for a in await storage.list_agents()] == ["a1"]


async def test_open_without_migrating_leaves_migrations_pending(pg_url: str, schema: str) -> None:
    async with init_storage(url_with(pg_url, schema=schema), migrate=False) as storage:
        states = await MigrationRunner(storage).status()
        assert states
        assert not any(m.applied for m in states)
