"""Four processes, eight scheduler coroutines each, fire the same schedules: each due time once.

Three interval schedules (a fifth of a second, a third, a half) are stored in one database;
four processes each run ``run_scheduler`` in eight coroutines for a few seconds, on the real
clock, and report the task ids their passes enqueued. Every id must be reported once, the
stored tasks must be exactly those, and each schedule's due times must follow each other one
interval apart, none missing (the schedulers never stopped, so nothing was missed).

This file is also the scheduler process: ``python test_scheduler_processes.py URL SCHEMA
COROUTINES SECONDS`` prints what its passes enqueued as JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import init_storage
from ruv_swarm_persistence.storage import Storage

PROCESSES = 4
COROUTINES = 8
SECONDS = 3.0
INTERVALS = {"fast": 0.2, "third": 1 / 3, "half": 0.5}
SCRIPT = os.path.abspath(__file__)


def _options(schema: str) -> dict[str, Any]:
    return {"schema": schema} if schema else {}


async def _scheduler(url: str, schema: str, coroutines: int, seconds: float) -> None:
    out: dict[str, Any] = {"fired": [], "errors": []}
    storage = await init_storage(url, **_options(schema))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def run() -> None:
        # run_scheduler's loop, with the enqueued ids kept for the report.
        while loop.time() < deadline:
            try:
                out["fired"] += await storage.fire_due_schedules()
            except Exception as exc:
                out["errors"].append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(run() for _ in range(coroutines)))
    finally:
        await storage.close()
    print(json.dumps(out))


async def _run(url: str, schema: str) -> list[dict[str, Any]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            url,
            schema,
            str(COROUTINES),
            str(SECONDS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), SECONDS + 120
        )
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


async def _define(storage: Storage) -> None:
    for name, seconds in INTERVALS.items():
        await storage.store_schedule(name, seconds, {"task_type": name})


def _check(reports: list[dict[str, Any]], stored_ids: list[str]) -> None:
    assert [r["errors"] for r in reports] == [[]] * PROCESSES
    fired = [task_id for r in reports for task_id in r["fired"]]
    twice = [task_id for task_id, n in Counter(fired).items() if n > 1]
    assert twice == [], "a due time was enqueued more than once"
    assert sorted(fired) == sorted(stored_ids)
    by_process = [len(r["fired"]) for r in reports]
    assert sum(1 for n in by_process if n) >= 2, f"one process fired everything: {by_process}"
    for name, seconds in INTERVALS.items():
        ids = [i for i in fired if i.startswith(f"{name}@")]
        dues = sorted(datetime.fromisoformat(i.split("@")[1]) for i in ids)
        # Enough due times to see their spacing; how many fit in the run depends on how busy
        # the machine is (a count per second would be a timing assertion).
        assert len(dues) >= 3, (name, len(dues))
        steps = {b - a for a, b in itertools.pairwise(dues)}
        assert steps == {timedelta(microseconds=round(seconds * 1e6))}, (name, steps)


async def _stored_ids(storage: Storage) -> list[str]:
    return [t.id for t in await storage.get_pending_tasks()]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_processes_fire_each_due_time_once_on_sqlite(tmp_path: Path) -> None:
    url = str(tmp_path / "schedules.db")
    async with await init_storage(url) as storage:
        await _define(storage)
    reports = await _run(url, "")
    async with await init_storage(url) as storage:
        _check(reports, await _stored_ids(storage))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
async def test_processes_fire_each_due_time_once_on_postgres(pg_url: str) -> None:
    from tests import pgserver

    schema = pgserver.new_schema_name("sched")
    try:
        async with await init_storage(pg_url, schema=schema) as storage:
            await _define(storage)
        reports = await _run(pg_url, schema)
        async with await init_storage(pg_url, schema=schema) as storage:
            _check(reports, await _stored_ids(storage))
    finally:
        await pgserver.drop_schema(pg_url, schema)


if __name__ == "__main__":
    asyncio.run(_scheduler(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
