"""Chaos: 4 worker processes at concurrency 8 drain a graph of dependent tasks while one of them
is killed with SIGKILL every few seconds and a replacement started (``tests/workers/chaos.py``
runs the fleet; the handler is ``tests.workers.handlers:chaos``).

Each handler run records itself before it returns, in the database, where a kill cannot undo
it: a ``chaos.ran`` event with a fresh run id, the pid, the attempt number and the task's
``started_at``. Its result names the same run, the agent and pid, the attempt and the run ids
of the dependencies' results it was given.

What a kill can and cannot do. A process killed after its handler's side effect (the event)
and before ``complete_task`` leaves a run that never completes: side effects are at least
once, and nothing can make them otherwise. What the storage promises, and what is asserted:

* every task is completed, none failed, no task is missing or added;
* exactly once: each task was completed by one attempt, and the completion is that attempt's:
  its result names the agent the task is assigned to, the pid of the process the test started
  under that agent, and the attempt the task completed in (``retry_count + 1``), and its run id
  is recorded by exactly one ``chaos.ran`` event of the same agent, pid and attempt, the latest
  attempt that ran; at most one ``task.completed`` event per task, naming the same agent and
  attempt (a worker killed between the completion and its event leaves none);
* never two holders: the runs of a task have distinct attempt numbers, started in attempt
  order. Each new claim of a task whose lease ran out counts an attempt, and no worker is
  stopped gracefully before the end (so no release returns a task without counting one): two
  runs of one attempt would be two workers holding the task at once;
* no run vanishes: every run that did not complete its task was made by a worker that was
  killed, or its worker recorded the attempt as lost (``task.lease_lost``, its lease ran out
  while it ran) or counted an outcome it could not write (``unrecorded``);
* dependency order: every task started after all its dependencies completed, and so did
  every run of it (the ``started_at`` each run recorded), and each run was given the result of
  every dependency's completing run;
* the chaos happened: at least ``KILL_MARKS`` kills, each leaving exit status -SIGKILL, some
  tasks needing another attempt; the survivors, stopped with SIGTERM at the end, exit 0
  without a traceback.

Size: ``$SWARM_CHAOS_TASKS`` tasks (default 2,000, which each backend drains in well under a
minute here; ``SWARM_CHAOS_TASKS=10000`` is the long run). Every wait is bounded: the drain
fails past its deadline with the progress, the unfinished tasks and the workers' logs.
Nothing is timed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from ruv_swarm_persistence import EventModel, TaskModel, TaskStatus, init_storage
from tests import pgserver
from tests.workers import chaos

TASKS = int(os.environ.get("SWARM_CHAOS_TASKS") or 2000)
WORKERS = 4
CONCURRENCY = 8
LEASE_S = 1.5
KILL_EVERY_S = 3.0
#: Kills at evenly spaced points of progress besides the clock's, so that a fast drain is
#: killed too.
KILL_MARKS = 4
#: A pause in each handler between its side effect and its result (kills land there too).
PAUSE_MS = 2
#: The drain's hard deadline: several times what it takes here.
DEADLINE_S = max(180.0, TASKS * 0.08)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "swarm.db")
        return
    pg_url = request.getfixturevalue("pg_url")
    schema = pgserver.new_schema_name("chaos")
    try:
        yield f"{pg_url}?schema={schema}"
    finally:
        asyncio.run(pgserver.drop_schema(pg_url, schema))


async def _store(url: str, graph: list[TaskModel]) -> None:
    async with init_storage(url) as storage:
        await chaos.store_graph(storage, graph)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.slow
@pytest.mark.timeout(int(DEADLINE_S) + 240)
def test_killed_workers_lose_no_task_and_complete_none_twice(db_url: str, tmp_path: Path) -> None:
    graph = chaos.make_graph(TASKS, pause_ms=PAUSE_MS)
    assert sum(1 for t in graph if t.dependencies) > TASKS * 0.7
    asyncio.run(_store(db_url, graph))

    run = asyncio.run(
        chaos.drain(
            db_url,
            TASKS,
            tmp_path / "logs",
            workers=WORKERS,
            concurrency=CONCURRENCY,
            lease=LEASE_S,
            kill_every=KILL_EVERY_S,
            kill_marks=KILL_MARKS,
            deadline_s=DEADLINE_S,
        )
    )
    tasks, events = asyncio.run(chaos.read_all(db_url))
    pids, killed = run.pids, run.killed

    # --- the processes: killed ones died of SIGKILL, the others stopped cleanly -------------
    assert run.kills >= KILL_MARKS
    assert len(killed) == run.kills
    for proc in run.procs:
        log = proc.log.read_text(errors="replace")
        if proc.killed:
            assert proc.popen.returncode == -signal.SIGKILL, proc.agent
        else:
            assert proc.popen.returncode == 0, f"{proc.agent}:\n{log}"
            assert "Traceback" not in log, f"{proc.agent}:\n{log}"

    # --- every task completed, nothing else stored ------------------------------------------
    by_id = {t.id: t for t in tasks}
    assert len(by_id) == len(tasks) == TASKS
    assert set(by_id) == {t.id for t in graph}
    not_done = [(t.id, t.status, t.error) for t in tasks if t.status != TaskStatus.Completed]
    assert not not_done, not_done[:10]

    runs: dict[str, list[EventModel]] = defaultdict(list)
    completions: dict[str, list[EventModel]] = defaultdict(list)
    lost: set[tuple[str, str]] = set()
    unrecorded: Counter[str] = Counter()
    for e in events:
        if e.event_type == "chaos.ran":
            assert e.task_id is not None
            assert e.agent_id is not None
            runs[e.task_id].append(e)
        elif e.event_type == "task.completed":
            assert e.task_id is not None
            completions[e.task_id].append(e)
        elif e.event_type == "task.lease_lost":
            assert e.task_id is not None
            assert e.agent_id is not None
            lost.add((e.task_id, e.agent_id))
        elif e.event_type == "worker.stopped":
            assert e.agent_id is not None
            unrecorded[e.agent_id] += e.payload["unrecorded"]
        assert e.event_type not in ("task.failed", "task.released", "task.cancelled"), e

    unexplained: list[str] = []
    for task in tasks:
        result, agent = task.result, task.assigned_to
        attempt = task.retry_count + 1
        # --- exactly once: the completion is the completing attempt's ----------------------
        assert agent in pids, (task.id, agent)
        assert result["agent"] == agent, (task.id, result, agent)
        assert result["pid"] == pids[agent], (task.id, result, pids[agent])
        assert result["attempt"] == attempt, (task.id, result, attempt)
        ran = runs[task.id]
        mine = [e for e in ran if e.payload["run"] == result["run"]]
        assert len(mine) == 1, (task.id, result, [e.payload for e in ran])
        assert mine[0].agent_id == agent
        assert mine[0].payload["pid"] == pids[agent]
        assert mine[0].payload["attempt"] == attempt
        assert len(completions[task.id]) <= 1, [e.payload for e in completions[task.id]]
        for e in completions[task.id]:
            assert e.agent_id == agent, (task.id, e)
            assert e.payload["attempt"] == attempt, (task.id, e)
        # --- never two holders: one run per attempt, in attempt order, the last completes --
        attempts = [e.payload["attempt"] for e in ran]
        assert len(set(attempts)) == len(attempts), (task.id, [e.payload for e in ran])
        assert max(attempts) == attempt, (task.id, attempts, attempt)
        ordered = sorted(ran, key=lambda e: e.payload["attempt"])
        starts = [_time(e.payload["started_at"]) for e in ordered]
        assert starts == sorted(starts), (task.id, [e.payload for e in ordered])
        assert starts[-1] == task.started_at, (task.id, starts, task.started_at)
        # --- no run vanishes ----------------------------------------------------------------
        for e in ran:
            if e is mine[0] or e.agent_id in killed or (task.id, e.agent_id) in lost:
                continue
            unexplained.append(f"{task.id} attempt {e.payload['attempt']} by {e.agent_id}")
        # --- dependency order ---------------------------------------------------------------
        assert task.started_at is not None
        assert task.completed_at is not None
        assert task.completed_at >= task.started_at
        deps = [by_id[d] for d in task.dependencies]
        for dep in deps:
            assert dep.completed_at is not None
            for start in starts:
                assert start >= dep.completed_at, (task.id, dep.id, start, dep.completed_at)
        assert result["deps"] == {d.id: d.result["run"] for d in deps}, (task.id, result)
    # A run left unexplained by a kill or a lost lease may only be an outcome its worker
    # could not write, which the worker counts.
    per_agent = Counter(u.rsplit(" by ", 1)[1] for u in unexplained)
    assert all(n <= unrecorded[a] for a, n in per_agent.items()), unexplained[:10]

    # --- the chaos happened -------------------------------------------------------------------
    retried = sum(1 for t in tasks if t.retry_count)
    assert retried > 0, "no kill hit a task"
    reruns = sum(len(r) for r in runs.values()) - TASKS
    print(
        f"\n{TASKS} tasks in {run.seconds:.1f}s, {run.kills} kills, {retried} tasks retried, "
        f"{reruns} handler runs beyond one per task, "
        f"{sum(1 for t in tasks if not completions[t.id])} completions without their event"
    )
