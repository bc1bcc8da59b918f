"""IndexedDBStorage in a real browser: headless Chromium, Pyodide, IndexedDB.

The core of the conformance suite runs inside the page against the real IndexedDB; the
browser example runs its swarm; and what was committed is found again after a reload, after a
crash of the page in the middle of a write load (which leaves every transaction whole or
absent, with every write it acknowledged) and after a restart of the browser on the same
profile.

Every boot of Pyodide takes seconds: the suite's page and the example share one browser (the
second boot reuses the compiled WebAssembly), and the persistence test goes through its steps
in one sequence of pages rather than one browser per step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import harness
from tests.browser.conftest import BrowserSite

#: The suite's modules run in the page: agents, tasks (dependencies, claims, leases, batches),
#: dead letters, retention, events, messages, metrics, transactions.
CORE_MODULES = [
    "agents",
    "tasks",
    "task_lifecycle",
    "batch_tasks",
    "dead_letters",
    "retention",
    "events",
    "messages",
    "metrics",
    "transactions",
]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(
    browser_site: BrowserSite, playwright: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One browser, on a profile of its own, for the suite's page and the example."""
    context = harness.launch(playwright, tmp_path_factory.mktemp("profile"), browser_site.chromium)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def suite_page(browser_site: BrowserSite, browser: Any) -> Any:
    """One booted page for the conformance modules."""
    page = browser.new_page()
    harness.boot(page, browser_site.url, suite=True)
    return page


@pytest.mark.parametrize("module", CORE_MODULES)
def test_conformance_in_the_page(suite_page: Any, module: str) -> None:
    report = harness.call(suite_page, f"await run_suite({[module]!r})")
    failures = "\n\n".join(f"{test_id}\n{detail}" for test_id, detail in report["failed"])
    assert not report["failed"], f"{len(report['failed'])} failed in the page:\n{failures}"
    assert report["passed"] > 10
    # Every case runs: only those a browser cannot take would be skipped, and none is.
    assert report["skipped"] == []


def test_the_browser_example_runs_its_swarm(browser_site: BrowserSite, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(browser_site.url + "/example/")
        page.wait_for_function(
            "['done', 'failed'].includes(document.body.dataset.state)",
            timeout=harness.BOOT_TIMEOUT_MS,
        )
        status = page.inner_text("#status")
        tasks = page.inner_text("#tasks")
        agents = page.inner_text("#agents")
        events = page.inner_text("#events")
    finally:
        page.close()
    assert status.startswith("round 1 done: {")
    assert '"documents": 4' in status
    assert tasks.count("completed") == 9
    assert agents.count("browser-worker-") == 3
    assert "round.finished" in events


def test_committed_writes_survive_a_reload_a_crash_mid_write_and_a_browser_restart(
    browser_site: BrowserSite, playwright: Any, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    acks: list[int] = []

    def on_console(message: Any) -> None:
        if message.text.startswith("ack "):
            acks.append(int(message.text.split()[1]))

    context = harness.launch(playwright, profile, browser_site.chromium)
    try:
        # A swarm written through every kind of write, then the page reloaded.
        page = context.new_page()
        harness.boot(page, browser_site.url)
        written = harness.call(page, "await write_swarm('kept')")
        assert len(written["agents"]) == 2
        assert len(written["events"]) == 51
        assert len(written["limits"]) == 2
        assert len(written["schedules"]) == 2
        assert written["retention"]["removed"]["metrics"] == 2
        page.reload()
        harness.wait_booted(page)
        assert harness.call(page, "await swarm_snapshot('kept')") == written
        # The claim in the rate limit's window was kept: the key has no room left.
        assert harness.call(page, "await rate_room('kept')") is False

        # A write load (transactions and batches, each logged once acknowledged), and the
        # renderer killed in the middle of it.
        page.on("console", on_console)
        assert harness.call(page, "json.dumps(start_load('load'))") == "started"
        deadline = time.monotonic() + 30
        while len(acks) < 40 and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert len(acks) >= 40, "the load did not get going"
        seen = list(acks)
        cdp = context.new_cdp_session(page)
        # The command gets no answer from a renderer that is gone: a short bound on it.
        with page.expect_event("crash"), contextlib.suppress(Exception):
            cdp.send("Page.crash", timeout=1000)
        page = context.new_page()
        harness.boot(page, browser_site.url)
        after_crash = harness.call(page, "await check_load('load')")
        assert harness.call(page, "await swarm_snapshot('kept')") == written
    finally:
        context.close()
    assert after_crash["partial"] == [], "a transaction or a batch was cut"
    assert set(seen) <= set(after_crash["units"]), "an acknowledged write was lost"
    assert after_crash["sequences_increase"]
    # Units are written one after the other: what survived is a prefix of them.
    assert after_crash["units"] == list(range(len(after_crash["units"])))

    # Same profile, same origin (host and port): a new browser process finds it all.
    context = harness.launch(playwright, profile, browser_site.chromium)
    try:
        page = context.new_page()
        harness.boot(page, browser_site.url)
        assert harness.call(page, "await swarm_snapshot('kept')") == written
        assert harness.call(page, "await check_load('load')") == after_crash
        assert harness.call(page, "await delete_swarm('kept')") is True
        guards = harness.call(page, "await pyodide_guards()")
        newer = harness.call(page, "await newer_schema('from-the-future')")
        upgraded = harness.call(page, "await upgraded_from_version_1('from-the-past')")
    finally:
        context.close()
    assert newer == (
        "IndexedDB database 'from-the-future' has schema version 3, written by a newer version "
        "of ruv-swarm-persistence than this one (schema version 2): open it with that version"
    )
    # A database of the first layout opens with its swarm, and keeps queue controls from then.
    assert upgraded == {
        "agents": ["old-worker"],
        "limits": [{"key": "gpu", "concurrency": 3, "rate": None, "per": None}],
        "schedules": ["tick"],
    }
    # What cannot run in a browser says so, in the browser, with what to use instead.
    assert guards["default"] == ["IndexedDBStorage", "swarm"]
    assert isinstance(guards["persisted"], bool)
    assert guards["swarm.db"] == (
        "the sqlite backend does not run in a browser (Pyodide): use indexeddb://NAME, kept in "
        "IndexedDB, or memory:// instead"
    )
    assert "the postgresql backend does not run in a browser" in guards["postgresql://u@h/db"]
    # Imported directly, the same sentence.
    for name, what in [
        ("backends.sqlite", "the sqlite backend"),
        ("backends.postgres", "the postgresql backend"),
        ("SqliteStorage", "SqliteStorage"),
        ("PostgresStorage", "PostgresStorage"),
    ]:
        assert guards[name] == (
            f"{what} does not run in a browser (Pyodide): use indexeddb://NAME, kept in "
            "IndexedDB, or memory:// instead"
        )
    assert guards["IndexedDBStorage"] is True
    assert "use the async API there" in guards["sync"]
    assert guards["swarmdb"] == 1
