"""The chaos drain: worker processes drain a graph of dependent tasks while some are killed.

:func:`make_graph` builds the tasks: pipelines of about twenty, each with independent roots, a
chain, tasks depending on one or two earlier ones and fan-ins of three to five, closed by a
sink depending on every fan-in; a chain's head also depends on a root of an earlier pipeline.
About four tasks in five have dependencies, and no path is longer than a pipeline's.

:func:`drain` starts ``workers`` processes of ``swarmdb worker`` (handler
``tests.workers.handlers:chaos``, short lease), each under an agent id of its own, and, when
``kill_every`` is set, kills the longest-running one that has registered (so a kill hits a worker at
work) with SIGKILL every ``kill_every`` seconds and at each of ``kill_marks`` points of progress,
starting a replacement under a new agent id at once. When every task is completed it stops the
survivors with SIGTERM (a graceful stop) and returns what happened: who ran under which pid, who was
killed, how long it took. It fails (:class:`ChaosFailure`) with the progress, the unfinished tasks
and the workers' logs when a task fails for good, a worker exits on its own, or the deadline passes.

Used by ``tests/workers/test_chaos.py`` and by ``bench.worker_bench`` (throughput with and
without the kills).
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ruv_swarm_persistence import EventModel, TaskModel, TaskStatus, init_storage
from ruv_swarm_persistence.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.workers.handlers:handlers"
TASK_TYPE = "chaos"
#: Retries allowed per task: every kill costs the tasks it held one attempt each, and a task
#: must not fail for good because it was unlucky several times.
MAX_RETRIES = 25
#: How often the drain looks at the database.
POLL_S = 0.2
#: How often it asks the tasks themselves whether any is unfinished or failed.
LOOK_EVERY_S = 2.0
#: How long a worker asked to stop (SIGTERM) may take; a killed one is gone at once.
STOP_WAIT_S = 30.0


class ChaosFailure(AssertionError):
    """The drain did not finish: why, with the progress and the workers' logs."""


def make_graph(n: int, seed: int = 7, pause_ms: int = 0) -> list[TaskModel]:
    """``n`` chaos tasks in pipelines of dependent tasks (see the module docstring).

    Returned in an order that stores (each task after its dependencies).
    """
    rng = random.Random(seed)
    tasks: list[TaskModel] = []
    roots_so_far: list[str] = []
    payload = {"pause_ms": pause_ms} if pause_ms else {}

    def add(deps: list[str]) -> str:
        task = TaskModel.new(TASK_TYPE, dict(payload), dependencies=deps, max_retries=MAX_RETRIES)
        tasks.append(task)
        return task.id

    while len(tasks) < n:
        left = n - len(tasks)
        roots = [add([]) for _ in range(min(4, left))]
        earlier = list(roots)
        chain: list[str] = []
        for i in range(min(6, n - len(tasks))):
            if i == 0:
                deps = [roots[0]]
                if roots_so_far:  # across pipelines: a root of an earlier one
                    deps.append(rng.choice(roots_so_far[-200:]))
            else:
                deps = [chain[-1]]
            chain.append(add(deps))
        earlier += chain
        for _ in range(min(5, n - len(tasks))):
            earlier.append(add(rng.sample(earlier, rng.randint(1, 2))))
        fan_ins = [
            add(rng.sample(earlier, rng.randint(3, 5))) for _ in range(min(3, n - len(tasks)))
        ]
        if fan_ins and len(tasks) < n:
            add(fan_ins)
        roots_so_far += roots
    return tasks


async def store_graph(storage: Storage, tasks: list[TaskModel], chunk: int = 1000) -> None:
    """Store the tasks, a chunk per call (each after the chunks holding its dependencies)."""
    for i in range(0, len(tasks), chunk):
        await storage.store_tasks(tasks[i : i + chunk])


@dataclass(slots=True)
class Proc:
    """One worker process."""

    agent: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass(slots=True)
class ChaosRun:
    """What a drain did."""

    tasks: int
    #: From the first worker's start to the moment every task was seen completed.
    seconds: float
    kills: int
    procs: list[Proc] = field(default_factory=list)
    #: CPU seconds of every worker process (user + system), killed ones included.
    worker_cpu_s: float = 0.0

    @property
    def pids(self) -> dict[str, int]:
        """Agent id → pid of the process that worked under it."""
        return {p.agent: p.pid for p in self.procs}

    @property
    def killed(self) -> set[str]:
        """Agent ids whose process was killed with SIGKILL."""
        return {p.agent for p in self.procs if p.killed}


def _start(url: str, agent: str, logdir: Path, concurrency: int, lease: float) -> Proc:
    env = dict(os.environ, NO_COLOR="1")
    env.pop("SWARM_DB_URL", None)
    log = logdir / f"{agent}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "ruv_swarm_persistence", "--log-level", "warning", "worker",
             HANDLERS, "--db", url, "--agent", agent, "-c", str(concurrency),
             "--lease", str(lease), "--types", TASK_TYPE],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Proc(agent, popen, log, time.monotonic())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class _Progress:
    """Completed tasks as the event log tells them (``task.completed`` events, read as they
    come), and the precise answer when that count says the end is near."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.after = 0
        self.completed: set[str] = set()
        #: Agents whose worker has registered (only those are killed: a kill should hit work).
        self.started: set[str] = set()

    async def poll(self) -> int:
        while True:
            batch = await self.storage.read_events(self.after, 5000)
            for event in batch:
                if event.event_type == "task.completed" and event.task_id is not None:
                    self.completed.add(event.task_id)
                elif event.event_type == "worker.started" and event.agent_id is not None:
                    self.started.add(event.agent_id)
            if batch and batch[-1].sequence is not None:
                self.after = batch[-1].sequence
            if len(batch) < 5000:
                return len(self.completed)

    async def unfinished(self, limit: int = 1) -> list[TaskModel]:
        builder = self.storage.tasks.builder().where_ne("status", TaskStatus.Completed.value)
        return await self.storage.tasks.query(builder.limit(limit))


async def drain(
    url: str,
    total: int,
    logdir: Path,
    *,
    workers: int = 4,
    concurrency: int = 8,
    lease: float = 1.5,
    kill_every: float | None = 3.0,
    kill_marks: int = 0,
    deadline_s: float = 120.0,
) -> ChaosRun:
    """Run the fleet over the ``total`` tasks stored at ``url`` until every one is completed.

    Kills (``kill_every`` seconds, and ``kill_marks`` evenly spaced points of progress) stop
    as soon as everything is completed; the survivors are then stopped gracefully.
    """
    await asyncio.to_thread(logdir.mkdir, parents=True, exist_ok=True)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs: list[Proc] = []
    live: list[Proc] = []
    generation = dict.fromkeys(range(workers), 0)
    slot_of: dict[str, int] = {}

    def spawn(slot: int) -> None:
        agent = f"chaos-{slot}.{generation[slot]}"
        generation[slot] += 1
        proc = _start(url, agent, logdir, concurrency, lease)
        slot_of[agent] = slot
        procs.append(proc)
        live.append(proc)

    marks = [total * (k + 1) // (kill_marks + 1) for k in range(kill_marks)]
    kills = 0
    due = False
    started = time.monotonic()
    last_kill = last_look = started
    done_at: float | None = None
    async with init_storage(url) as storage:
        progress = _Progress(storage)

        async def report(why: str) -> ChaosFailure:
            count = await progress.poll()
            try:
                stuck = await progress.unfinished(5)
            except Exception as exc:  # the report must not hide the failure
                stuck_text = f"  (could not read them: {exc})"
            else:
                stuck_text = "\n".join(
                    f"  {t.id} {t.status} retry {t.retry_count} held by {t.assigned_to} "
                    f"lease until {t.lease_expires_at} run after {t.run_after} error {t.error}"
                    for t in stuck
                )
            logs = "\n".join(f"--- {p.agent} (pid {p.pid}, killed {p.killed}, "
                             f"exit {p.popen.poll()}):\n{_tail(p.log)}" for p in procs)  # fmt: skip
            return ChaosFailure(
                f"{why}\nafter {time.monotonic() - started:.1f}s: {count} of {total} tasks "
                f"seen completed, {kills} kills\nsome unfinished tasks:\n{stuck_text}\n{logs}"
            )

        try:
            for slot in range(workers):
                spawn(slot)
            while True:
                await asyncio.sleep(POLL_S)
                now = time.monotonic()
                for proc in live:
                    if proc.popen.poll() is not None:
                        raise await report(f"worker {proc.agent} exited on its own")
                count = await progress.poll()
                # The event count can fall short (a worker killed between a completion and
                # its event): the tasks themselves are asked too, every so often.
                if count >= total or now - last_look >= LOOK_EVERY_S:
                    last_look = now
                    if not await progress.unfinished():
                        done_at = time.monotonic()
                        break
                    failed = await storage.tasks.query(
                        storage.tasks.builder().where_eq("status", "failed").limit(1)
                    )
                    if failed:
                        task = failed[0]
                        raise await report(f"task {task.id} failed for good: {task.error}")
                if now - started > deadline_s:
                    raise await report(
                        f"the drain did not finish within its deadline of {deadline_s:g}s"
                    )
                if kill_every is not None and now - last_kill >= kill_every:
                    due = True
                if marks and count >= marks[0]:
                    marks.pop(0)
                    due = True
                working = [p for p in live if p.agent in progress.started]
                if due and working:
                    due = False
                    victim = min(working, key=lambda p: p.started)
                    victim.popen.send_signal(signal.SIGKILL)
                    victim.popen.wait(STOP_WAIT_S)
                    victim.killed = True
                    live.remove(victim)
                    kills += 1
                    last_kill = now
                    spawn(slot_of[victim.agent])
            # A replacement still starting up could not yet stop gracefully: the survivors
            # are asked to stop once each has registered (it handles signals by then).
            ready_by = time.monotonic() + STOP_WAIT_S
            while time.monotonic() < ready_by:
                await progress.poll()
                if all(p.agent in progress.started or p.popen.poll() is not None for p in live):
                    break
                await asyncio.sleep(POLL_S)
        finally:
            for proc in live:
                if proc.popen.poll() is None:
                    proc.popen.send_signal(signal.SIGTERM if done_at else signal.SIGKILL)
            for proc in live:
                try:
                    proc.popen.wait(STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done_at is not None
    return ChaosRun(
        tasks=total,
        seconds=done_at - started,
        kills=kills,
        procs=procs,
        worker_cpu_s=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    )


async def read_all(url: str) -> tuple[list[TaskModel], list[EventModel]]:
    """Every task and every event of the database."""
    async with init_storage(url) as storage:
        tasks = await storage.tasks.find_all()
        events: list[EventModel] = []
        after = 0
        while batch := await storage.read_events(after, 5000):
            events += batch
            after = batch[-1].sequence or after
            if len(batch) < 5000:
                break
    return tasks, events
