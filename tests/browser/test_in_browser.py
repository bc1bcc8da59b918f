"""IndexedDBStorage in a real browser: headless Chromium, Pyodide, IndexedDB.

The core of the conformance suite runs inside the page against the real IndexedDB; then what
was committed is found again after a reload and after a restart of the browser on the same
profile; and a page that crashes in the middle of a write load leaves every transaction whole
or absent, with every write it acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import harness
from tests.browser.conftest import BrowserSite

#: The suite's modules run in the page: agents, tasks (dependencies, claims, leases),
#: events, messages, metrics, transactions.
CORE_MODULES = [
    "agents",
    "tasks",
    "task_lifecycle",
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
def suite_page(
    browser_site: BrowserSite, playwright: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One booted page for the conformance modules."""
    context = harness.launch(playwright, tmp_path_factory.mktemp("profile"), browser_site.chromium)
    try:
        page = context.new_page()
        harness.boot(page, browser_site.url, suite=True)
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("module", CORE_MODULES)
def test_conformance_in_the_page(suite_page: Any, module: str) -> None:
    report = harness.call(suite_page, f"await run_suite({[module]!r})")
    failures = "\n\n".join(f"{test_id}\n{detail}" for test_id, detail in report["failed"])
    assert not report["failed"], f"{len(report['failed'])} failed in the page:\n{failures}"
    assert report["passed"] > 10
    # Every case runs: only those a browser cannot take would be skipped, and none is.
    assert report["skipped"] == []


def test_committed_writes_survive_a_reload_and_a_browser_restart(
    browser_site: BrowserSite, playwright: Any, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    context = harness.launch(playwright, profile, browser_site.chromium)
    try:
        page = context.new_page()
        harness.boot(page, browser_site.url)
        written = harness.call(page, "await write_swarm('kept')")
        assert len(written["agents"]) == 2
        assert len(written["events"]) == 51
        page.reload()
        harness.boot(page, browser_site.url)
        assert harness.call(page, "await swarm_snapshot('kept')") == written
    finally:
        context.close()
    # Same profile, same origin (host and port): a new browser process finds it all.
    context = harness.launch(playwright, profile, browser_site.chromium)
    try:
        page = context.new_page()
        harness.boot(page, browser_site.url)
        assert harness.call(page, "await swarm_snapshot('kept')") == written
        assert harness.call(page, "await delete_swarm('kept')") is True
        guards = harness.call(page, "await pyodide_guards()")
    finally:
        context.close()
    # What cannot run in a browser says so, in the browser, with what to use instead.
    assert guards["default"] == ["IndexedDBStorage", "swarm"]
    assert guards["swarm.db"] == (
        "the sqlite backend does not run in a browser (Pyodide): use indexeddb://NAME, kept in "
        "IndexedDB, or memory:// instead"
    )
    assert "the postgresql backend does not run in a browser" in guards["postgresql://u@h/db"]
    assert "use the async API there" in guards["sync"]
    assert guards["swarmdb"] == 1


def test_the_browser_example_runs_its_swarm(
    browser_site: BrowserSite, playwright: Any, tmp_path: Path
) -> None:
    context = harness.launch(playwright, tmp_path / "profile", browser_site.chromium)
    try:
        page = context.new_page()
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
        context.close()
    assert status.startswith("round 1 done: {")
    assert '"documents": 4' in status
    assert tasks.count("completed") == 9
    assert agents.count("browser-worker-") == 3
    assert "round.finished" in events


def test_a_page_crashed_mid_write_leaves_whole_transactions(
    browser_site: BrowserSite, playwright: Any, tmp_path: Path
) -> None:
    context = harness.launch(playwright, tmp_path / "profile", browser_site.chromium)
    try:
        page = context.new_page()
        acks: list[int] = []

        def on_console(message: Any) -> None:
            if message.text.startswith("ack "):
                acks.append(int(message.text.split()[1]))

        page.on("console", on_console)
        harness.boot(page, browser_site.url)
        assert harness.call(page, "json.dumps(start_load('load'))") == "started"
        deadline = time.monotonic() + 30
        while len(acks) < 40 and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert len(acks) >= 40, "the load did not get going"
        # The renderer dies at once, in the middle of whatever write it was doing.
        seen = list(acks)
        cdp = context.new_cdp_session(page)
        # The command gets no answer from a renderer that is gone: a short bound on it.
        with page.expect_event("crash"), contextlib.suppress(Exception):
            cdp.send("Page.crash", timeout=1000)
        page = context.new_page()
        harness.boot(page, browser_site.url)
        found = harness.call(page, "await check_load('load')")
    finally:
        context.close()
    assert found["partial"] == [], "a transaction or a batch was cut"
    assert set(seen) <= set(found["units"]), "an acknowledged write was lost"
    assert found["sequences_increase"]
    # Units are written one after the other: what survived is a prefix of them.
    assert found["units"] == list(range(len(found["units"])))
    assert json.dumps(found)  # reported on failure
