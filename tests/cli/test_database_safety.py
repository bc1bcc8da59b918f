"""swarmdb never harms a database it did not make.

Reading commands open read-only and never migrate; the demo replaces only a database it made
itself (asking on a terminal otherwise); ``make demo`` works on its own file whatever
``$SWARM_DB_URL`` says; ``tail`` waits for the demo's file and follows its replacement.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import pytest

from ruv_swarm_persistence.migrations import bundled_migrations

from .conftest import COMMAND_TIMEOUT, Ran, assert_one_line_error, cli_env, swarmdb

SMALL = ["--agents", "3", "--tasks", "24", "--seed", "5"]
ROOT = Path(__file__).resolve().parents[2]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def foreign(path: Path) -> Path:
    """Someone else's SQLite database, in WAL mode (the mode a careless open would set)."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
    conn.close()
    return path


def user_swarm(path: Path) -> Path:
    """A swarm database a user's program made (not the demo), closed."""
    code = (
        "import asyncio, sys\n"
        "from ruv_swarm_persistence import AgentModel, init_storage\n"
        "async def main():\n"
        "    async with init_storage(sys.argv[1]) as s:\n"
        "        await s.store_agent(AgentModel.new('production-agent', 'worker', []))\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    return path


def run_env(args: list[str], cwd: Path, **env: str) -> Ran:
    """``swarmdb ARGS`` with extra environment variables."""
    done = subprocess.run(
        [sys.executable, "-m", "ruv_swarm_persistence", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        cwd=cwd,
        env={**cli_env(), **env},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Ran(args, done.returncode, done.stdout, done.stderr)


def agent_names(path: Path) -> list[str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return sorted(name for (name,) in conn.execute("SELECT name FROM agents"))
    finally:
        conn.close()


# --- the demo and --fresh ---------------------------------------------------------------------


def test_make_demo_names_its_own_file() -> None:
    recipe = subprocess.run(
        ["make", "-n", "demo", "SWARM_DB_URL=prod.db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SWARM_DB_URL": "prod.db"},
    ).stdout
    line = next(x for x in recipe.splitlines() if "swarmdb demo" in x)
    assert "--db swarm.db" in line
    assert "prod.db" not in line


def test_the_demo_with_swarm_db_url_set_leaves_that_database_alone(tmp_path: Path) -> None:
    prod = user_swarm(tmp_path / "prod.db")
    before = digest(prod)
    # What `make demo` runs, with the variable the README tells users to set.
    made = run_env(
        ["demo", "--fresh", "--db", "swarm.db", *SMALL], tmp_path, SWARM_DB_URL="prod.db"
    )
    assert made.returncode == 0, made.describe()
    assert digest(prod) == before
    assert (tmp_path / "swarm.db").exists()
    # And the recipe before this release (`swarmdb demo --fresh`, honouring the variable).
    old = run_env(["demo", "--fresh", *SMALL], tmp_path, SWARM_DB_URL="prod.db")
    assert_one_line_error(old, "prod.db", "the demo did not make")
    assert digest(prod) == before
    assert agent_names(prod) == ["production-agent"]


@pytest.mark.parametrize("kind", ["sqlite", "text"])
def test_fresh_never_deletes_a_file_that_is_not_a_swarm_database(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "other.db"
    if kind == "sqlite":
        foreign(path)
    else:
        path.write_text("my notes\n")
    before, files = digest(path), names(tmp_path)
    ran = swarmdb("demo", "--fresh", "--db", str(path), *SMALL, cwd=tmp_path)
    assert_one_line_error(ran, str(path))
    assert digest(path) == before
    assert names(tmp_path) == files


def test_fresh_refuses_a_users_swarm_database_without_a_terminal(tmp_path: Path) -> None:
    path = user_swarm(tmp_path / "mine.db")
    before = digest(path)
    ran = swarmdb("demo", "--fresh", "--db", str(path), *SMALL, cwd=tmp_path)
    assert_one_line_error(ran, "the demo did not make", "--db")
    assert digest(path) == before


def test_without_fresh_a_database_with_data_is_refused_untouched(tmp_path: Path) -> None:
    path = user_swarm(tmp_path / "mine.db")
    before = digest(path)
    ran = swarmdb("demo", "--db", str(path), *SMALL, cwd=tmp_path)
    assert_one_line_error(ran, "already holds", "--db")
    assert "--fresh" not in ran.stderr  # --fresh would not replace it either
    assert digest(path) == before


def _on_a_terminal(args: list[str], cwd: Path, answer: str) -> tuple[int, str]:
    """Run swarmdb on a pseudo-terminal, answer its question, return status and output."""
    master, slave = pty.openpty()
    env = cli_env() | {"COLUMNS": "200", "TERM": "dumb"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ruv_swarm_persistence", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen, answered = b"", False
    deadline = time.monotonic() + COMMAND_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/n]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        status = proc.wait(timeout=COMMAND_TIMEOUT)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert answered, seen.decode(errors="replace")
    return status, seen.decode(errors="replace")


def test_fresh_asks_on_a_terminal_and_keeps_the_file_on_no(tmp_path: Path) -> None:
    path = user_swarm(tmp_path / "mine.db")
    before = digest(path)
    status, output = _on_a_terminal(["demo", "--fresh", "--db", str(path), *SMALL], tmp_path, "n")
    assert status == 1, output
    assert "the demo did not make" in output
    assert digest(path) == before


def test_fresh_asks_on_a_terminal_and_replaces_the_file_on_yes(tmp_path: Path) -> None:
    path = user_swarm(tmp_path / "mine.db")
    status, output = _on_a_terminal(["demo", "--fresh", "--db", str(path), *SMALL], tmp_path, "y")
    assert status == 0, output
    assert "production-agent" not in agent_names(path)


def test_fresh_replaces_the_demos_own_database(tmp_path: Path) -> None:
    path = tmp_path / "swarm.db"
    first = swarmdb("demo", "--db", str(path), *SMALL, "--json", cwd=tmp_path)
    assert first.returncode == 0, first.describe()
    again = swarmdb("demo", "--db", str(path), *SMALL, cwd=tmp_path)
    assert_one_line_error(again, "already holds", "--fresh")
    fresh = swarmdb("demo", "--fresh", "--db", str(path), *SMALL, "--json", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.describe()
    events = swarmdb("events", "--type", "demo.started", "--json", "--db", str(path), cwd=tmp_path)
    assert [e["event_type"] for e in events.json_lines()] == ["demo.started"]


# --- reading commands open read-only ----------------------------------------------------------

READERS = [
    ["status"],
    ["agents"],
    ["tasks"],
    ["events"],
    ["messages"],
    ["metrics"],
    ["metrics", "cpu_usage"],
    ["migrate", "--status"],
    ["backup", "out.db"],
    ["tail", "--count", "1"],
]
WRITERS_OF_EXISTING = [["vacuum"], ["checkpoint"], ["prune", "--events", "1d"], ["migrate"]]


@pytest.mark.parametrize("command", READERS + WRITERS_OF_EXISTING, ids=" ".join)
def test_a_foreign_sqlite_file_is_refused_byte_for_byte_unchanged(
    tmp_path: Path, command: list[str]
) -> None:
    path = foreign(tmp_path / "other.db")
    before, files = digest(path), names(tmp_path)
    ran = swarmdb(*command, "--db", str(path), cwd=tmp_path, timeout=60)
    assert_one_line_error(ran, "not a swarm database")
    assert digest(path) == before
    assert names(tmp_path) == files


@pytest.mark.parametrize("command", [c for c in READERS if c[0] != "tail"], ids=" ".join)
def test_an_empty_file_is_refused_and_stays_empty(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    ran = swarmdb(*command, "--db", str(path), cwd=tmp_path, timeout=60)
    assert_one_line_error(ran, "empty")
    assert path.stat().st_size == 0
    assert names(tmp_path) == ["empty.db"]


def test_reading_a_swarm_database_changes_nothing(tmp_path: Path) -> None:
    path = user_swarm(tmp_path / "mine.db")
    before, files = digest(path), names(tmp_path)
    for command in (["status"], ["agents"], ["tasks"], ["events"], ["migrate", "--status"]):
        ran = swarmdb(*command, "--db", str(path), cwd=tmp_path)
        assert ran.returncode == 0, ran.describe()
    assert digest(path) == before
    assert names(tmp_path) == files


# --- migrate ----------------------------------------------------------------------------------


def test_migrate_says_it_created_the_database(tmp_path: Path) -> None:
    ran = swarmdb("migrate", "--db", "new.db", cwd=tmp_path)
    assert ran.returncode == 0, ran.describe()
    assert "created new.db" in ran.stdout
    assert (tmp_path / "new.db").exists()


def test_status_shows_pending_migrations_without_applying_them(tmp_path: Path) -> None:
    assert swarmdb("migrate", "--db", "s.db", cwd=tmp_path).returncode == 0
    down = swarmdb("migrate", "--to", "0", "--db", "s.db", cwd=tmp_path)
    assert down.returncode == 0, down.describe()
    for _ in range(2):  # asking twice must not apply anything either
        status = swarmdb("migrate", "--status", "--json", "--db", "s.db", cwd=tmp_path).json()
        assert status["version"] == 0
        assert [m["applied"] for m in status["migrations"]] == [False] * len(
            bundled_migrations("sqlite")
        )
    behind = swarmdb("tasks", "--db", "s.db", cwd=tmp_path)
    assert_one_line_error(behind, "schema version 0", "swarmdb migrate")
    up = swarmdb("migrate", "--db", "s.db", cwd=tmp_path)
    assert up.returncode == 0, up.describe()
    assert swarmdb("tasks", "--db", "s.db", cwd=tmp_path).returncode == 0


# --- tail follows the demo --------------------------------------------------------------------


def _events_in(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def test_tail_waits_for_the_demo_and_follows_its_replacement(tmp_path: Path) -> None:
    path = tmp_path / "swarm.db"
    tail = subprocess.Popen(
        [sys.executable, "-m", "ruv_swarm_persistence", "tail", "--json", "--db", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
    )
    try:
        assert tail.stderr is not None
        waiting = tail.stderr.readline()  # the demo starts only once tail waits for it
        first = swarmdb("demo", "--db", str(path), *SMALL, cwd=tmp_path)
        assert first.returncode == 0, first.describe()
        n_first = _events_in(path)
        second = swarmdb("demo", "--fresh", "--db", str(path), *SMALL, cwd=tmp_path)
        assert second.returncode == 0, second.describe()
        expected = n_first + _events_in(path)
        lines: list[str] = []
        assert tail.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(tail.stdout or ()), daemon=True)
        reader.start()  # a thread: select() cannot see lines already in the pipe's buffer
        deadline = time.monotonic() + 60
        while len(lines) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        tail.send_signal(signal.SIGINT)
        tail.wait(timeout=30)
        reader.join(timeout=30)
        stderr = " ".join((waiting + tail.stderr.read()).split())
    finally:
        if tail.poll() is None:
            tail.kill()
        for pipe in (tail.stdout, tail.stderr):
            if pipe is not None:
                pipe.close()
    events = [json.loads(x) for x in lines]
    assert len(events) == expected, stderr
    assert [e["event_type"] for e in events].count("demo.started") == 2
    assert "waiting for a swarm database" in stderr
    assert "was replaced" in stderr
    assert tail.returncode == 130


def test_tail_waiting_for_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "ruv_swarm_persistence", "tail", "--db", "later.db"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
    ) as tail:
        assert tail.stderr is not None
        said = tail.stderr.readline()  # printed once it has looked and started waiting
        assert "waiting for a swarm database at later.db" in said
        assert names(tmp_path) == []
        tail.send_signal(signal.SIGINT)
        tail.communicate(timeout=30)
    assert tail.returncode == 130
    assert names(tmp_path) == []
