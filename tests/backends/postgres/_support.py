"""Helpers of the PostgreSQL backend's own tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.backends.postgres.storage import application_name

__all__ = [
    "WAIT",
    "Opener",
    "kill_backends",
    "log_queries",
    "settled",
    "url_with",
    "wait_until",
]

#: Upper bound for something that should happen at once (a hang fails instead of blocking).
WAIT = 10.0

Opener = Callable[..., Awaitable[PostgresStorage]]


def url_with(url: str, **params: Any) -> str:
    """``url`` with query parameters added."""
    from urllib.parse import urlencode

    return url + ("&" if "?" in url else "?") + urlencode(params)


async def kill_backends(pg_url: str, schema: str, role: str = "pool") -> int:
    """``pg_terminate_backend`` every connection of a storage's pool (or its listener)."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()",
            application_name(schema, role),
        )
        return len(rows)
    finally:
        await conn.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll a condition the API offers no notification for, with an upper bound."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - no event exists for these conditions
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def log_queries(storage: PostgresStorage) -> list[str]:
    """Record every statement the storage's pool connections run from now on."""
    runner = storage._runner
    queries: list[str] = []
    acquire, release = runner.acquire, runner.release

    def logger(record: Any) -> None:
        queries.append(record.query)

    async def logged_acquire() -> Any:
        conn = await acquire()
        conn.add_query_logger(logger)
        return conn

    async def logged_release(conn: Any) -> None:
        conn.remove_query_logger(logger)
        await release(conn)

    runner.acquire = logged_acquire  # type: ignore[method-assign]
    runner.release = logged_release  # type: ignore[method-assign]
    return queries


async def settled() -> None:
    # Query loggers are called soon after the query, not during it.
    for _ in range(5):
        await asyncio.sleep(0)
