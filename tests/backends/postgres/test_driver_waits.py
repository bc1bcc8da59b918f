"""Every wait inside the driver ends when its connection is killed: no call hangs for ever.

asyncpg waits on the socket in two ways: for an answer (ended by the connection's loss, or
by ``command_timeout``) and, while it streams a large request, for the socket to accept more
data (ended by nothing when the connection is lost meanwhile). The library streams in two
places: the COPY of a large ``store_events`` (``test_copy_faults.py``) and the
``executemany`` that cancels a task's dependents, killed mid-stream here (it hung for ever
before it got the same guard as the COPY).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ruv_swarm_persistence.backends.postgres.options import application_name
from ruv_swarm_persistence.errors import DatabaseError
from ruv_swarm_persistence.models import TaskModel

from ._support import WAIT, Opener

#: Longer than any call here may take: past it, the call hangs.
HANG = 60.0
#: Seconds between seeing the statement run and killing its session.
KILL_AFTER = 0.2
#: Dependents cancelled at once, with payloads large enough that the socket fills.
DEPENDENTS = 10_000


async def _kill_when_running(pg_url: str, schema: str, prefix: str) -> bool:
    """Terminate the storage's session while it runs a statement starting with ``prefix``.

    Killed a moment after it is seen, when the client has filled the socket and waits for
    it to drain (at once, the kill often lands before that wait).
    """
    conn = await asyncpg.connect(pg_url)
    running = (
        "SELECT pid FROM pg_stat_activity"
        " WHERE application_name = $1 AND query LIKE $2 AND state = 'active'"
    )
    try:
        for _ in range(int(WAIT / 0.005)):
            pids = [r[0] for r in await conn.fetch(running, application_name(schema), prefix + "%")]
            if pids:
                await asyncio.sleep(KILL_AFTER)
                killed = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM unnest($1::int[]) AS pid", pids
                )
                return bool(killed)
            await asyncio.sleep(0.005)
        return False
    finally:
        await conn.close()


async def test_a_cascade_whose_connection_is_killed_ends_whole_or_not_at_all(
    open_storage: Opener, pg_url: str, schema: str
) -> None:
    storage = await open_storage()
    root = TaskModel.new("work", {}, id="root")
    pad = "x" * 3000
    dependents = [
        TaskModel.new("work", {"pad": pad}, id=f"d{i:05}", dependencies=["root"])
        for i in range(DEPENDENTS)
    ]
    await storage.store_tasks([root, *dependents])
    cancel = asyncio.ensure_future(storage.cancel_task("root"))
    seen = await _kill_when_running(pg_url, schema, "\nUPDATE tasks SET task_type")
    # Bounded generously: a retry sends the whole cascade again, on a busy machine too.
    outcome = await asyncio.wait_for(asyncio.gather(cancel, return_exceptions=True), HANG)
    if not seen:
        pytest.fail(f"the cascade's UPDATE was never seen running; the call gave {outcome!r}")
    (answer,) = outcome
    # Lost before its COMMIT, the write was retried on a fresh connection (and succeeded), or
    # it failed typed; either way it was applied whole or not at all.
    statuses = {t.status.value for t in await storage.tasks.find_all()}
    if isinstance(answer, list):
        assert len(answer) == DEPENDENTS + 1
        assert statuses == {"cancelled"}
    else:
        assert isinstance(answer, DatabaseError), repr(answer)
        assert statuses in ({"cancelled"}, {"pending"})
