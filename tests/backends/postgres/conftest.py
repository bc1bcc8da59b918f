"""Fixtures of the PostgreSQL backend's own tests: a fresh schema, storages opened in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ruv_swarm_persistence.backends.postgres import PostgresStorage
from tests import pgserver

from ._support import Opener


@pytest.fixture
async def schema(pg_url: str) -> AsyncIterator[str]:
    """A schema name no one uses yet; dropped after the test."""
    name = pgserver.new_schema_name("pgb")
    yield name
    await pgserver.drop_schema(pg_url, name)


@pytest.fixture
async def open_storage(pg_url: str, schema: str) -> AsyncIterator[Opener]:
    """Open storages on the test's schema (each with its own pool); closed after the test."""
    made: list[PostgresStorage] = []

    async def make(**options: Any) -> PostgresStorage:
        options.setdefault("schema", schema)
        s = await PostgresStorage.open(pg_url, **options)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()
