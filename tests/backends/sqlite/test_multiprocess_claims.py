"""Four processes drain one file's task queue: each task completes exactly once, in order.

5,000 tasks with dependencies (short chains and fan-in on recent tasks, mixed priorities) are
stored in one file; four processes, two worker coroutines each, claim and complete them.
Each completion is committed in one transaction with a ``task.completed`` event, so the event
sequence is the commit order of completions: every task's event must come after the events of
all its dependencies. No call may fail, "database is locked" included.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from ruv_swarm_persistence import QueryBuilder, TaskModel, TaskPriority

from . import _workers as W

TASKS = 5_000
PROCESSES = 4
COROUTINES = 2


def make_tasks(seed: int) -> list[TaskModel]:
    rng = random.Random(seed)
    tasks: list[TaskModel] = []
    for i in range(TASKS):
        deps: set[str] = set()
        if i % 5:
            deps.add(tasks[i - 1].id)  # chains of five
        if i >= 50 and rng.random() < 0.3:
            deps.add(tasks[rng.randrange(i - 50, i)].id)  # fan-in on a recent task
        tasks.append(
            TaskModel.new(
                "job",
                {"i": i},
                TaskPriority(rng.randint(0, 3)),
                id=f"job-{i:05d}",
                dependencies=sorted(deps),
            )
        )
    return tasks


async def setup(db: Path, tasks: list[TaskModel]) -> None:
    from ruv_swarm_persistence.backends.sqlite import SqliteStorage

    async with await SqliteStorage.open(str(db)) as storage:
        for i in range(0, len(tasks), 500):
            await storage.store_tasks(tasks[i : i + 500])


async def outcome(db: Path) -> tuple[list[TaskModel], list[tuple[int, str]]]:
    from ruv_swarm_persistence.backends.sqlite import SqliteStorage

    async with await SqliteStorage.open(str(db)) as storage:
        stored = await storage.query(QueryBuilder(TaskModel))
        completions: list[tuple[int, str]] = []
        after = 0
        while batch := await storage.read_events(after, 1000):
            after = batch[-1].sequence or 0
            completions += [
                (e.sequence or 0, e.task_id or "")
                for e in batch
                if e.event_type == "task.completed"
            ]
        return stored, completions


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_four_processes_complete_each_task_exactly_once_in_dependency_order(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    tasks = make_tasks(seed=4)
    asyncio.run(setup(db, tasks))

    logs = [tmp_path / f"claimer{p}.log" for p in range(PROCESSES)]
    W.run_all("claimer", db, logs, [(f"p{p}", COROUTINES) for p in range(PROCESSES)], 150)

    records = [r for log in logs for r in W.read_log(log)]
    assert not [r for r in records if "error" in r or "violation" in r], records[:5]
    done = Counter(r["completed"] for r in records if "completed" in r)
    assert set(done) == {t.id for t in tasks}
    assert [t for t, n in done.items() if n != 1] == []
    by_process = Counter(r["by"].split(".")[0] for r in records if "completed" in r)
    assert len(by_process) >= 2, f"the load was not shared between processes: {by_process}"

    stored, completions = asyncio.run(outcome(db))
    assert len(stored) == TASKS
    assert {t.status for t in stored} == {"completed"}
    assert all(t.retry_count == 0 for t in stored)
    sequence_of = {task_id: seq for seq, task_id in completions}
    assert len(completions) == TASKS == len(sequence_of), "a task completed twice or never"
    for t in stored:
        assert t.result is not None
        assert t.result["by"].split(".")[0] in by_process
        for dep in t.dependencies:
            assert sequence_of[dep] < sequence_of[t.id], f"{t.id} completed before {dep}"
