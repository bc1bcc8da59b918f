"""The browser backend in headless Chromium, beside raw IndexedDB in the same page.

Run by hand (it needs Debian's chromium and Pyodide: ``make browser-deps``)::

    python -m bench.browser_bench [--quick] [--repeat N] [--json]

It serves the library's wheel and Pyodide as the browser tests do (``tests/browser/harness``),
boots a page on a fresh profile and measures boot time (cold, then after a reload), then runs
``bench/browser_page.py`` in the page: writes from 64 producers and in one batch, and reads,
each beside raw IndexedDB doing the same from Python in the same page (see that module).

Targets: 64 producers at least 20x raw IndexedDB with one awaited transaction per record (group
commit); ``store_events`` at least 0.5x raw batched puts.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.browser import harness

from .common import Options, Result, Timing, fill_ratios, main_for

TITLE = "Browser: IndexedDBStorage under Pyodide in headless Chromium, beside raw IndexedDB"
HERE = Path(__file__).resolve().parent

#: Targets, written beside the library's rows.
TARGETS = {"store_event, 64 producers": "≥ 20x", "store_events(": "≥ 0.5x"}


def _measure(opts: Options) -> tuple[list[float], list[list[Any]]]:
    from playwright.sync_api import sync_playwright

    chromium = harness.find_chromium()
    pyodide = harness.fetch_pyodide()
    with tempfile.TemporaryDirectory(prefix="browser-bench-") as tmp:
        root = Path(tmp)
        wheel = harness.build_wheel(root / "built")
        site = harness.site(root / "site", pyodide, wheel, [], harness.HERE / "page.html")
        with harness.serve(site) as url, sync_playwright() as p:
            context = harness.launch(p, root / "profile", chromium)
            try:
                page = context.new_page()
                boots = [harness.boot(page, url)]
                page.reload()
                boots.append(harness.wait_booted(page))
                source = (HERE / "browser_page.py").read_text()
                code = f"{source}\nawait run(quick={opts.quick}, repeat={opts.repeat})"
                timings = harness.call(page, code, timeout_ms=1_800_000)
            finally:
                context.close()
    return boots, timings


def run(opts: Options) -> tuple[str, list[Result]]:
    """Measure in the page; the table rows."""
    boots, rows = _measure(opts)
    # Pyodide, the wheel and the library imported: on a fresh profile, then after a reload.
    title = f"{TITLE} (boot: {boots[0] / 1000:.1f} s cold, {boots[1] / 1000:.1f} s reloaded)"
    results = []
    for bench, variant, baseline, ops, seconds in rows:
        target = next((t for prefix, t in TARGETS.items() if variant.startswith(prefix)), "")
        unit = "reads" if bench == "reads" else "events"
        results.append(
            Result.of(
                bench, variant, Timing(ops, seconds), unit=unit, baseline=baseline, target=target
            )
        )
    return title, fill_ratios(results)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.browser_bench``."""
    try:
        return main_for(run, "python -m bench.browser_bench", argv)
    except harness.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
