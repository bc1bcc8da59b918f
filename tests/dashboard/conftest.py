"""Fixtures of the dashboard tests: a populated storage on each backend, the app, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.dashboard import create_app
from ruv_swarm_persistence.storage import Storage
from tests import pgserver
from tests.dashboard.swarm import STALE_AFTER, populate

BACKENDS: list[Any] = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]
#: The CSRF token of every app made here (the server makes a random one).
TOKEN = "test-csrf-token"


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """The populated swarm on the parametrized backend."""
    schema = None
    pg_url = ""
    if request.param == "memory":
        s: Storage = MemoryStorage()
    elif request.param == "sqlite":
        from ruv_swarm_persistence.backends.sqlite import SqliteStorage

        s = await SqliteStorage.open(tmp_path / "swarm.db")
    else:
        from ruv_swarm_persistence.backends.postgres import PostgresStorage

        pg_url = request.getfixturevalue("pg_url")
        schema = pgserver.new_schema_name("dash")
        s = await PostgresStorage.open(pg_url, schema=schema)
    try:
        await populate(s)
        yield s
    finally:
        await s.close()
        if schema is not None:
            await pgserver.drop_schema(pg_url, schema)


def make_app(storage: Storage, **options: Any) -> Starlette:
    """The dashboard of ``storage`` as the tests configure it."""
    options.setdefault("stale_after", STALE_AFTER)
    options.setdefault("csrf_token", TOKEN)
    # Every request reads the database afresh, so a test sees its own writes at once.
    options.setdefault("snapshot_ttl", 0.0)
    return create_app(storage, **options)


def client_of(app: Starlette) -> httpx.AsyncClient:
    """An HTTP client that calls ``app`` in this event loop (no server, no thread)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest.fixture
async def client(storage: Storage) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the read-only dashboard of ``storage``."""
    async with client_of(make_app(storage)) as c:
        yield c
