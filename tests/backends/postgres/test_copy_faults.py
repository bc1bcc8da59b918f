"""A connection lost in the middle of a COPY fails the call; it never hangs.

asyncpg's COPY waits for the socket to accept more rows; if the server ends the session
while that wait is on, nothing in asyncpg ends the wait. A large ``store_events`` (sent with
COPY) is killed mid-stream here, many times over, and must fail with the library's typed
error that says the write may or may not have been applied.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ruv_swarm_persistence.backends.postgres.options import application_name
from ruv_swarm_persistence.errors import DatabaseError
from ruv_swarm_persistence.models import EventModel

from ._support import WAIT, Opener

#: Enough rows that the COPY streams for a while: the socket fills and writing pauses.
ROWS = 60_000


async def _kill_when_copying(pg_url: str, schema: str) -> bool:
    """Terminate the storage's session once it is running its COPY; whether it was seen."""
    conn = await asyncpg.connect(pg_url)
    try:
        for _ in range(int(WAIT / 0.005)):
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND query LIKE 'COPY%' AND state = 'active'",
                application_name(schema),
            )
            if killed:
                return True
            await asyncio.sleep(0.005)
        return False
    finally:
        await conn.close()


@pytest.mark.parametrize("attempt", range(3))
async def test_a_copy_whose_connection_is_killed_fails_typed(
    open_storage: Opener, pg_url: str, schema: str, attempt: int
) -> None:
    storage = await open_storage()
    events = [EventModel.new("load", {"i": i, "pad": "x" * 300}) for i in range(ROWS)]
    write = asyncio.ensure_future(storage.store_events(events))
    assert await _kill_when_copying(pg_url, schema), "the COPY was never seen running"
    with pytest.raises(DatabaseError, match="may or may not have been applied"):
        await asyncio.wait_for(write, WAIT)
    # The storage goes on working with a fresh connection; the COPY's transaction was lost.
    assert await storage.store_events([EventModel.new("after")]) == [1]
