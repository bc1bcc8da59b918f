"""The claim path with queue controls beside the same load without them.

Rows (``--only`` keys): ``sqlite``, ``pg``. Each drains ``M`` independent tasks (SQLite 5,000,
PostgreSQL 2,000) with 4 coroutines on one storage, ``claim_next_task`` → ``complete_task``
(``bench.common.drain``). The baseline's tasks carry no ``concurrency_key``; beside it:

* ``key``: every task carries the same ``concurrency_key``, which has no limits;
* ``key + concurrency limit``: the key has ``set_concurrency_limit("k", 64)``, never reached by
  4 workers, so every claim counts the key's held tasks (and, on PostgreSQL, takes the key's
  turn) and still claims (target: ≥ 0.8x the baseline);
* ``key + rate limit``: the key has ``set_rate_limit("k", 1_000_000, per=60)``, so every claim
  also counts and logs itself in the key's window.

Each side runs on a fresh database (SQLite: a new file in a temporary folder, WAL,
``synchronous=NORMAL``; PostgreSQL: a new schema in a database the run creates,
``$SWARM_BENCH_PG_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``); the tasks are
stored before the clock starts. Sides alternate; each keeps its best run. Every run stops at its
count and fails past a time limit.

Run: ``python -m bench.queue_controls_bench [--json] [--quick] [--repeat N] [--only KEY]``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from ruv_swarm_persistence import TaskModel, init_storage
from ruv_swarm_persistence.storage import Storage

from .common import Options, Result, Timing, best, drain, fill_ratios, main_for, timed_async
from .pg_bench import optional_database

TITLE = "Claim → complete with a concurrency key on every task, beside no keys"
WORKERS = 4
LIMIT_S = 600.0
KEY = "k"
BASELINE = "no keys"

Setup = Callable[[Storage], Awaitable[None]]


async def _nothing(storage: Storage) -> None:
    return None


async def _concurrency_limit(storage: Storage) -> None:
    await storage.set_concurrency_limit(KEY, 64)


async def _rate_limit(storage: Storage) -> None:
    await storage.set_rate_limit(KEY, 1_000_000, per=60)


#: (variant, tasks carry the key, what is set before the run)
SIDES: list[tuple[str, bool, Setup]] = [
    (BASELINE, False, _nothing),
    ("key", True, _nothing),
    ("key + concurrency limit", True, _concurrency_limit),
    ("key + rate limit", True, _rate_limit),
]


def _tasks(n: int, keyed: bool) -> list[TaskModel]:
    key = KEY if keyed else None
    return [TaskModel.new("work", {"i": i}, concurrency_key=key) for i in range(n)]


async def _one_run(url: str, total: int, keyed: bool, setup: Setup) -> Timing:
    storage = await init_storage(url)
    try:
        await setup(storage)
        await storage.store_tasks(_tasks(total, keyed))
        done = storage.complete_task
        timing = await asyncio.wait_for(
            timed_async(total, lambda: drain(storage.claim_next_task, done, total, WORKERS)),
            LIMIT_S,
        )
        left = await storage.get_pending_tasks()
        if left:
            raise RuntimeError(f"{len(left)} tasks left pending after a run that said it was done")
        return timing
    finally:
        await storage.close()


async def bench_backend(
    opts: Options, key: str, urls: Callable[[], str], total: int
) -> list[Result]:
    if not opts.wants(key):
        return []
    runs: dict[str, list[Timing]] = {variant: [] for variant, _, _ in SIDES}
    for _ in range(opts.repeat):
        for variant, keyed, setup in SIDES:
            runs[variant].append(await _one_run(urls(), total, keyed, setup))
    note = f"{total:,} tasks, {WORKERS} coroutines claim_next_task → complete_task"
    return [
        Result.of(
            key,
            variant,
            best(runs[variant]),
            unit="tasks",
            baseline=None if variant == BASELINE else BASELINE,
            target="≥ 0.8x" if variant == "key + concurrency limit" else "",
            note=note if variant == BASELINE else "",
        )
        for variant, _, _ in SIDES
    ]


async def run_all(opts: Options) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="swarm-bench-queue-") as tmp:
        files = iter(range(1, 1_000_000))
        results += await bench_backend(
            opts, "sqlite", lambda: str(Path(tmp) / f"{next(files):03d}.db"),
            opts.scale(5_000, 300),
        )  # fmt: skip
    if opts.wants("pg"):
        async with optional_database("queue_controls_bench") as pg_url:
            if pg_url is not None:
                schemas = iter(range(1, 1_000_000))
                results += await bench_backend(
                    opts, "pg", lambda: f"{pg_url}?schema=q{next(schemas):03d}",
                    opts.scale(2_000, 200),
                )  # fmt: skip
    return fill_ratios(results)


def run(opts: Options) -> tuple[str, list[Result]]:
    """Run the module; returns its title and rows."""
    return TITLE, asyncio.run(run_all(opts))


def _main(argv: Sequence[str] | None = None) -> int:
    return main_for(run, "python -m bench.queue_controls_bench", argv)


if __name__ == "__main__":
    raise SystemExit(_main())
