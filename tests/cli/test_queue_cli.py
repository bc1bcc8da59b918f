"""``swarmdb tasks --failed`` and ``swarmdb retry`` on a copy of a demo database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ruv_swarm_persistence import init_storage

from .conftest import Demo, assert_one_line_error, snapshot, swarmdb


@pytest.fixture
def db(demo: Demo, tmp_path: Path) -> list[str]:
    """``--db`` of a fresh copy of the demo (these commands write)."""
    return ["--db", str(demo.copy(tmp_path / "swarm.db"))]


def test_tasks_failed_lists_dead_letters_most_recent_first(demo: Demo, db: list[str]) -> None:
    dead = swarmdb("tasks", "--failed", "--limit", "0", "--json", *db).json()
    assert len(dead) == demo.summary["tasks_by_status"]["failed"] > 0
    assert all(t["status"] == "failed" for t in dead)
    stamps = [t["completed_at"] for t in dead]
    assert stamps == sorted(stamps, reverse=True)
    page = swarmdb("tasks", "--failed", "--limit", "1", "--offset", "1", "--json", *db).json()
    assert [t["id"] for t in page] == [t["id"] for t in dead[1:2]]
    one_type = dead[0]["task_type"]
    typed = swarmdb("tasks", "--failed", "--type", one_type, "--limit", "0", "--json", *db).json()
    assert [t["id"] for t in typed] == [t["id"] for t in dead if t["task_type"] == one_type]
    human = swarmdb("tasks", "--failed", *db)
    assert human.returncode == 0, human.describe()
    assert "failed tasks" in human.stdout
    assert dead[0]["id"] in human.stdout


def test_tasks_failed_excludes_other_filters(db: list[str]) -> None:
    for extra in (["--status", "pending"], ["--ready"], ["--agent", "a"]):
        ran = swarmdb("tasks", "--failed", *extra, *db)
        assert_one_line_error(ran, "--failed", status=2)


def test_retry_ids_requeues_them(demo: Demo, db: list[str]) -> None:
    dead = swarmdb("tasks", "--failed", "--limit", "0", "--json", *db).json()
    first = dead[0]["id"]
    done = swarmdb("retry", first, "--json", *db).json()
    assert done == {"retried": 1, "tasks": [first]}
    (task,) = [
        t for t in swarmdb("tasks", "--limit", "0", "--json", *db).json() if t["id"] == first
    ]
    assert task["status"] == "pending"
    assert task["retry_count"] == 0
    left = swarmdb("tasks", "--failed", "--limit", "0", "--json", *db).json()
    assert [t["id"] for t in left] == [t["id"] for t in dead[1:]]


def test_retry_all_of_a_type_and_then_all(db: list[str]) -> None:
    dead = swarmdb("tasks", "--failed", "--limit", "0", "--json", *db).json()
    one_type = dead[0]["task_type"]
    of_type = [t for t in dead if t["task_type"] == one_type]
    ran = swarmdb("retry", "--all", "--type", one_type, *db)
    assert ran.returncode == 0, ran.describe()
    assert f"requeued {len(of_type):,} failed task" in ran.stdout
    rest = swarmdb("retry", "--all", "--json", *db).json()
    assert rest["retried"] + len(of_type) <= len(dead)
    left = swarmdb("tasks", "--failed", "--limit", "0", "--json", *db).json()
    assert len(left) == len(dead) - len(of_type) - rest["retried"]


def test_retry_refuses_bad_usage_and_changes_nothing(demo: Demo, db: list[str]) -> None:
    path = Path(db[1])
    before = snapshot(path)
    dead = swarmdb("tasks", "--failed", "--limit", "1", "--json", *db).json()
    assert_one_line_error(swarmdb("retry", *db), "--all", status=2)
    assert_one_line_error(swarmdb("retry", dead[0]["id"], "--all", *db), "--all", status=2)
    assert_one_line_error(swarmdb("retry", dead[0]["id"], "--type", "x", *db), "--type", status=2)
    assert_one_line_error(swarmdb("retry", dead[0]["id"], "no-such-task", *db), "not found")
    done = [
        t["id"]
        for t in swarmdb("tasks", "--status", "completed", "--limit", "1", "--json", *db).json()
    ]
    assert_one_line_error(swarmdb("retry", dead[0]["id"], *done, *db), "not failed")
    assert snapshot(path) == before


def test_prune_retention_and_status_report(demo: Demo, db: list[str]) -> None:
    path = Path(db[1])
    before = swarmdb("status", "--json", *db).json()
    assert before["retention"] == {
        "policy": None,
        "last_run": None,
        "removed": {"tasks": 0, "events": 0, "messages": 0, "metrics": 0},
    }
    done = swarmdb("prune", "--retention", "tasks:1ms,events:10", "--json", *db).json()
    assert done["tasks"] > 0
    assert done["events"] == before["events_last_sequence"] - 10
    after = swarmdb("status", "--json", "--db", f"sqlite:///{path}?retention=events:30d").json()
    assert after["retention"]["policy"] == {"events": "30d"}
    assert after["retention"]["last_run"] is not None
    assert after["retention"]["removed"]["tasks"] == done["tasks"]
    assert after["retention"]["removed"]["events"] == done["events"]
    # Completed tasks went, except those a task that may still run depends on.
    assert after["tasks"]["completed"] < before["tasks"]["completed"]
    assert after["tasks"]["failed"] == before["tasks"]["failed"]
    human = swarmdb("status", *db)
    assert "last ran" in human.stdout
    assert "no policy given" in human.stdout
    assert_one_line_error(
        swarmdb("prune", "--retention", "events:soon", *db), "--retention", status=2
    )


def test_status_counts_schedules(db: list[str]) -> None:
    async def define() -> None:
        async with await init_storage(db[1]) as storage:
            await storage.store_schedule("a", "1h", {"task_type": "x"})
            await storage.store_schedule("b", "1d", {"task_type": "x"})
            await storage.pause_schedule("b")

    before = swarmdb("status", "--json", *db).json()
    assert before["schedules"] == {"total": 0, "paused": 0, "next_due": None}
    asyncio.run(define())
    after = swarmdb("status", "--json", *db).json()
    assert after["schedules"]["total"] == 2
    assert after["schedules"]["paused"] == 1
    assert after["schedules"]["next_due"] is not None
    assert "(1 paused), next due" in swarmdb("status", *db).stdout
