"""Exactly once across processes: 4 processes x 4 coroutines drain 10,000 dependent tasks.

Every claim and every completion runs in a transaction that also appends an event
(``claimed`` / ``completed`` with the task's id). Event sequences follow commit order, so
"each dependency completed before its dependent was claimed" becomes "the dependency's
``completed`` sequence is lower than the dependent's ``claimed`` sequence", checked for every
edge. A claim that ignored an unfinished dependency would commit its ``claimed`` event before
the dependency's ``completed`` event and show up here.

This file is also the worker: ``python test_exactly_once.py URL SCHEMA WORKER COROUTINES
SECONDS`` drains tasks and prints what it claimed and completed as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import pytest

from ruv_swarm_persistence import init_storage
from ruv_swarm_persistence.models import EventModel, TaskModel, TaskPriority
from ruv_swarm_persistence.query import QueryBuilder
from ruv_swarm_persistence.storage import Storage

PROCESSES = 4
COROUTINES = 4
TASKS = 10_000
WINDOW = 100  # dependencies are drawn from the previous WINDOW tasks
WORKER_SECONDS = 240.0  # a worker gives up (and the test fails) after this long
UNFINISHED = ["pending", "assigned", "running"]
WORKER_SCRIPT = os.path.abspath(__file__)

# --- the worker -----------------------------------------------------------------------------


async def _unfinished_left(storage: Storage) -> bool:
    query = QueryBuilder(TaskModel).where_in("status", UNFINISHED).limit(1)
    return bool(await storage.query(query))


async def _drain(storage: Storage, agent: str, deadline: float, out: dict[str, Any]) -> None:
    idle = 0.002
    while time.monotonic() < deadline:
        async with storage.transaction() as tx:
            task = await tx.claim_next_task(agent)
            if task is not None:
                await tx.store_event(EventModel.new("claimed", task_id=task.id, agent_id=agent))
        if task is None:
            if not await _unfinished_left(storage):
                return
            # Ready work is held by others; their completions will release more.
            await asyncio.sleep(idle)
            idle = min(idle * 2, 0.05)
            continue
        idle = 0.002
        out["claimed"].append(task.id)
        async with storage.transaction() as tx:
            done = await tx.complete_task(task.id, agent, {"by": agent})
            await tx.store_event(EventModel.new("completed", task_id=task.id, agent_id=agent))
        assert done.status == "completed", done
        out["completed"].append(task.id)
    out["errors"].append(f"{agent}: deadline passed with tasks unfinished")


async def _worker(url: str, schema: str, worker: int, coroutines: int, seconds: float) -> None:
    out: dict[str, Any] = {"claimed": [], "completed": [], "errors": []}
    deadline = time.monotonic() + seconds

    async def run(agent: str) -> None:
        try:
            await _drain(storage, agent, deadline, out)
        except Exception as exc:
            out["errors"].append(f"{agent}: {type(exc).__module__}.{type(exc).__name__}: {exc}")

    storage = await init_storage(url, schema=schema)
    try:
        await asyncio.gather(*(run(f"w{worker}-{i}") for i in range(coroutines)))
    finally:
        await storage.close()
    print(json.dumps(out))


# --- the test -------------------------------------------------------------------------------


def make_tasks(n: int, rng: random.Random) -> list[TaskModel]:
    """``n`` tasks; about 70% depend on one to three of the previous ``WINDOW`` tasks."""
    tasks: list[TaskModel] = []
    for i in range(n):
        deps: list[str] = []
        if i and rng.random() < 0.7:
            window = tasks[max(0, i - WINDOW) : i]
            deps = [t.id for t in rng.sample(window, min(len(window), rng.randint(1, 3)))]
        priority = TaskPriority(rng.randrange(4))
        tasks.append(TaskModel.new("unit", {"i": i}, priority, dependencies=deps))
    return tasks


async def _read_all_events(storage: Storage) -> list[EventModel]:
    events: list[EventModel] = []
    after = 0
    while True:
        page = await storage.read_events(after, 1000)
        if not page:
            return events
        events += page
        after = page[-1].sequence or 0


async def _run_workers(url: str, schema: str) -> list[dict[str, Any]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            WORKER_SCRIPT,
            url,
            schema,
            str(n),
            str(COROUTINES),
            str(WORKER_SECONDS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), WORKER_SECONDS + 30
        )
    except TimeoutError:
        pytest.fail("workers did not finish in time")
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    reports = []
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr.decode(errors="replace")[-3000:]
        reports.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return reports


@pytest.mark.slow
@pytest.mark.timeout(WORKER_SECONDS + 60)
async def test_tasks_complete_exactly_once_in_dependency_order(pg_url: str) -> None:
    from tests import pgserver

    schema = pgserver.new_schema_name("exactly_once")
    seed = random.randrange(2**32)
    tasks = make_tasks(TASKS, random.Random(seed))
    storage = await init_storage(pg_url, schema=schema)
    try:
        for i in range(0, TASKS, 500):
            await storage.store_tasks(tasks[i : i + 500])

        reports = await _run_workers(pg_url, schema)

        errors = [e for r in reports for e in r["errors"]]
        assert errors == [], f"seed {seed}: {errors[:5]}"
        ids = {t.id for t in tasks}
        claimed = Counter(i for r in reports for i in r["claimed"])
        completed = Counter(i for r in reports for i in r["completed"])
        assert set(claimed) == ids
        assert set(completed) == ids
        assert [i for i, n in claimed.items() if n != 1] == []
        assert [i for i, n in completed.items() if n != 1] == []
        # The work really was shared between processes.
        assert all(len(r["completed"]) > 0 for r in reports)

        left = await storage.query(QueryBuilder(TaskModel).where_ne("status", "completed"))
        assert left == []

        events = await _read_all_events(storage)
        sequences = [e.sequence for e in events]
        assert sequences == sorted(sequences)
        assert len(set(sequences)) == len(sequences)
        claimed_at: dict[str, int] = {}
        completed_at: dict[str, int] = {}
        claimed_by: dict[str, str | None] = {}
        for e in events:
            assert e.task_id is not None
            assert e.sequence is not None
            book = claimed_at if e.event_type == "claimed" else completed_at
            assert e.task_id not in book, f"{e.event_type} twice: {e.task_id}"
            book[e.task_id] = e.sequence
            if e.event_type == "claimed":
                claimed_by[e.task_id] = e.agent_id
        assert set(claimed_at) == ids
        assert set(completed_at) == ids

        out_of_order = [
            (dep, t.id)
            for t in tasks
            for dep in t.dependencies
            if not completed_at[dep] < claimed_at[t.id]
        ]
        assert out_of_order == [], f"seed {seed}: dependents claimed too early {out_of_order[:5]}"
        assert all(claimed_at[i] < completed_at[i] for i in ids)

        # Each stored result names the agent whose claim the log recorded.
        sample = random.Random(seed).sample(tasks, 200)
        for t in sample:
            stored = await storage.get_task(t.id)
            assert stored is not None
            assert stored.result == {"by": claimed_by[t.id]}
    finally:
        await storage.close()
        await pgserver.drop_schema(pg_url, schema)


if __name__ == "__main__":
    _url, _schema, _worker_no, _coroutines, _seconds = sys.argv[1:6]
    asyncio.run(_worker(_url, _schema, int(_worker_no), int(_coroutines), float(_seconds)))
