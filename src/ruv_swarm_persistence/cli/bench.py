"""``swarmdb bench``: a short throughput check of the installed package.

It runs only its own code, wherever it is started: a ``bench`` folder in the current directory
(a source checkout has one, ``make bench`` runs it) is never imported or run.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ..demo import has_data
from ..models import EventModel, TaskModel
from ..storage import Storage
from ._app import app
from ._common import (
    CliError,
    DbOption,
    JsonOption,
    cell,
    display_url,
    err,
    locate,
    open_db,
    out,
    print_json,
    run,
    table,
)


@dataclass(slots=True)
class Measurement:
    """One timed step of the built-in check."""

    name: str
    ops: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else float("inf")


async def _timed(name: str, ops: int, step: Callable[[], Awaitable[None]]) -> Measurement:
    started = time.perf_counter()
    await step()
    return Measurement(name, ops, time.perf_counter() - started)


async def _builtin(storage: Storage, n: int, tick: Callable[[str], None]) -> list[Measurement]:
    results: list[Measurement] = []

    async def sequential() -> None:
        for i in range(n):
            await storage.store_event(EventModel.new("bench.sequential", {"i": i}))

    tick("store_event, one at a time")
    results.append(await _timed("store_event, sequential", n, sequential))

    async def concurrent() -> None:
        producers = 32

        async def produce(p: int) -> None:
            for i in range(n // producers):
                await storage.store_event(EventModel.new("bench.concurrent", {"p": p, "i": i}))

        await asyncio.gather(*(produce(p) for p in range(producers)))

    tick("store_event, 32 producers")
    results.append(await _timed("store_event, 32 concurrent producers", n // 32 * 32, concurrent))

    async def batched() -> None:
        for start in range(0, n, 100):
            await storage.store_events(
                [EventModel.new("bench.batch", {"i": i}) for i in range(start, min(n, start + 100))]
            )

    tick("store_events, batches of 100")
    results.append(await _timed("store_events, batches of 100", n, batched))

    tick("storing tasks")
    tasks = [TaskModel.new("bench", {"i": i}) for i in range(n)]
    await storage.store_tasks(tasks)
    ids = [t.id for t in tasks]

    async def cycle() -> None:
        async def worker(w: int) -> None:
            while (task := await storage.claim_next_task(f"bench-{w}", ["bench"])) is not None:
                await storage.complete_task(task.id, f"bench-{w}", {"ok": True})

        await asyncio.gather(*(worker(w) for w in range(4)))

    tick("claim → complete, 4 workers")
    results.append(await _timed("claim_next_task → complete_task, 4 workers", n, cycle))

    async def reads() -> None:
        for i in range(n):
            await storage.get_task(ids[i])

    tick("get_task point reads")
    results.append(await _timed("get_task, point reads", n, reads))
    return results


@app.command()
def bench(
    ctx: typer.Context,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: a smoke run, not a result.")
    ] = False,
    builtin: Annotated[
        bool,
        # Kept so that commands written for earlier releases still run; the check is always
        # the built-in one now.
        typer.Option("--builtin", hidden=True),
    ] = False,
    ops: Annotated[
        int,
        typer.Option(
            "--ops", min=64, metavar="N", help="Operations per step of the built-in check."
        ),
    ] = 2000,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Measure throughput with a short check of this package, on any backend.

    Times event appends (sequential, 32 concurrent producers, batches), claim → complete
    with 4 workers and point reads, once each, on a new temporary SQLite file (or on --db,
    which must be empty; what it writes stays there). One run on a machine that may be busy:
    read the numbers as an order of magnitude; the repository's benchmarks (make bench in a
    source checkout) repeat runs and compare against raw drivers in the same run.
    """
    explicit = db or ctx.find_root().params.get("db")
    n = 500 if quick else ops

    async def go(url: str, must_be_empty: bool) -> tuple[str, list[Measurement]]:
        storage = await open_db(url, must_exist=False, write=True)
        try:
            if must_be_empty and await has_data(storage):
                raise CliError(
                    f"{display_url(url)} holds data; the benchmark writes thousands of rows, "
                    "so point --db at an empty database (or leave --db out for a temporary file)"
                )
            steps = 6
            with Progress(
                TextColumn("{task.description:<32}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
                disable=json or not err.is_terminal,
            ) as bar:
                task = bar.add_task("starting", total=steps)

                def tick(label: str) -> None:
                    bar.update(task, advance=1, description=label)

                results = await _builtin(storage, n, tick)
            return type(storage).__name__, results
        finally:
            await storage.close()

    if explicit:
        url = str(explicit)
        locate(url, must_exist=False)
        backend, results = run(go(url, must_be_empty=True))
        where = display_url(url)
    else:
        with tempfile.TemporaryDirectory(prefix="swarmdb-bench-") as tmp:
            backend, results = run(go(os.path.join(tmp, "bench.db"), must_be_empty=False))
        where = "a temporary SQLite file (deleted)"
    info: dict[str, Any] = {
        "database": where,
        "backend": backend,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "runs": 1,
        "results": [
            {
                "step": m.name,
                "ops": m.ops,
                "seconds": round(m.seconds, 4),
                "per_second": round(m.per_second, 1),
            }
            for m in results
        ],
    }
    if json:
        print_json(info)
        return
    t = table(
        f"{backend} on {where}: one run, {os.cpu_count()} CPUs, Python {info['python']}",
        "step",
        "operations",
        "seconds",
        "per second",
    )
    for m in results:
        t.add_row(
            cell(m.name), cell(f"{m.ops:,}"), cell(f"{m.seconds:.3f}"), cell(f"{m.per_second:,.0f}")
        )
    out.print(t)
    err.print("one run on a possibly busy machine: an order of magnitude, not a benchmark result")
