"""The pages in Debian's chromium on a demo database: numbers against the database, the live
tail fed by another process, the click through to a task's graph, an action confirmed.

Screenshots of every page are saved in ``.test-artifacts/dashboard/`` (git-ignored; or
``$SWARM_TEST_ARTIFACTS``), with the live tail's measured delays in ``live-tail.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from tests.browser import harness
from tests.cli.conftest import cli_env, swarmdb

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SWARM_TEST_ARTIFACTS", ROOT / ".test-artifacts")) / "dashboard"
#: Bounds each wait (ms); never an assertion about speed.
WAIT_MS = 30_000
DEMO = ["--agents", "6", "--tasks", "160", "--seed", "11"]

#: Stores one event from a process of its own and prints the time its commit returned.
WRITER = """
import asyncio, sys, time
from ruv_swarm_persistence import init_storage, EventModel
async def main():
    async with await init_storage(sys.argv[1]) as storage:
        for i in range(int(sys.argv[2])):
            await asyncio.sleep(0.3)
            seq = await storage.store_event(EventModel.new("dashboard.probe", {"i": i}))
            print(seq, time.time() * 1000, flush=True)
asyncio.run(main())
"""


def sql(path: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from the file, without the library."""
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return list(db.execute(query, args))
    finally:
        db.close()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's database, plus one agent that stopped sending heartbeats long ago."""
    path = tmp_path_factory.mktemp("dash-demo") / "swarm.db"
    made = swarmdb("demo", *DEMO, "--db", str(path))
    assert made.returncode == 0, made.describe()
    script = (
        "import asyncio, sys, datetime as d\n"
        "from ruv_swarm_persistence import init_storage, AgentModel, AgentStatus\n"
        "async def main():\n"
        "    async with await init_storage(sys.argv[1]) as s:\n"
        "        old = d.datetime.now(d.UTC) - d.timedelta(minutes=5)\n"
        "        await s.store_agent(AgentModel('watcher-1', 'watcher-1', 'watcher',\n"
        "            AgentStatus.Active, ['monitoring'], heartbeat=old))\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def server(database: Path) -> Iterator[str]:
    """``swarmdb serve --allow-actions`` on the demo database; its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ruv_swarm_persistence", "serve", "--db", str(database),
         "--port", "0", "--allow-actions"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=cli_env(),
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"on (http://\S+)/ ", line)
        assert found, line
        yield found.group(1)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (no browser is downloaded)."""
    try:
        chromium = harness.find_chromium()
        from playwright.sync_api import sync_playwright
    except (harness.Unavailable, ImportError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests are required with CI=true: {exc}", pytrace=False)
        pytest.skip(f"no browser: {exc}")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=harness.CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    """A fresh page whose console errors fail the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=server)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert errors == []


def open_page(page: Any, path: str) -> None:
    page.goto(path)
    page.wait_for_selector("body[data-ready=true]")


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def number(page: Any, selector: str) -> int:
    return int(page.locator(selector).first.inner_text().replace(",", ""))


def test_overview(page: Any, database: Path) -> None:
    open_page(page, "/")
    tasks = dict(sql(database, "SELECT status, count(*) FROM tasks GROUP BY status"))
    assert number(page, "[data-testid=tasks-total]") == sum(tasks.values()) == 160
    for status, n in tasks.items():
        assert number(page, f"[data-testid=tasks-{status}]") == n
    (agents,) = sql(database, "SELECT count(*) FROM agents")[0]
    assert number(page, "[data-testid=agents-total]") == agents
    (unread,) = sql(database, "SELECT count(*) FROM messages WHERE read = 0")[0]
    assert number(page, "[data-testid=messages-unread]") == unread
    (last,) = sql(database, "SELECT max(sequence) FROM events")[0]
    assert number(page, "[data-testid=events-last]") >= last
    shoot(page, "overview")


def test_agents_with_the_stale_one_highlighted(page: Any, database: Path) -> None:
    open_page(page, "/agents")
    rows = page.locator("#agents tbody tr")
    assert rows.count() == sql(database, "SELECT count(*) FROM agents")[0][0] == 7
    stale = page.locator("#agents tbody tr.stale")
    assert stale.count() == 1
    assert stale.first.get_attribute("data-agent") == "watcher-1"
    assert "stale" in stale.first.locator("[data-testid=status]").inner_text()
    assert number(page, "[data-testid=agents-stale]") == 1
    age = stale.first.locator("[data-testid=heartbeat-age]").inner_text()
    assert re.fullmatch(r"\d+m \d+s", age), age
    shoot(page, "agents")


def test_tasks_by_type_and_status_and_the_dead_letters(page: Any, database: Path) -> None:
    open_page(page, "/tasks")
    page.wait_for_selector("#chart-states canvas")
    for kind, status, n in sql(
        database, "SELECT task_type, status, count(*) FROM tasks GROUP BY 1, 2"
    ):
        assert number(page, f"[data-testid=count-{kind}-{status}]") == n
    (failed,) = sql(database, "SELECT count(*) FROM tasks WHERE status = 'failed'")[0]
    assert number(page, "[data-testid=dead-letters]") == failed
    assert page.locator("#dead-letters tbody tr").count() == failed
    assert page.locator("#chart-types canvas").count() == 1
    shoot(page, "tasks")


def test_click_through_to_a_task_s_graph(page: Any, database: Path) -> None:
    open_page(page, "/tasks")
    # The dead letter (the task that failed for good, whose dependents were cancelled), or once
    # it has been retried the most recently changed task: one the demo's cascade cancelled.
    dead = page.locator("#dead-letters a.id")
    link = dead.first if dead.count() else page.locator("#tasks a.id").first
    task_id = link.inner_text()
    link.click()
    page.wait_for_url(f"**/tasks/{task_id}")
    page.wait_for_selector("svg.graph g.node")
    root = page.locator("svg.graph g.node.root")
    assert root.get_attribute("data-task") == task_id
    ((status,),) = sql(database, "SELECT status FROM tasks WHERE id = ?", task_id)
    assert f"s-{status}" in (root.get_attribute("class") or "").split()
    deps = {r[0] for r in sql(database, "SELECT depends_on FROM task_dependencies "
                                        "WHERE task_id = ?", task_id)}  # fmt: skip
    dependents = {r[0] for r in sql(database, "SELECT task_id FROM task_dependencies "
                                              "WHERE depends_on = ?", task_id)}  # fmt: skip
    assert deps | dependents, "the failed task has neighbours to draw"
    shown = set(page.locator("svg.graph g.node").evaluate_all(
        "nodes => nodes.map(n => n.dataset.task)"))  # fmt: skip
    assert {task_id} | deps | dependents <= shown
    edges = set(page.locator("svg.graph path.edge").evaluate_all(
        "edges => edges.map(e => e.dataset.from + '>' + e.dataset.to)"))  # fmt: skip
    assert {f"{d}>{task_id}" for d in deps} | {f"{task_id}>{t}" for t in dependents} <= edges
    assert number(page, "[data-testid=dependencies]") == len(deps)
    assert number(page, "[data-testid=dependents]") == len(dependents)
    shoot(page, "task-graph")
    # A node is a link to its own task.
    other = sorted(deps | dependents)[0]
    page.locator(f'svg.graph g.node[data-task="{other}"]').click()
    page.wait_for_url(f"**/tasks/{other}?depth=2")
    page.wait_for_selector(f'svg.graph g.node.root[data-task="{other}"]')


def test_live_tail_shows_another_process_s_events(page: Any, database: Path) -> None:
    open_page(page, "/events")
    page.wait_for_selector("#live-state.on")
    count = 5
    writer = subprocess.run(
        [sys.executable, "-c", WRITER, str(database), str(count)],
        capture_output=True, text=True, timeout=120, check=True, env=cli_env(),
    )  # fmt: skip
    committed = dict(
        (int(seq), float(at)) for seq, at in (line.split() for line in writer.stdout.splitlines())
    )
    delays = []
    for seq, at in committed.items():
        row = page.locator(f'#events tr[data-sequence="{seq}"]')
        row.wait_for()
        assert row.get_attribute("data-type") == "dashboard.probe"
        delays.append(float(row.get_attribute("data-received") or "nan") - at)
    assert number(page, "[data-testid=received]") >= count
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "live-tail.json").write_text(json.dumps({"delays_ms": delays}, indent=1))
    shoot(page, "events")


def test_messages_unread_per_agent(page: Any, database: Path) -> None:
    open_page(page, "/messages")
    unread = dict(sql(database, "SELECT to_agent, count(*) FROM messages WHERE read = 0 "
                                "GROUP BY to_agent"))  # fmt: skip
    assert number(page, "[data-testid=total-unread]") == sum(unread.values())
    for agent, n in unread.items():
        assert number(page, f'#unread tr[data-agent="{agent}"] [data-testid=unread]') == n
    if unread:
        agent = sorted(unread)[0]
        page.locator(f'#unread tr[data-agent="{agent}"]').click()
        page.wait_for_selector("#mailbox table tbody tr")
        assert page.locator("#mailbox table tbody tr").count() == unread[agent]
    shoot(page, "messages")


def test_metrics_percentiles(page: Any, database: Path) -> None:
    open_page(page, "/charts")
    page.wait_for_selector("#metric-charts canvas")
    (name,) = sql(database, "SELECT min(metric_type) FROM metrics")[0]
    assert page.locator("#metric").input_value() == name
    (count,) = sql(database, "SELECT count(*) FROM metrics WHERE metric_type = ?", name)[0]
    # The demo ran for seconds: the default hour holds every measurement.
    assert number(page, "#metric-table [data-testid=total-count]") == count
    shoot(page, "metrics")
    page.select_option("#group", "agent")
    page.locator("#metric-table tbody tr").nth(1).wait_for()
    (agents,) = sql(database, "SELECT count(DISTINCT agent_id) FROM metrics "
                              "WHERE metric_type = ?", name)[0]  # fmt: skip
    assert page.locator("#metric-table tbody tr").count() == agents
    shoot(page, "metrics-per-agent")


def test_retry_a_dead_letter_after_confirming(page: Any, database: Path) -> None:
    failed = [r[0] for r in sql(database, "SELECT id FROM tasks WHERE status = 'failed'")]
    assert failed, "the demo leaves a task failed for good"
    open_page(page, "/tasks")
    row = page.locator(f'#dead-letters tr[data-task="{failed[0]}"]')
    row.locator("button").click()
    dialog = page.locator("dialog#confirm")
    assert failed[0] in dialog.inner_text()
    shoot(page, "retry-confirm")
    page.locator("#confirm-ok").click()
    # Waited for through locators: the page's policy forbids the eval of wait_for_function.
    row.wait_for(state="detached")
    assert sql(database, "SELECT status FROM tasks WHERE id = ?", failed[0]) == [("pending",)]
