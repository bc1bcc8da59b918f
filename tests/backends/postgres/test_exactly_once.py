"""Exactly once across processes: 4 processes x 4 coroutines drain 10,000 dependent tasks.

The workers use the plain API (``claim_next_task`` → ``complete_task``, or in batches
``claim_next_tasks`` → ``complete_tasks``), so 16 claimers race for the same rows. A witness
trigger, installed by the test in the swarm's schema, logs every status change of a task with
a number from a sequence, drawn inside the statement that makes the change. A dependent is
correctly claimed only after its dependency's completion committed, so the completion's number
is lower than the claim's; a claim that ignored an unfinished dependency would draw its number
first. Every edge of the dependency graph is checked that way, and every task must leave
``pending`` once and complete once.

This file is also the worker: ``python test_exactly_once.py URL SCHEMA WORKER COROUTINES
SECONDS BATCH`` drains tasks (``BATCH`` at a time when above 1) and prints what it claimed and
completed as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from ruv_swarm_persistence import init_storage
from ruv_swarm_persistence.models import TaskModel, TaskPriority
from ruv_swarm_persistence.query import QueryBuilder
from ruv_swarm_persistence.storage import Storage

PROCESSES = 4
COROUTINES = 4
TASKS = 10_000
WINDOW = 100  # dependencies are drawn from the previous WINDOW tasks
WORKER_SECONDS = 240.0  # a worker gives up (and the test fails) after this long
UNFINISHED = ["pending", "assigned", "running"]
WORKER_SCRIPT = os.path.abspath(__file__)

WITNESS = """
CREATE TABLE {schema}.status_witness (
    number     BIGSERIAL PRIMARY KEY,
    task_id    TEXT NOT NULL,
    old_status TEXT NOT NULL,
    new_status TEXT NOT NULL,
    agent      TEXT
);
CREATE FUNCTION {schema}.witness_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.status_witness (task_id, old_status, new_status, agent)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.assigned_to);
    RETURN NULL;
END $$;
CREATE TRIGGER witness_status AFTER UPDATE OF status ON {schema}.tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION {schema}.witness_status();
"""

# --- the worker -----------------------------------------------------------------------------


async def _unfinished_left(storage: Storage) -> bool:
    query = QueryBuilder(TaskModel).where_in("status", UNFINISHED).limit(1)
    return bool(await storage.query(query))


async def _claim(storage: Storage, agent: str, batch: int) -> list[TaskModel]:
    if batch > 1:
        return await storage.claim_next_tasks(agent, batch)
    task = await storage.claim_next_task(agent)
    return [] if task is None else [task]


async def _complete(storage: Storage, agent: str, tasks: list[TaskModel]) -> list[TaskModel]:
    if len(tasks) > 1:
        return await storage.complete_tasks([(t.id, {"by": agent}) for t in tasks], agent)
    return [await storage.complete_task(tasks[0].id, agent, {"by": agent})]


async def _drain(
    storage: Storage, agent: str, deadline: float, out: dict[str, Any], batch: int
) -> None:
    idle = 0.002
    while time.monotonic() < deadline:
        tasks = await _claim(storage, agent, batch)
        if not tasks:
            if not await _unfinished_left(storage):
                return
            # Ready work is held by others; their completions will release more.
            await asyncio.sleep(idle)
            idle = min(idle * 2, 0.05)
            continue
        idle = 0.002
        out["claimed"] += [t.id for t in tasks]
        for done in await _complete(storage, agent, tasks):
            assert done.status == "completed", done
            out["completed"].append(done.id)
    out["errors"].append(f"{agent}: deadline passed with tasks unfinished")


async def _worker(
    url: str, schema: str, worker: int, coroutines: int, seconds: float, batch: int
) -> None:
    out: dict[str, Any] = {"claimed": [], "completed": [], "errors": []}
    deadline = time.monotonic() + seconds

    async def run(agent: str) -> None:
        try:
            await _drain(storage, agent, deadline, out, batch)
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


async def _run_workers(url: str, schema: str, batch: int) -> list[dict[str, Any]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            WORKER_SCRIPT,
            url,
            schema,
            str(n),
            str(COROUTINES),
            str(WORKER_SECONDS),
            str(batch),
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


async def install_witness(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(WITNESS.format(schema=f'"{schema}"'))
    finally:
        await conn.close()


async def read_witness(url: str, schema: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return list(
            await conn.fetch(
                f'SELECT number, task_id, old_status, new_status, agent FROM "{schema}".'
                "status_witness ORDER BY number"
            )
        )
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(WORKER_SECONDS + 60)
@pytest.mark.parametrize("batch", [1, 8], ids=["one-by-one", "batches"])
async def test_tasks_complete_exactly_once_in_dependency_order(pg_url: str, batch: int) -> None:
    from tests import pgserver

    schema = pgserver.new_schema_name("exactly_once")
    seed = random.randrange(2**32)
    tasks = make_tasks(TASKS, random.Random(seed))
    storage = await init_storage(pg_url, schema=schema)
    try:
        await install_witness(pg_url, schema)
        for i in range(0, TASKS, 500):
            await storage.store_tasks(tasks[i : i + 500])

        reports = await _run_workers(pg_url, schema, batch)

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

        # What the database saw: each task left pending once, then completed once.
        changes: dict[str, list[Any]] = defaultdict(list)
        for row in await read_witness(pg_url, schema):
            changes[row["task_id"]].append(row)
        assert set(changes) == ids
        odd = {
            i: [(r["old_status"], r["new_status"]) for r in rows]
            for i, rows in changes.items()
            if len(rows) != 2
            or rows[0]["old_status"] != "pending"
            or rows[1]["new_status"] != "completed"
        }
        assert odd == {}, f"seed {seed}: unexpected status changes {list(odd.items())[:5]}"
        claim_number = {i: rows[0]["number"] for i, rows in changes.items()}
        done_number = {i: rows[1]["number"] for i, rows in changes.items()}
        claimed_by = {i: rows[0]["agent"] for i, rows in changes.items()}

        too_early = [
            (dep, t.id)
            for t in tasks
            for dep in t.dependencies
            if not done_number[dep] < claim_number[t.id]
        ]
        assert too_early == [], f"seed {seed}: dependents claimed too early {too_early[:5]}"

        # Each stored result names the agent whose claim the database recorded.
        stored = await storage.query(QueryBuilder(TaskModel))
        assert len(stored) == TASKS
        wrong = [
            t.id for t in stored if t.status != "completed" or t.result != {"by": claimed_by[t.id]}
        ]
        assert wrong == []
    finally:
        await storage.close()
        await pgserver.drop_schema(pg_url, schema)


if __name__ == "__main__":
    _url, _schema, _worker_no, _coroutines, _seconds, _batch = sys.argv[1:7]
    asyncio.run(
        _worker(_url, _schema, int(_worker_no), int(_coroutines), float(_seconds), int(_batch))
    )
