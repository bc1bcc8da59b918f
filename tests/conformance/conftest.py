"""Runs the conformance suite against every backend: one fixture parameter per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.storage import Storage
from ruv_swarm_persistence.testing.plugin import clock, storage  # noqa: F401 - fixtures
from tests import pgserver

BACKENDS: list[Any] = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
async def storage_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A factory of fresh, empty storages of the parametrized backend."""
    made: list[Storage] = []
    schemas: list[str] = []
    pg_url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""

    async def make(**options: Any) -> Storage:
        if request.param == "memory":
            s: Storage = MemoryStorage(**options)
        elif request.param == "sqlite":
            from ruv_swarm_persistence.backends.sqlite import SqliteStorage

            s = await SqliteStorage.open(tmp_path / f"{len(made)}.db", **options)
        elif request.param == "postgres":
            from ruv_swarm_persistence.backends.postgres import PostgresStorage

            # Each storage gets a schema of its own, dropped after the test.
            schemas.append(pgserver.new_schema_name("conf"))
            s = await PostgresStorage.open(pg_url, schema=schemas[-1], **options)
        else:  # pragma: no cover - each backend adds its branch
            raise AssertionError(request.param)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()
    for schema in schemas:
        await pgserver.drop_schema(pg_url, schema)
