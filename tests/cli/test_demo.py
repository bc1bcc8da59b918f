"""``swarmdb demo``: what its summary claims, checked against the database it wrote."""

from __future__ import annotations

import asyncio
import io
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from ruv_swarm_persistence import EventModel, QueryBuilder, TaskModel, TaskStatus
from ruv_swarm_persistence.cli.demo import _Display, _render
from ruv_swarm_persistence.demo import (
    DemoConfig,
    DemoProgress,
    DemoSummary,
    demo_retry_policy,
    run_demo,
)
from ruv_swarm_persistence.sync import open_storage
from ruv_swarm_persistence.urls import init_storage
from tests import pgserver

from .conftest import (
    COMMAND_TIMEOUT,
    DEMO_ARGS,
    Demo,
    assert_one_line_error,
    cli_env,
    snapshot,
    swarmdb,
)

FINAL = {TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled}


def _read(path: Path) -> tuple[list[TaskModel], list[EventModel], dict[str, int]]:
    with open_storage(str(path)) as s:
        tasks = s.query(QueryBuilder(TaskModel))
        events = s.read_events(0, 1_000_000)
        messages = s.messages.find_all()
        metrics = s.metrics.find_all()
        agents = {a.id: a.status.value for a in s.list_agents()}
    counts = {
        "read": sum(1 for m in messages if m.read),
        "unread": sum(1 for m in messages if not m.read),
        "metrics": len(metrics),
    }
    return tasks, events, counts | {f"agent:{k}": v for k, v in agents.items()}  # type: ignore[dict-item]


def test_every_task_ends_in_a_final_state_as_the_summary_says(demo: Demo) -> None:
    tasks, _, _ = _read(demo.path)
    assert len(tasks) == demo.summary["tasks"] == 160
    assert all(t.status in FINAL for t in tasks)
    by_status = Counter(t.status.value for t in tasks)
    assert {k: v for k, v in demo.summary["tasks_by_status"].items() if v} == dict(by_status)
    assert by_status["completed"] > 0


def test_no_task_completes_twice_and_each_completion_is_recorded(demo: Demo) -> None:
    tasks, events, _ = _read(demo.path)
    completions = Counter(e.task_id for e in events if e.event_type == "task.completed")
    assert max(completions.values()) == 1
    assert set(completions) == {t.id for t in tasks if t.status == TaskStatus.Completed}


def test_dependencies_complete_before_their_dependents_start(demo: Demo) -> None:
    tasks, _, _ = _read(demo.path)
    by_id = {t.id: t for t in tasks}
    checked = 0
    for t in tasks:
        if t.status != TaskStatus.Completed:
            continue
        assert t.completed_at is not None
        assert t.started_at is not None
        for dep_id in t.dependencies:
            dep = by_id[dep_id]
            assert dep.status == TaskStatus.Completed
            assert dep.completed_at is not None
            assert dep.completed_at <= t.started_at < t.completed_at
            checked += 1
    assert checked > 50


def test_failures_and_cancellations_follow_the_plan(demo: Demo) -> None:
    tasks, _, _ = _read(demo.path)
    by_id = {t.id: t for t in tasks}
    failed = {t.id for t in tasks if t.status == TaskStatus.Failed}
    for t in tasks:
        planned = t.payload["fail_attempts"]
        if t.status == TaskStatus.Failed:
            assert planned > t.max_retries  # only tasks planned to always fail end failed
            assert t.retry_count == t.max_retries
        if t.status == TaskStatus.Cancelled:
            # Cancelled because something it (transitively) depends on failed for good.
            seen, stack = set(), list(t.dependencies)
            while stack:
                d = stack.pop()
                if d not in seen:
                    seen.add(d)
                    stack.extend(by_id[d].dependencies)
            assert seen & failed, t.id


def test_retries_and_recovered_leases_are_counted(demo: Demo) -> None:
    tasks, events, counts = _read(demo.path)
    claims: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    completions: Counter[str] = Counter()
    for e in events:
        if e.task_id is None:
            continue
        if e.event_type == "task.claimed":
            claims[e.task_id] += 1
        elif e.event_type == "task.failed":
            failures[e.task_id] += 1
        elif e.event_type == "task.completed":
            completions[e.task_id] += 1
    lost = {t: claims[t] - failures[t] - completions[t] for t in claims}
    assert all(n >= 0 for n in lost.values())
    assert demo.summary["recovered_leases"] == sum(lost.values())
    assert demo.summary["failed_attempts"] == sum(failures.values())
    # A retry follows a failed attempt or an expired lease; the summary tells them apart.
    assert demo.summary["retries"] + demo.summary["recovered_leases"] == sum(
        t.retry_count for t in tasks
    )
    for t in tasks:
        if t.status == TaskStatus.Completed:
            # Every retry was a recorded failure or a lease that ran out.
            assert t.retry_count == failures[t.id] + lost.get(t.id, 0), t.id
    victim = demo.summary["crashed_agent"]
    assert victim is not None  # at this size and seed the crash happens
    assert demo.summary["recovered_leases"] >= 1
    assert victim in demo.summary["reaped_agents"]
    assert counts[f"agent:{victim}"] == "error"
    # The crashed agent's abandoned claims were finished by others.
    abandoned = [
        e.task_id
        for e in events
        if e.event_type == "task.claimed" and e.agent_id == victim and lost.get(e.task_id or "")
    ]
    assert abandoned
    by_id = {t.id: t for t in tasks}
    for task_id in abandoned:
        assert task_id is not None
        assert by_id[task_id].status in FINAL
        if by_id[task_id].status == TaskStatus.Completed:
            assert by_id[task_id].assigned_to != victim


def test_messages_events_and_metrics_match(demo: Demo) -> None:
    _, events, counts = _read(demo.path)
    s = demo.summary
    assert s["messages_read"] == counts["read"] > 0
    assert s["messages_unread"] == counts["unread"]
    assert s["messages_sent"] == counts["read"] + counts["unread"]
    assert s["events"] == len(events)
    assert s["last_sequence"] == events[-1].sequence
    assert s["metrics"] == counts["metrics"]
    assert len(s["per_agent"]) == 6
    assert sum(a["tasks_completed"] for a in s["per_agent"]) == s["tasks_by_status"]["completed"]
    assert all(a["cpu_mean"] > 0 for a in s["per_agent"])
    assert s["path"] == str(demo.path.resolve())


def test_the_same_seed_gives_the_same_swarm(demo: Demo, tmp_path: Path) -> None:
    again = swarmdb("demo", *DEMO_ARGS, "--json", "--db", str(tmp_path / "again.db")).json()
    for field in (
        "tasks_by_status",
        "retries",
        "failed_attempts",
        "crashed_agent",
        "messages_sent",
        "messages_read",
        "messages_unread",
    ):
        assert again[field] == demo.summary[field], field
    first, _, _ = _read(demo.path)
    second, _, _ = _read(tmp_path / "again.db")
    assert [(t.id, t.status, t.dependencies) for t in first] == [
        (t.id, t.status, t.dependencies) for t in second
    ]


def test_a_database_with_data_is_refused_unless_fresh(demo: Demo, tmp_path: Path) -> None:
    path = demo.copy(tmp_path / "taken.db")
    before = snapshot(path)
    ran = swarmdb("demo", "--agents", "2", "--tasks", "10", "--db", str(path))
    assert_one_line_error(ran, "already holds", "--fresh")
    assert snapshot(path) == before

    fresh = swarmdb(
        "demo", "--agents", "2", "--tasks", "10", "--fresh", "--json", "--db", str(path)
    )
    assert fresh.json()["tasks"] == 10
    assert snapshot(path)["tasks"] == 10


def test_fresh_does_not_delete_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    ran = swarmdb("demo", "--fresh", "--db", str(notes))
    assert_one_line_error(ran, "not a SQLite database")
    assert notes.read_text() == "my notes\n"


def test_the_human_summary_says_where_the_database_is_and_what_to_try(tmp_path: Path) -> None:
    ran = swarmdb("demo", "--agents", "3", "--tasks", "40", cwd=tmp_path)
    assert ran.returncode == 0, ran.describe()
    assert (tmp_path / "swarm.db").exists()
    assert f"database: {tmp_path / 'swarm.db'}" in ran.stdout
    for fragment in ("tasks by status", "recovered leases", "per agent", "try next:"):
        assert fragment in ran.stdout
    assert " -m ruv_swarm_persistence status\n" in ran.stdout  # as it was started
    assert "--db" not in ran.stdout  # the default database needs no option


def test_the_demo_runs_in_memory() -> None:
    summary = swarmdb("demo", "--agents", "3", "--tasks", "30", "--json", "--db", "memory://")
    assert sum(summary.json()["tasks_by_status"].values()) == 30
    assert summary.json()["path"] is None


def test_the_demo_runs_on_postgresql(pg_url: str) -> None:
    schema = pgserver.new_schema_name("demo")
    url = f"{pg_url}?schema={schema}"
    try:
        summary = swarmdb("demo", "--agents", "4", "--tasks", "60", "--json", "--db", url).json()
        assert sum(summary["tasks_by_status"].values()) == 60
        assert summary["tasks_by_status"]["pending"] == 0
        status = swarmdb("status", "--json", "--db", url).json()
        assert status["backend"] == "PostgresStorage"
        assert status["tasks"] == summary["tasks_by_status"]
        again = swarmdb("demo", "--fresh", "--db", url)
        assert_one_line_error(again, "--fresh", "empty database")
    finally:
        asyncio.run(pgserver.drop_schema(pg_url, schema))


async def test_the_live_panel_draws_each_frame_from_one_snapshot() -> None:
    storage = await init_storage("memory://", retry_policy=demo_retry_policy())
    config = DemoConfig(agents=6, tasks=160, seed=11)
    display = _Display(config.tasks)
    console = Console(file=io.StringIO(), width=200, color_system=None, record=True)
    elapsed: list[str] = []

    def on_progress(p: DemoProgress) -> None:
        display.update(p)
        console.print(display)
        frame = console.export_text(clear=True)
        bar = display.bar.tasks[0]
        # The bar counts the finished tasks the line under it shows, of the same moment.
        assert (bar.completed, bar.total) == (p.finished, p.total), frame
        assert f"{p.finished:>{len(str(p.total))}}/{p.total}" in frame
        assert (
            f"finished {p.finished:,} (completed {p.completed:,}, failed {p.failed:,}, "
            f"cancelled {p.cancelled:,})" in frame
        )
        assert f"messages {p.messages_sent:,} sent / {p.messages_read:,} read" in frame
        shown = f"{p.elapsed:6.1f} s"
        assert shown in frame
        elapsed.append(shown)

    try:
        await run_demo(storage, config, on_progress)
    finally:
        await storage.close()
    seconds = [float(e.removesuffix(" s")) for e in elapsed]
    assert seconds == sorted(seconds)
    assert seconds[-1] > seconds[0]


def _hints(stdout: str) -> tuple[str, list[str]]:
    """The heading of the "try next" hints and the commands under it."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("try next"))
    return lines[start], [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]


def _run_hint(hint: str, cwd: Path, env: dict[str, str]) -> None:
    args = shlex.split(hint)
    if "tail" not in args:
        done = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        assert done.returncode == 0, f"{hint}\n{done.stdout}\n{done.stderr}"
        return
    # tail follows the log until interrupted: it shows the latest events and keeps following.
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    seen = ""
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while "swarm.finished" not in seen:
            seen += lines.get(timeout=max(0.1, deadline - time.monotonic()))
        assert proc.poll() is None, seen
    finally:
        proc.terminate()
        _, errors = proc.communicate(timeout=COMMAND_TIMEOUT)
    assert "error" not in errors, errors


@pytest.mark.parametrize("started_as", ["python -m", "installed script"])
def test_the_hints_run_as_printed(started_as: str, tmp_path: Path) -> None:
    env = cli_env()
    if started_as == "python -m":
        program = [sys.executable, "-m", "ruv_swarm_persistence"]
    else:
        script = Path(sys.executable).with_name("swarmdb")
        if not script.exists():
            pytest.skip("the swarmdb script is not installed next to this Python")
        program = [str(script)]
        # As after 'make demo': the venv's bin is not on PATH.
        env["PATH"] = os.pathsep.join(
            d
            for d in env.get("PATH", os.defpath).split(os.pathsep)
            if d and d != str(script.parent)
        )
    done = subprocess.run(
        [*program, "demo", "--agents", "4", "--tasks", "60"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    heading, hints = _hints(done.stdout)
    assert heading == "try next:"
    assert len(hints) == 6
    for hint in hints:
        assert shlex.split(hint)[: len(program)] == program, hint
        _run_hint(hint, tmp_path, env)


def _summary() -> DemoSummary:
    return DemoSummary(
        seed=7,
        agents=1,
        tasks=1,
        elapsed_s=1.0,
        throughput_tasks_per_s=1.0,
        tasks_by_status={"completed": 1},
        retries=0,
        failed_attempts=0,
        recovered_leases=0,
        crashed_agent=None,
        reaped_agents=[],
        messages_sent=0,
        messages_read=0,
        messages_unread=0,
        events=1,
        last_sequence=1,
        metrics=0,
        per_agent=[],
    )


def test_the_hints_never_show_a_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://swarm:s3cret-pw@db.example:5432/swarm?schema=demo"
    monkeypatch.delenv("SWARM_DB_URL", raising=False)
    _render(_summary(), url, None, True)
    printed = capsys.readouterr().out
    assert "s3cret-pw" not in printed
    heading, hints = _hints(printed)
    assert "SWARM_DB_URL" in heading
    assert "swarm:***@db.example" in heading
    assert hints
    assert not any("--db" in h for h in hints)

    # Given by $SWARM_DB_URL, the same shell runs the hints without --db.
    monkeypatch.setenv("SWARM_DB_URL", url)
    _render(_summary(), url, None, True)
    printed = capsys.readouterr().out
    assert "s3cret-pw" not in printed
    heading, hints = _hints(printed)
    assert heading == "try next:"
    assert hints
    assert not any("--db" in h for h in hints)
