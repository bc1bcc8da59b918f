"""``swarmdb demo``: what its summary claims, checked against the database it wrote."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from ruv_swarm_persistence import EventModel, QueryBuilder, TaskModel, TaskStatus
from ruv_swarm_persistence.sync import open_storage
from tests import pgserver

from .conftest import DEMO_ARGS, Demo, assert_one_line_error, snapshot, swarmdb

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
    assert_one_line_error(ran, "already holds data", "--fresh")
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
    for fragment in ("tasks by status", "recovered leases", "per agent", "swarmdb status"):
        assert fragment in ran.stdout
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
