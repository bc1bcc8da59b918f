"""The dashboard in headless Chromium: how long each page takes to show its numbers, and how
long an event committed by another process takes to appear in the live tail.

Run by hand (it needs Debian's chromium: ``make browser-deps``)::

    python -m bench.dashboard_bench [--quick] [--repeat N] [--json]

It runs the demo into a fresh SQLite file (2,000 tasks; 160 with ``--quick``), serves it with
``swarmdb serve`` and opens each page in a fresh browser context, 3 times per ``--repeat``:

- page load: from the start of the navigation until the page has drawn what the API returned
  (``body[data-ready]``), beside the baseline of loading one static file from the same server
  (the floor of a navigation there);
- live tail: a writer process commits 40 events (10 with ``--quick``), 50 ms apart, while the
  events page follows the tail; each event's delay is the time it appeared in the page minus the
  time its commit returned in the writer. The baseline is a process following the same database
  with ``Storage.subscribe()`` itself (what the server's tail is driven by), on the same writes.

Ratios are rates against the baseline (below 1: slower than it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.browser import harness

from .common import Options, Result, Timing, fill_ratios, main_for

TITLE = "Dashboard: page loads and the live tail in headless Chromium"
PAGES = {
    "overview": "/",
    "agents": "/agents",
    "tasks": "/tasks",
    "events": "/events",
    "messages": "/messages",
    "metrics": "/charts",
}
STATIC = "/static/vendor/uPlot.LICENSE.txt"
WAIT_MS = 60_000

#: Commits events ``argv[2]`` times, 50 ms apart; prints "sequence epoch-ms" per commit.
WRITER = """
import asyncio, sys, time
from ruv_swarm_persistence import init_storage, EventModel
async def main():
    async with await init_storage(sys.argv[1]) as storage:
        for i in range(int(sys.argv[2])):
            await asyncio.sleep(0.05)
            seq = await storage.store_event(EventModel.new("bench.probe", {"i": i}))
            print(seq, time.time() * 1000, flush=True)
asyncio.run(main())
"""
#: Follows the database with subscribe(); prints "sequence epoch-ms" per event received.
SUBSCRIBER = """
import asyncio, sys, time
from ruv_swarm_persistence import init_storage
async def main():
    async with await init_storage(sys.argv[1]) as storage:
        after = (await storage.read_events(0, 10**9))[-1].sequence
        print("ready", flush=True)
        seen = 0
        async for e in storage.subscribe(after):
            print(e.sequence, time.time() * 1000, flush=True)
            seen += 1
            if seen == int(sys.argv[2]):
                return
asyncio.run(main())
"""


def _lines(text: str) -> dict[int, float]:
    return {int(a): float(b) for a, b in (line.split() for line in text.splitlines() if line)}


@contextmanager
def _served(path: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ruv_swarm_persistence", "serve", "--db", str(path), "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"on (http://\S+)/ ", line)
        if not found:
            raise RuntimeError(f"swarmdb serve did not start: {line}")
        yield found.group(1)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def _load_ms(browser: Any, url: str, path: str, ready: bool) -> float:
    """One navigation in a fresh context: ms until the page is ready (or loaded)."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(url + path, wait_until="load")
        if ready:
            page.wait_for_selector("body[data-ready=true]")
        ms: float = page.evaluate("performance.now()")
        return ms
    finally:
        context.close()


def _tail(browser: Any, url: str, path: Path, count: int) -> tuple[list[float], list[float]]:
    """Delays (ms) of ``count`` events: in the page, and in a subscribe() process."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(url + "/events")
        page.wait_for_selector("#live-state.on")
        follower = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, str(path), str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        assert follower.stdout.readline().strip() == "ready"
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, str(path), str(count)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        committed = _lines(writer.stdout)
        followed = _lines(follower.communicate(timeout=120)[0])
        in_page = []
        for seq, at in committed.items():
            row = page.locator(f'#events tr[data-sequence="{seq}"]')
            row.wait_for()
            in_page.append(float(row.get_attribute("data-received") or "nan") - at)
        return in_page, [followed[seq] - at for seq, at in committed.items()]
    finally:
        context.close()


def _timing(samples_ms: Sequence[float]) -> Timing:
    seconds = [max(s, 0.0) / 1000 for s in samples_ms]
    return Timing(len(seconds), sum(seconds) or 1e-9, samples=seconds)


def run(opts: Options) -> tuple[str, list[Result]]:
    """Measure; the table rows."""
    from playwright.sync_api import sync_playwright

    chromium = harness.find_chromium()
    runs = max(1, opts.repeat) * 3
    loads: dict[str, list[float]] = {name: [] for name in [*PAGES, "static file"]}
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        path = Path(tmp) / "swarm.db"
        tasks = opts.scale(2000, 160)
        subprocess.run(
            [sys.executable, "-m", "ruv_swarm_persistence", "demo", "--tasks", str(tasks),
             "--db", str(path), "--json"],
            check=True, capture_output=True, timeout=1200,
        )  # fmt: skip
        with _served(path) as url, sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, headless=True, args=harness.CHROMIUM_ARGS
            )
            try:
                _load_ms(browser, url, "/", ready=True)  # warm the server's first read
                for _ in range(runs):
                    # Alternated, so that a burst of noise hits the baseline as well.
                    loads["static file"].append(_load_ms(browser, url, STATIC, ready=False))
                    for name, page_path in PAGES.items():
                        loads[name].append(_load_ms(browser, url, page_path, ready=True))
                in_page, subscribed = _tail(browser, url, path, opts.scale(40, 10))
            finally:
                browser.close()
    results = [Result.of("page load", "static file", _timing(loads["static file"]), unit="loads")]
    for name in PAGES:
        results.append(
            Result.of("page load", name, _timing(loads[name]), unit="loads",
                      baseline="static file")
        )  # fmt: skip
    results.append(
        Result.of("live tail", "subscribe() in a process", _timing(subscribed), unit="events")
    )
    results.append(
        Result.of("live tail", "SSE in the events page", _timing(in_page), unit="events",
                  baseline="subscribe() in a process", note="delay from commit to display")
    )  # fmt: skip
    return f"{TITLE} ({tasks} demo tasks, {runs} loads per page)", fill_ratios(results)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.dashboard_bench``."""
    try:
        return main_for(run, "python -m bench.dashboard_bench", argv)
    except harness.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
