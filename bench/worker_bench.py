"""The library's ``Worker`` beside the claim/complete loop a user writes by hand, and the chaos
drain with and without its kills.

Rows (``--only`` keys):

* ``memory``, ``sqlite``, ``pg``: drain ``M`` independent tasks (memory 20,000, SQLite 5,000,
  PostgreSQL 2,000) with a trivial async handler (it returns a small dict) at concurrency 8, on
  one storage in this process. The baseline is
  the simplest loop a user writes by hand on the same storage: 8 coroutines, each
  ``claim_next_task`` → ``start_task`` → the handler → ``complete_task``, waiting in
  ``wait_for_tasks`` when nothing is ready and returning once every task has been claimed.
  Beside it ``Worker(storage, agent, handlers, concurrency=8, events=False)``, which writes
  what the loop writes (target: ≥ 0.9x its rate), and ``Worker`` as it comes, which also
  appends a ``task.completed`` event per task. The worker is stopped (``stop()``, from
  ``on_outcome``) once it has completed the ``M`` tasks; its start and stop (registering the
  agent, its two events) are inside the time. Leases are the storage's default (30 s) on both
  sides.
* ``memory.deps``, ``sqlite.deps``, ``pg.deps``: the same with every odd task depending on
  the one before it, so both sides wait for tasks (``wait_for_tasks``) and read the results of
  dependencies: the hand-written loop calls ``get_dependency_results`` when the task has
  dependencies, as the worker does before it runs a handler.
* ``chaos.sqlite``, ``chaos.pg``: the chaos drain of ``tests/workers/chaos.py``: 4 processes of
  ``swarmdb worker`` at concurrency 8, lease 1.5 s, drain a graph of dependent tasks (four in five
  depend on earlier ones, in chains and fan-ins; 10,000 on SQLite, 2,000 on PostgreSQL, so that a
  run sees several kills). The baseline runs them undisturbed; the other row kills the
  longest-running worker with SIGKILL every 3 s and starts a replacement at once. What a kill costs
  depends on what it hits, so the rows' note lists every run, not only the best, and how many kills
  each saw. The rate is tasks over the span from the first task started to the last one completed
  (process start-up left out); the CPU ratio counts the worker processes' CPU time, killed ones
  included. Run from the repository's root (it imports ``tests.workers``).

Each side runs on a fresh database (SQLite: a new file in a temporary folder, WAL,
``synchronous=NORMAL``; PostgreSQL: a new schema in a database the run creates,
``$SWARM_BENCH_PG_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``). Sides alternate;
each keeps its best run. Every run stops at its count and fails past a time limit.

Run: ``python -m bench.worker_bench [--json] [--quick] [--repeat N] [--only KEY]``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from ruv_swarm_persistence import MemoryStorage, TaskModel, Worker, init_storage
from ruv_swarm_persistence.storage import Storage
from ruv_swarm_persistence.worker import Outcome, TaskContext, TaskReport

from .common import Options, Result, Timing, best, fill_ratios, timed_async
from .pg_bench import optional_database

TITLE = "Worker vs a hand-written claim/complete loop, and the chaos drain with and without kills"
CONCURRENCY = 8
TASK_TYPE = "work"
#: A run of one side that takes longer than this fails.
LIMIT_S = 300.0
#: The chaos drain: kill a worker process this often.
KILL_EVERY_S = 3.0
CHAOS_WORKERS = 4
CHAOS_LEASE_S = 1.5

HAND = "hand-written: 8 x claim → start → complete"
HAND_DEPS = "hand-written: 8 x claim → start → dependency results → complete"
WORKER_BARE = "Worker(concurrency=8, events=False)"
WORKER = "Worker(concurrency=8), an event per task"
CALM = "4 workers x 8, no kills"
KILLED = f"4 workers x 8, one SIGKILLed every {KILL_EVERY_S:g} s"


def sizes(opts: Options, backend: str) -> int:
    """Tasks per run of the Worker / hand-written loop rows."""
    full, quick = {"memory": (20_000, 1_000), "sqlite": (5_000, 500), "pg": (2_000, 200)}[backend]
    return opts.scale(full, quick)


def chaos_size(opts: Options, backend: str) -> int:
    # Long enough that a run sees several kills (one every KILL_EVERY_S).
    full, quick = {"sqlite": (10_000, 300), "pg": (2_000, 150)}[backend]
    return opts.scale(full, quick)


def make_tasks(n: int, deps: bool) -> list[TaskModel]:
    """``n`` tasks of one type; with ``deps`` every odd one depends on the one before it."""
    tasks: list[TaskModel] = []
    for i in range(n):
        after = [tasks[i - 1].id] if deps and i % 2 else []
        tasks.append(TaskModel.new(TASK_TYPE, {"i": i}, dependencies=after))
    return tasks


# --- the two loops ---------------------------------------------------------------------------


async def handle(task: TaskModel) -> Any:
    """The hand-written loop's handler: trivial."""
    return {"ok": True}


async def worker_handler(task: TaskModel, ctx: TaskContext) -> Any:
    """The same handler for the Worker."""
    return {"ok": True}


async def hand_loop(storage: Storage, total: int, deps: bool) -> int:
    """8 coroutines claim, start, run the handler and complete until every task is claimed."""
    agent, types = "hand", [TASK_TYPE]
    claimed = 0
    done = 0
    # Not part of the user's loop, which runs for ever: the benchmark's end. A coroutine
    # waiting for tasks when the last one is claimed elsewhere stops waiting.
    all_claimed = asyncio.get_running_loop().create_future()

    async def idle() -> None:
        waiting = asyncio.ensure_future(storage.wait_for_tasks(5.0, types))
        await asyncio.wait({waiting, all_claimed}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()

    async def one() -> None:
        nonlocal claimed, done
        while True:
            task = await storage.claim_next_task(agent, types)
            if task is None:
                if claimed >= total:
                    return
                await idle()
                continue
            claimed += 1
            if claimed >= total and not all_claimed.done():
                all_claimed.set_result(None)
            await storage.start_task(task.id, agent)
            if deps and task.dependencies:
                await storage.get_dependency_results(task.id)
            result = await handle(task)
            await storage.complete_task(task.id, agent, result)
            done += 1

    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return done


async def worker_run(storage: Storage, total: int, events: bool) -> int:
    """A Worker at concurrency 8, stopped once it has completed ``total`` tasks."""
    done = 0
    worker: Worker

    def counted(report: TaskReport) -> None:
        nonlocal done
        if report.outcome is Outcome.Completed:
            done += 1
            if done >= total:
                worker.stop()

    worker = Worker(
        storage,
        "worker",
        {TASK_TYPE: worker_handler},
        concurrency=CONCURRENCY,
        events=events,
        on_outcome=counted,
    )
    await worker.run()
    return done


# --- backends --------------------------------------------------------------------------------


class Backend:
    """Fresh storages of one kind, one per run."""

    name = ""

    async def open(self) -> Storage:
        raise NotImplementedError

    async def close(self) -> None:
        """Drop whatever the runs left behind."""


class MemoryBackend(Backend):
    name = "memory"

    async def open(self) -> Storage:
        return MemoryStorage()


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="swarm-bench-worker-")
        self._n = 0

    def url(self) -> str:
        self._n += 1
        return str(Path(self._tmp.name) / f"{self._n:03d}.db")

    async def open(self) -> Storage:
        return await init_storage(self.url())

    async def close(self) -> None:
        self._tmp.cleanup()


class PgBackend(Backend):
    name = "pg"

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._n = 0

    def url(self) -> str:
        self._n += 1
        return f"{self.database_url}?schema=w{self._n:03d}"

    async def open(self) -> Storage:
        return await init_storage(self.url())


async def _one_run(
    backend: Backend, total: int, deps: bool, side: Callable[[Storage], Awaitable[int]]
) -> Timing:
    storage = await backend.open()
    try:
        await storage.store_tasks(make_tasks(total, deps))
        timing = await asyncio.wait_for(timed_async(total, lambda: side(storage)), LIMIT_S)
        left = await storage.get_pending_tasks()
        if left:
            raise RuntimeError(f"{len(left)} tasks left pending after a run that said it was done")
        return timing
    finally:
        await storage.close()


async def bench_loops(opts: Options, backend: Backend, deps: bool) -> list[Result]:
    key = backend.name + (".deps" if deps else "")
    if not opts.wants(key):
        return []
    total = sizes(opts, backend.name)
    base = HAND_DEPS if deps else HAND

    async def hand(storage: Storage) -> int:
        return await hand_loop(storage, total, deps)

    async def bare(storage: Storage) -> int:
        return await worker_run(storage, total, events=False)

    async def full(storage: Storage) -> int:
        return await worker_run(storage, total, events=True)

    sides = (hand, bare, full)
    runs: list[list[Timing]] = [[] for _ in sides]
    for _ in range(opts.repeat):
        for i, side in enumerate(sides):
            runs[i].append(await _one_run(backend, total, deps, side))
    shape = "every odd one depending on the one before" if deps else "independent"
    note = f"{total:,} tasks, {shape}; a trivial async handler; concurrency 8"
    return [
        Result.of(key, base, best(runs[0]), unit="tasks", note=note),
        Result.of(key, WORKER_BARE, best(runs[1]), unit="tasks", baseline=base, target="≥ 0.9x"),
        Result.of(key, WORKER, best(runs[2]), unit="tasks", baseline=base),
    ]


# --- the chaos drain -------------------------------------------------------------------------


async def _chaos_run(
    url: str, total: int, kill_every: float | None, logdir: Path
) -> tuple[Timing, int]:
    """One drain; its timing and how many workers were killed."""
    from tests.workers import chaos

    async with init_storage(url) as storage:
        await chaos.store_graph(storage, chaos.make_graph(total))
    run = await chaos.drain(
        url,
        total,
        logdir,
        workers=CHAOS_WORKERS,
        lease=CHAOS_LEASE_S,
        kill_every=kill_every,
        deadline_s=LIMIT_S,
    )
    tasks, _ = await chaos.read_all(url)
    first = min(t.started_at for t in tasks if t.started_at is not None)
    last = max(t.completed_at for t in tasks if t.completed_at is not None)
    timing = Timing(total, (last - first).total_seconds(), cpu_seconds=run.worker_cpu_s)
    return timing, run.kills


async def bench_chaos(
    opts: Options, backend: str, urls: Callable[[], str], logdir: Path
) -> list[Result]:
    key = f"chaos.{backend}"
    if not opts.wants(key):
        return []
    total = chaos_size(opts, backend)
    calm: list[Timing] = []
    killed: list[tuple[Timing, int]] = []
    for _ in range(opts.repeat):
        calm.append((await _chaos_run(urls(), total, None, logdir / f"{key}-calm"))[0])
        killed.append(await _chaos_run(urls(), total, KILL_EVERY_S, logdir / f"{key}-kills"))
    # A kill's cost depends on what it hits, so every run is shown, not only the best.
    each_calm = ", ".join(f"{t.rate:,.0f}" for t in calm)
    each_killed = ", ".join(f"{t.rate:,.0f} ({k} kills)" for t, k in killed)
    note = (
        f"{total:,} dependent tasks, 4 swarmdb worker processes x 8, lease {CHAOS_LEASE_S:g} s; "
        f"cpu = the worker processes'; every run in tasks/s: no kills {each_calm}; "
        f"kills {each_killed}"
    )
    return [
        Result.of(key, CALM, best(calm), unit="tasks", note=note),
        Result.of(key, KILLED, best([t for t, _ in killed]), unit="tasks", baseline=CALM),
    ]


# --- the run ---------------------------------------------------------------------------------


async def run_all(opts: Options) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="swarm-bench-chaos-") as tmp:
        logdir = Path(tmp)
        memory = MemoryBackend()
        for deps in (False, True):
            results += await bench_loops(opts, memory, deps)
        sqlite = SqliteBackend()
        try:
            for deps in (False, True):
                results += await bench_loops(opts, sqlite, deps)
            results += await bench_chaos(opts, "sqlite", sqlite.url, logdir)
        finally:
            await sqlite.close()
        wants_pg = any(opts.wants(k) for k in ("pg", "pg.deps", "chaos.pg"))
        if wants_pg:
            async with optional_database("worker_bench") as pg_url:
                if pg_url is not None:
                    pg = PgBackend(pg_url)
                    for deps in (False, True):
                        results += await bench_loops(opts, pg, deps)
                    results += await bench_chaos(opts, "pg", pg.url, logdir)
    return fill_ratios(results)


def run(opts: Options) -> tuple[str, list[Result]]:
    """Run the module; returns its title and rows."""
    return TITLE, asyncio.run(run_all(opts))


def _main(argv: Sequence[str] | None = None) -> int:
    from .common import machine_info, parse_args, print_results, results_json

    opts = parse_args(argv, prog="python -m bench.worker_bench")
    started = time.perf_counter()
    title, results = run(opts)
    print_results(title, results, file=sys.stderr if opts.json else None)
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if opts.json:
        print(results_json(title, results, machine_info()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
