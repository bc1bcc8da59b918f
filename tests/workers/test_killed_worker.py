"""A worker process killed with SIGKILL in the middle of a handler: another worker process
completes the task once the lease has run out.

The victim (``swarmdb worker`` with a 1 s lease) starts the handler, which hangs; the test
kills it, so nothing renews the lease, releases the task or marks the agent. A rescuer started
afterwards claims the task when the lease has expired (the claim requeues it as one failed
attempt), runs the handler and completes it. Nothing here is timed: every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ruv_swarm_persistence import AgentStatus, TaskModel, TaskStatus, init_storage
from tests import pgserver

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.workers.handlers:handlers"
#: Bounds each wait; never an assertion about speed.
WAIT_S = 90.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "swarm.db")
        return
    pg_url = request.getfixturevalue("pg_url")
    schema = pgserver.new_schema_name("worker")
    try:
        yield f"{pg_url}?schema={schema}"
    finally:
        asyncio.run(pgserver.drop_schema(pg_url, schema))


def _worker(url: str, agent: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NO_COLOR="1")
    env.pop("SWARM_DB_URL", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ruv_swarm_persistence", "worker", HANDLERS, "--db", url,
             "--agent", agent, "--lease", "1", "--types", "slow"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{path.name} never appeared\n{log.read_text()}"
        time.sleep(0.02)


async def _store(url: str, task: TaskModel) -> None:
    async with await init_storage(url) as storage:
        await storage.store_task(task)


async def _finished(url: str, task_id: str) -> TaskModel | None:
    async with await init_storage(url) as storage:
        return await storage.wait_for_task(task_id, WAIT_S)


async def _read(url: str) -> tuple[list[TaskModel], dict[str, AgentStatus], list[tuple[str, str]]]:
    async with await init_storage(url) as storage:
        tasks = await storage.tasks.find_all()
        agents = {a.id: a.status for a in await storage.list_agents()}
        events = [(e.event_type, e.agent_id or "") for e in await storage.read_events(0, 10_000)]
    return tasks, agents, events


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_workers_task_is_completed_by_another_after_the_lease(
    db_url: str, tmp_path: Path
) -> None:
    task = TaskModel.new("slow", {"marker_dir": str(tmp_path), "hang_for": "victim"}, id="job")
    asyncio.run(_store(db_url, task))

    victim_log = tmp_path / "victim.log"
    victim = _worker(db_url, "victim", victim_log)
    try:
        _wait_for_file(tmp_path / "started-job-victim", victim, victim_log)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(WAIT_S)
    assert victim.returncode == -signal.SIGKILL

    rescuer_log = tmp_path / "rescuer.log"
    rescuer = _worker(db_url, "rescuer", rescuer_log)
    try:
        done = asyncio.run(_finished(db_url, "job"))
        assert done is not None, rescuer_log.read_text()
    finally:
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait(WAIT_S)
    assert rescuer.returncode == 0, rescuer_log.read_text()
    assert "Traceback" not in rescuer_log.read_text()

    assert done.status == TaskStatus.Completed
    assert done.assigned_to == "rescuer"
    assert done.result == {"by": "rescuer"}
    assert done.retry_count == 1  # the victim's expired lease cost one attempt
    assert "lease expired" in (done.error or ""), done.error
    assert (tmp_path / "started-job-rescuer").exists()

    tasks, agents, events = asyncio.run(_read(db_url))
    assert [(t.id, t.status) for t in tasks] == [("job", TaskStatus.Completed)]
    # The killed worker never marked its agent; the rescuer, stopped cleanly, did.
    assert agents == {"victim": AgentStatus.Active, "rescuer": AgentStatus.Shutdown}
    assert ("task.completed", "rescuer") in events
    assert [e for e in events if e[1] == "victim"] == [("worker.started", "victim")]
    assert ("worker.stopped", "rescuer") in events
