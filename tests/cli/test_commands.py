"""Every ``swarmdb`` command on a demo database, its ``--json`` output parsed and checked."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from .conftest import (
    COMMAND_TIMEOUT,
    Demo,
    assert_one_line_error,
    cli_env,
    snapshot,
    swarmdb,
)


def test_status(demo: Demo) -> None:
    info = swarmdb("status", "--json", "--integrity", "--db", str(demo.path)).json()
    assert info["backend"] == "SqliteStorage"
    assert info["tasks"] == demo.summary["tasks_by_status"]
    assert info["tasks_total"] == demo.summary["tasks"]
    assert info["tasks_ready"] == 0
    assert info["agents_total"] == 6
    assert info["agents"]["error"] == 1
    assert info["events_last_sequence"] == demo.summary["last_sequence"]
    assert info["messages_unread"] == demo.summary["messages_unread"]
    assert info["schema_version"] >= 1
    assert info["integrity"] == "ok"
    assert info["size_bytes"] > 0


def test_status_human_output(demo: Demo) -> None:
    ran = swarmdb("status", "--db", str(demo.path))
    assert ran.returncode == 0, ran.describe()
    for fragment in ("SqliteStorage", "completed", "schema version", "unread messages"):
        assert fragment in ran.stdout


def test_the_database_option_comes_from_the_environment_or_before_the_command(
    demo: Demo, tmp_path: Path
) -> None:
    env = cli_env() | {"SWARM_DB_URL": str(demo.path)}
    done = subprocess.run(
        [sys.executable, "-m", "ruv_swarm_persistence", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert json.loads(done.stdout)["tasks_total"] == demo.summary["tasks"]
    first = swarmdb("--db", str(demo.path), "status", "--json").json()
    assert first["tasks_total"] == demo.summary["tasks"]


def test_agents(demo: Demo) -> None:
    every = swarmdb("agents", "--json", "--db", str(demo.path)).json()
    assert len(every) == 6
    assert {a["id"] for a in every} == {a["agent_id"] for a in demo.summary["per_agent"]}
    crashed = swarmdb("agents", "--status", "error", "--json", "--db", str(demo.path)).json()
    assert [a["id"] for a in crashed] == [demo.summary["crashed_agent"]]
    coders = swarmdb("agents", "--type", "coder", "--json", "--db", str(demo.path)).json()
    assert [a["agent_type"] for a in coders] == ["coder"]


def test_tasks_filters(demo: Demo) -> None:
    db = ["--db", str(demo.path)]
    failed = swarmdb("tasks", "--status", "failed", "--limit", "0", "--json", *db).json()
    assert len(failed) == demo.summary["tasks_by_status"]["failed"]
    assert all(t["status"] == "failed" and t["error"] for t in failed)

    analysis = swarmdb("tasks", "--type", "analysis", "-n", "0", "--json", *db).json()
    assert analysis
    assert all(t["task_type"] == "analysis" for t in analysis)
    both = swarmdb(
        "tasks", "--status", "completed", "--type", "analysis", "-n", "0", "--json", *db
    ).json()
    assert {t["id"] for t in both} == {t["id"] for t in analysis if t["status"] == "completed"}

    urgent = swarmdb("tasks", "--where", '{"priority": [2, 3]}', "-n", "0", "--json", *db).json()
    assert urgent
    assert all(t["priority"] in (2, 3) for t in urgent)
    priorities = [t["priority"] for t in urgent]
    assert priorities == sorted(priorities, reverse=True)  # highest priority first

    assert len(swarmdb("tasks", "--limit", "5", "--json", *db).json()) == 5
    assert swarmdb("tasks", "--ready", "--json", *db).json() == []
    victim = demo.summary["crashed_agent"]
    held = swarmdb("tasks", "--agent", victim, "-n", "0", "--json", *db).json()
    assert all(t["assigned_to"] == victim for t in held)


def test_events_are_json_lines_and_filter_by_agent_type_and_time(demo: Demo) -> None:
    db = ["--db", str(demo.path)]
    victim = demo.summary["crashed_agent"]
    lines = swarmdb("events", "--agent", victim, "--since", "10m", "-n", "0", "--json", *db)
    events = lines.json_lines()
    assert events
    assert all(e["agent_id"] == victim for e in events)
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences)

    failed = swarmdb("events", "--type", "task.failed", "-n", "0", "--json", *db).json_lines()
    assert len(failed) == demo.summary["failed_attempts"]

    last = swarmdb("events", "-n", "3", "--json", *db).json_lines()
    assert [e["sequence"] for e in last] == [demo.summary["last_sequence"] - i for i in (2, 1, 0)]
    assert last[-1]["event_type"] == "swarm.finished"

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert swarmdb("events", "--since", future, "--json", *db).json_lines() == []
    long_ago = "2000-01-01T00:00:00Z"
    assert len(swarmdb("events", "--since", long_ago, "-n", "7", "--json", *db).json_lines()) == 7


def test_messages(demo: Demo) -> None:
    db = ["--db", str(demo.path)]
    every = swarmdb("messages", "-n", "0", "--json", *db).json()
    assert len(every) == demo.summary["messages_sent"]
    unread = swarmdb("messages", "--unread", "-n", "0", "--json", *db).json()
    assert len(unread) == demo.summary["messages_unread"]
    assert all(not m["read"] for m in unread)
    victim = demo.summary["crashed_agent"]
    theirs = swarmdb("messages", "--agent", victim, "-n", "0", "--json", *db).json()
    assert theirs
    assert all(victim in (m["from_agent"], m["to_agent"]) for m in theirs)


def test_metrics_aggregate_by_agent_and_bucket(demo: Demo) -> None:
    db = ["--db", str(demo.path)]
    rows = swarmdb("metrics", "cpu_usage", "--by", "agent", "--bucket", "1m", "--json", *db).json()
    assert rows
    assert {r["group"]["agent_id"] for r in rows} == {
        a["agent_id"] for a in demo.summary["per_agent"]
    }
    assert all(r["unit"] == "percent" and r["bucket_start"] for r in rows)
    per_agent = swarmdb("metrics", "cpu_usage", "--json", *db).json()
    means = {r["group"]["agent_id"]: r["mean"] for r in per_agent}
    for a in demo.summary["per_agent"]:
        assert means[a["agent_id"]] == pytest.approx(a["cpu_mean"], abs=0.01)
    by_type = swarmdb("metrics", "task_duration_ms", "--by", "tag:task_type", "--json", *db).json()
    assert sum(r["count"] for r in by_type) == demo.summary["tasks_by_status"]["completed"]
    recent = swarmdb("metrics", "-n", "4", "--json", *db).json()
    assert len(recent) == 4


def test_migrate_status(demo: Demo) -> None:
    info = swarmdb("migrate", "--status", "--json", "--db", str(demo.path)).json()
    assert info["migrations"]
    assert all(m["applied"] and m["checksum_ok"] for m in info["migrations"])
    assert info["migrations"][0]["name"].startswith("core:")


def test_migrate_is_idempotent(demo: Demo, tmp_path: Path) -> None:
    path = demo.copy(tmp_path / "m.db")
    before = snapshot(path)
    result = swarmdb("migrate", "--json", "--db", str(path)).json()
    assert result["applied"] == []
    assert result["version"] == result["version_before"] >= 1
    assert snapshot(path) == before


def test_maintenance_commands(demo: Demo, tmp_path: Path) -> None:
    path = demo.copy(tmp_path / "work.db")
    db = ["--db", str(path)]
    before = snapshot(path)
    assert swarmdb("checkpoint", "--json", *db).json() == {"checkpoint": "ok"}
    sizes = swarmdb("vacuum", "--json", *db).json()
    assert sizes["size_after"] <= sizes["size_before"]
    assert snapshot(path) == before

    pruned = swarmdb("prune", "--events", "2100-01-01T00:00:00Z", "--json", *db).json()
    assert pruned["events"] == before["events"]
    assert pruned["metrics"] == 0
    assert swarmdb("events", "--json", *db).json_lines() == []
    pruned = swarmdb("prune", "--metrics", "1s", "--read-messages", "1s", "--json", *db).json()
    assert pruned["metrics"] == before["metrics"]
    assert pruned["messages"] == demo.summary["messages_read"]
    after = snapshot(path)
    assert after["tasks"] == before["tasks"]
    assert after["messages"] == demo.summary["messages_unread"]


def test_backup(demo: Demo, tmp_path: Path) -> None:
    dest = tmp_path / "backup.db"
    result = swarmdb("backup", str(dest), "--json", "--db", str(demo.path)).json()
    assert result["bytes"] == dest.stat().st_size > 0
    copied = swarmdb("status", "--json", "--db", str(dest)).json()
    assert copied["tasks"] == demo.summary["tasks_by_status"]
    assert snapshot(dest)["events"] == demo.summary["events"]
    again = swarmdb("backup", str(dest), "--db", str(demo.path))
    assert_one_line_error(again, "exists", "--force")
    forced = swarmdb("backup", str(dest), "--force", "--json", "--db", str(demo.path))
    assert forced.json()["dest"] == str(dest)


def test_copy_moves_a_swarm_into_an_empty_database(demo: Demo, tmp_path: Path) -> None:
    pytest.importorskip("ruv_swarm_persistence.copy", reason="copy_storage is not in this tree")
    dst = tmp_path / "copy.db"
    ran = swarmdb("copy", str(demo.path), str(dst), "--json")
    assert ran.returncode == 0, ran.describe()
    assert snapshot(dst)["task_states"] == snapshot(demo.path)["task_states"]


def test_bench_builtin(tmp_path: Path) -> None:
    info = swarmdb("bench", "--quick", "--json", cwd=tmp_path).json()
    assert info["backend"] == "SqliteStorage"
    assert info["runs"] == 1
    steps = {r["step"]: r for r in info["results"]}
    assert len(steps) == 5
    assert all(r["ops"] > 0 and r["seconds"] > 0 for r in steps.values())
    on_memory = swarmdb("bench", "--quick", "--json", "--db", "memory://", cwd=tmp_path).json()
    assert on_memory["backend"] == "MemoryStorage"


def test_bench_refuses_a_database_with_data(demo: Demo, tmp_path: Path) -> None:
    path = demo.copy(tmp_path / "busy.db")
    before = snapshot(path)
    ran = swarmdb("bench", "--quick", "--db", str(path), cwd=tmp_path)
    assert_one_line_error(ran, "holds data")
    assert snapshot(path) == before


def _reader(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


_WRITER = """
import json, sys
from ruv_swarm_persistence import EventModel
from ruv_swarm_persistence.sync import open_storage
with open_storage(sys.argv[1]) as s:
    for kind, agent, payload in json.loads(sys.argv[2]):
        s.store_event(EventModel.new(kind, payload, agent_id=agent))
"""


def _follow(
    path: Path, args: list[str], backlog: int, writes: list[tuple[str, str, dict[str, int]]]
) -> tuple[list[str], list[str]]:
    """Start ``tail``; once it printed its backlog, another process writes events.

    Returns the backlog lines and the lines printed after; ``tail`` must exit by itself
    (``--count``) with status 0.
    """
    tail = subprocess.Popen(
        [sys.executable, "-m", "ruv_swarm_persistence", "tail", *args, "--db", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    )
    assert tail.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(tail.stdout, lines), daemon=True)
    reader.start()
    try:
        # Once the backlog is out, tail has read the log's end: later events reach it.
        seen = [lines.get(timeout=COMMAND_TIMEOUT) for _ in range(backlog)]
        subprocess.run(
            [sys.executable, "-c", _WRITER, str(path), json.dumps(writes)],
            check=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert tail.wait(timeout=COMMAND_TIMEOUT) == 0
        reader.join(COMMAND_TIMEOUT)  # it has read everything tail printed
        after: list[str] = []
        while not lines.empty():
            after.append(lines.get_nowait())
        return seen, after
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
        tail.stdout.close()


def test_tail_follows_events_written_by_another_process(demo: Demo, tmp_path: Path) -> None:
    path = demo.copy(tmp_path / "tail.db")
    args = ["--json", "--last", "1", "--count", "3", "--type", "probe", "--type", "swarm.finished"]
    writes = [("noise", "writer", {})] + [("probe", "writer", {"i": i}) for i in range(3)]
    backlog, after = _follow(path, args, 1, writes)
    assert json.loads(backlog[0])["event_type"] == "swarm.finished"
    followed = [json.loads(line) for line in after]
    assert [e["payload"]["i"] for e in followed] == [0, 1, 2]
    assert all(e["event_type"] == "probe" and e["agent_id"] == "writer" for e in followed)
    assert followed[0]["sequence"] > json.loads(backlog[0])["sequence"]


def test_tail_human_output_follows_one_agent(demo: Demo, tmp_path: Path) -> None:
    path = demo.copy(tmp_path / "tail2.db")
    victim = demo.summary["crashed_agent"]
    writes = [("probe", "someone-else", {"n": 1}), ("probe", victim, {"n": 2})]
    backlog, after = _follow(path, ["--last", "2", "--agent", victim, "--count", "1"], 2, writes)
    assert all(victim in line for line in backlog)
    assert len(after) == 1
    assert "probe" in after[0]
    assert victim in after[0]
    assert '"n": 2' in after[0]


def test_the_console_script_and_version() -> None:
    script = Path(sys.executable).with_name("swarmdb")
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=cli_env(), check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("swarmdb (ruv-swarm-persistence) ")


def test_without_the_cli_extra_the_error_says_what_to_install() -> None:
    hide_typer = (
        "import sys; sys.modules['typer'] = None\n"
        "from ruv_swarm_persistence.cli import main\n"
        "main(['status'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_typer],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: swarmdb needs 'typer': pip install 'ruv-swarm-persistence[cli]'"
    ]
