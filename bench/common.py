"""What every benchmark module shares: timing, percentiles, result rows, tables and JSON.

A benchmark compares a *subject* (the library) with one or more *baselines* run in the same
process and the same run, on the same input. Runs alternate subject and baseline so that a
burst of noise on the shared machine hits both; each side keeps its best run. Besides the
wall-clock ratio, tables show the ratio of CPU time (the process's, all threads): on a
machine others load too it moves less, though it hides time spent waiting for the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ruv_swarm_persistence.models import TaskModel

__all__ = [
    "Claim",
    "Complete",
    "Options",
    "Result",
    "Timing",
    "best",
    "drain",
    "latencies",
    "make_tasks",
    "main_for",
    "parse_args",
    "percentile",
    "print_results",
    "ratio_text",
    "results_json",
    "timed",
    "timed_async",
]


@dataclass(slots=True)
class Options:
    """Command-line options every benchmark module understands."""

    json: bool = False
    quick: bool = False
    repeat: int = 3
    only: list[str] = field(default_factory=list)

    def scale(self, full: int, quick: int) -> int:
        """``full`` normally, ``quick`` with ``--quick`` (a smoke run)."""
        return quick if self.quick else full

    def wants(self, key: str) -> bool:
        """True when ``--only`` is empty or names this benchmark or its group.

        ``a`` or ``sqlite.a`` select ``a``; ``events`` selects ``events.seq``, ``events.64``, …
        """
        return not self.only or any(
            key == o or key.endswith("." + o) or key.startswith(o + ".") for o in self.only
        )


def parse_args(argv: Sequence[str] | None = None, prog: str = "python -m bench") -> Options:
    """Parse the shared options."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a result")
    p.add_argument("--repeat", type=int, default=3, help="runs per side; the best is kept")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY",
        help="run only these benchmarks (memory, sqlite, sqlite.a, ...); repeatable",
    )
    ns = p.parse_args(argv)
    return Options(json=ns.json, quick=ns.quick, repeat=max(1, ns.repeat), only=ns.only)


@dataclass(slots=True)
class Timing:
    """One measured run: ``ops`` operations in ``seconds``, optional per-op latencies (s)."""

    ops: int
    seconds: float
    samples: list[float] | None = None
    cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        """Operations per second (wall clock)."""
        return self.ops / self.seconds if self.seconds > 0 else math.inf

    @property
    def cpu_rate(self) -> float | None:
        """Operations per second of this process's CPU time (all its threads)."""
        if not self.cpu_seconds:
            return None
        return self.ops / self.cpu_seconds


@dataclass(slots=True)
class Result:
    """One row of a benchmark table.

    ``baseline`` names the row (same ``bench``) the ratio is taken against; ``None`` for a
    baseline itself. ``target`` is the goal written next to the ratio, as text.
    """

    bench: str
    variant: str
    ops: int
    seconds: float
    ops_per_s: float
    cpu_ops_per_s: float | None = None
    unit: str = "ops"
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    baseline: str | None = None
    ratio: float | None = None
    cpu_ratio: float | None = None
    target: str = ""
    note: str = ""

    @classmethod
    def of(
        cls,
        bench: str,
        variant: str,
        timing: Timing,
        *,
        unit: str = "ops",
        baseline: str | None = None,
        target: str = "",
        note: str = "",
    ) -> Result:
        """A row from a :class:`Timing` (latency columns filled when it has samples)."""
        r = cls(
            bench=bench,
            variant=variant,
            ops=timing.ops,
            seconds=timing.seconds,
            ops_per_s=timing.rate,
            cpu_ops_per_s=timing.cpu_rate,
            unit=unit,
            baseline=baseline,
            target=target,
            note=note,
        )
        if timing.samples:
            lat = latencies(timing.samples)
            r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms = (
                lat["p50"],
                lat["p99"],
                lat["p99.9"],
                lat["max"],
            )
        return r


# --- workloads shared by the backends' benchmarks -----------------------------------------


def make_tasks(n: int) -> list[TaskModel]:
    """``n`` tasks; every odd one depends on the one before it."""
    tasks: list[TaskModel] = []
    for i in range(n):
        deps = [tasks[i - 1].id] if i % 2 else []
        tasks.append(TaskModel.new("work", {"i": i}, dependencies=deps))
    return tasks


Claim = Callable[[str], Awaitable[TaskModel | None]]
Complete = Callable[[str, str], Awaitable[TaskModel]]


async def drain(claim: Claim, complete: Complete, total: int, workers: int = 4) -> int:
    """``workers`` coroutines claim and complete until ``total`` tasks are done."""
    done = 0

    async def worker(w: int) -> None:
        nonlocal done
        agent = f"worker-{w}"
        while done < total:
            task = await claim(agent)
            if task is None:
                await asyncio.sleep(0)
                continue
            await complete(task.id, agent)
            done += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return done


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``0 < p <= 100``) of ascending values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latencies(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / p99.9 / max of latencies given in seconds, in milliseconds."""
    s = sorted(samples_s)
    return {
        "p50": percentile(s, 50) * 1e3,
        "p99": percentile(s, 99) * 1e3,
        "p99.9": percentile(s, 99.9) * 1e3,
        "max": s[-1] * 1e3 if s else math.nan,
    }


def timed(ops: int, fn: Callable[[], object]) -> Timing:
    """Run ``fn`` once (it performs ``ops`` operations) and time it, garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        return Timing(ops, time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
    finally:
        gc.enable()


async def timed_async(ops: int, fn: Callable[[], Awaitable[object]]) -> Timing:
    """Await ``fn()`` once (it performs ``ops`` operations) and time it, collector off."""
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        await fn()
        return Timing(ops, time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
    finally:
        gc.enable()


def best(timings: Sequence[Timing]) -> Timing:
    """The fastest run (the least disturbed on a shared machine)."""
    return max(timings, key=lambda t: t.rate)


def fill_ratios(results: list[Result]) -> list[Result]:
    """Set each row's ``ratio`` against the row its ``baseline`` names."""
    by_key = {(r.bench, r.variant): r for r in results}
    for r in results:
        if r.baseline is not None:
            base = by_key.get((r.bench, r.baseline))
            if base is not None and base.ops_per_s > 0:
                r.ratio = r.ops_per_s / base.ops_per_s
            if base is not None and base.cpu_ops_per_s and r.cpu_ops_per_s:
                r.cpu_ratio = r.cpu_ops_per_s / base.cpu_ops_per_s
    return results


def ratio_text(ratio: float | None) -> str:
    """``0.93x``, or an empty cell."""
    return "" if ratio is None else f"{ratio:.2f}x"


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def print_results(title: str, results: Sequence[Result], *, file: Any = None) -> None:
    """Draw the results as a rich table (to stderr when JSON goes to stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, width=150)
    with_latency = any(r.p50_ms is not None for r in results)
    notes = [f"{r.bench}: {r.note}" for r in results if r.note]
    table = Table(title=title, caption="\n".join(notes) or None, caption_justify="left")
    table.add_column("bench")
    table.add_column("variant")
    table.add_column("rate", justify="right")
    if with_latency:
        for name in ("p50 ms", "p99 ms", "p99.9 ms"):
            table.add_column(name, justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("cpu ratio", justify="right")
    table.add_column("target")
    last = None
    for r in results:
        if last is not None and r.bench != last:
            table.add_section()
        last = r.bench
        cells = [r.bench, r.variant, f"{r.ops_per_s:,.0f} {r.unit}/s"]
        if with_latency:
            cells += [_num(r.p50_ms), _num(r.p99_ms), _num(r.p999_ms)]
        cells += [ratio_text(r.ratio), ratio_text(r.cpu_ratio), r.target]
        table.add_row(*cells)
    console.print(table)


def results_json(title: str, results: Sequence[Result], machine: dict[str, Any]) -> str:
    """The results as JSON (one object per table)."""
    return json.dumps(
        {"title": title, "machine": machine, "results": [asdict(r) for r in results]},
        indent=2,
        allow_nan=False,
        default=str,
    )


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os
    import platform

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import apsw

        info["sqlite"] = apsw.sqlite_lib_version()
        info["apsw"] = apsw.apswversion()
    except ImportError:  # pragma: no cover - apsw is a default dependency
        pass
    return info


def main_for(
    run: Callable[[Options], tuple[str, list[Result]]],
    prog: str,
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of one benchmark module: parse, run, print the table (and JSON)."""
    opts = parse_args(argv, prog=prog)
    title, results = run(opts)
    print_results(title, results, file=sys.stderr if opts.json else None)
    if opts.json:
        print(results_json(title, results, machine_info()))
    return 0
