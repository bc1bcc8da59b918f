"""A concurrency limit lowered below the tasks its key holds: no claim exceeds the new limit.

The tasks held from before keep their slots, some now past the lowered limit; two claims
running side by side take two free slots within it. Each must count the other.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ruv_swarm_persistence.models import TaskModel, TaskStatus

from ._support import WAIT, Opener


def _tasks(n: int) -> list[TaskModel]:
    return [TaskModel.new("job", {"i": i}, id=f"t{i}", concurrency_key="k") for i in range(n)]


async def _held(storage: Any) -> int:
    held = [t for a in ("w0", "a", "b", "c") for t in await storage.get_tasks_by_agent(a)]
    return sum(t.status in (TaskStatus.Assigned, TaskStatus.Running) for t in held)


async def wait_for_claim(pg_url: str, claim: asyncio.Future[Any]) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        for _ in range(int(WAIT / 0.01)):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            )
            if claim.done() or waiting:
                return
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    raise AssertionError("the second claim neither answered nor waited")


async def test_claims_beside_each_other_after_a_lowering_keep_to_the_new_limit(
    open_storage: Opener, pg_url: str
) -> None:
    one = await open_storage()
    other = await open_storage()
    await one.set_concurrency_limit("k", 3)
    await one.store_tasks(_tasks(8))
    for i in range(3):
        assert await one.claim_task(f"t{i}", "w0")  # slots 0, 1 and 2
    await one.set_concurrency_limit("k", 2)
    await one.complete_task("t0", "w0")
    await one.complete_task("t1", "w0")  # held now: t2, in slot 2, past the new limit
    tx = await one.begin_transaction()
    try:
        first = await tx.claim_next_task("a")  # slot 0, not committed yet
        assert first is not None
        # A claim beside it: slot 1 is free, and one task is held as far as it can see.
        second = asyncio.ensure_future(other.claim_next_task("b"))
        # Until it has answered, or waits for the first one's transaction to end.
        await wait_for_claim(pg_url, second)
    finally:
        await tx.commit()
    got = await asyncio.wait_for(second, WAIT)
    assert got is None, "two claims took the key past its lowered limit"
    assert await _held(one) == 2
    assert await other.claim_next_task("c") is None


async def test_many_claims_after_a_lowering_keep_to_the_new_limit(open_storage: Opener) -> None:
    storages = [await open_storage() for _ in range(4)]
    s = storages[0]
    await s.set_concurrency_limit("k", 6)
    await s.store_tasks(_tasks(40))
    for i in range(6):
        assert await s.claim_task(f"t{i}", "w0")
    await s.set_concurrency_limit("k", 3)
    for i in range(4):  # slots 0-3 free; t4 and t5 hold slots past the limit
        await s.complete_task(f"t{i}", "w0")
    got = await asyncio.wait_for(
        asyncio.gather(*(st.claim_next_task(f"x{i}") for i, st in enumerate(storages * 3))),
        WAIT,
    )
    assert len([t for t in got if t is not None]) == 1
