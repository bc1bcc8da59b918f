"""A worker killed while holding leased tasks: others retry them once the lease runs out.

A holder process claims four tasks under a 0.5 s lease (starting two of them) and is killed
with SIGKILL. Two rescuer processes, started at once, drain the queue: the held tasks come
back only after their lease expired, each counted as one failed attempt (``retry_count`` 1,
the error saying the lease expired), and are completed by a rescuer.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime
from pathlib import Path

import pytest

from ruv_swarm_persistence import QueryBuilder, TaskModel

from . import _workers as W

TASKS = 12
HELD = 4
LEASE_S = 0.5
BACKOFF_MS = 50


async def setup(db: Path) -> list[TaskModel]:
    from ruv_swarm_persistence.backends.sqlite import SqliteStorage

    tasks = [TaskModel.new("job", {"i": i}, id=f"job-{i:02d}") for i in range(TASKS)]
    async with await SqliteStorage.open(str(db)) as storage:
        await storage.store_tasks(tasks)
    return tasks


async def stored(db: Path) -> dict[str, TaskModel]:
    from ruv_swarm_persistence.backends.sqlite import SqliteStorage

    async with await SqliteStorage.open(str(db)) as storage:
        return {t.id: t for t in await storage.query(QueryBuilder(TaskModel))}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_tasks_of_a_killed_worker_are_retried_by_others_after_the_lease(tmp_path: Path) -> None:
    db = tmp_path / "lease.db"
    tasks = asyncio.run(setup(db))

    holder_log = tmp_path / "holder.log"
    holder = W.spawn("holder", db, holder_log, HELD, LEASE_S)
    try:
        held = {h["id"]: h for h in W.wait_for(holder_log, "held", holder)["held"]}
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert len(held) == HELD

    logs = [tmp_path / f"rescuer{k}.log" for k in range(2)]
    W.run_all("rescuer", db, logs, [(f"rescuer-{k}", BACKOFF_MS) for k in range(2)], 90)

    claims = [r for log in logs for r in W.read_log(log) if "claimed" in r]
    assert sorted(r["claimed"] for r in claims) == sorted(t.id for t in tasks), claims
    for claim in claims:
        if claim["claimed"] in held:
            expires = datetime.fromisoformat(held[claim["claimed"]]["lease_expires_at"])
            assert datetime.fromisoformat(claim["at"]) >= expires, (claim, expires)
            assert claim["retry_count"] == 1, claim
        else:
            assert claim["retry_count"] == 0, claim

    final = asyncio.run(stored(db))
    assert {t.status for t in final.values()} == {"completed"}
    for task_id, task in final.items():
        assert task.assigned_to is not None
        assert task.assigned_to.startswith("rescuer-")
        assert task.result == {"by": task.assigned_to}
        if task_id in held:
            assert task.retry_count == 1
            assert "lease expired" in (task.error or ""), task.error
        else:
            assert task.retry_count == 0
            assert task.error is None
