"""Drive ``swarmdb`` as a user would: a subprocess per command, on a small demo database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest

#: Bounds one command (the demo included); never an assertion about speed.
COMMAND_TIMEOUT = 180
#: A small demo: big enough for retries, failures, a crash and recovered leases.
DEMO_ARGS = ["--agents", "6", "--tasks", "160", "--seed", "11"]
TABLES = ("agents", "tasks", "task_dependencies", "events", "messages", "metrics")


@dataclass
class Ran:
    """A finished ``swarmdb`` command."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self.describe()
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        assert self.returncode == 0, self.describe()
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def describe(self) -> str:
        return f"swarmdb {' '.join(self.args)} -> {self.returncode}\n{self.stdout}\n{self.stderr}"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SWARM_DB_URL", None)
    env["NO_COLOR"] = "1"
    return env


def swarmdb(*args: str, cwd: Path | None = None, timeout: float = COMMAND_TIMEOUT) -> Ran:
    """Run ``python -m ruv_swarm_persistence ARGS`` and collect what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "ruv_swarm_persistence", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=cli_env(),
        check=False,
    )
    return Ran(list(args), done.returncode, done.stdout, done.stderr)


def assert_one_line_error(ran: Ran, *fragments: str, status: int = 1) -> None:
    """Exit ``status`` (1), one ``error: …`` line on stderr, no traceback, nothing on stdout."""
    assert ran.returncode == status, ran.describe()
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.describe()
    assert lines[0].startswith("error: "), ran.describe()
    assert "Traceback" not in ran.stderr
    assert ran.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], ran.describe()


def snapshot(path: Path) -> dict[str, Any]:
    """Row counts of every table, read with a read-only connection of the driver itself."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        counts["schema_migrations"] = list(
            conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        )
        counts["task_states"] = list(
            conn.execute("SELECT id, status, retry_count FROM tasks ORDER BY id")
        )
        return counts
    finally:
        conn.close()


def copy_database(src: Path, dst: Path) -> Path:
    """Copy a closed database file (and its log, if any) to ``dst``."""
    for suffix in ("", "-wal"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


@dataclass
class Demo:
    """A demo database made once per module, and what the demo said about it."""

    path: Path
    summary: dict[str, Any]

    def copy(self, dst: Path) -> Path:
        return copy_database(self.path, dst)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """Run ``swarmdb demo --json`` at a small size into a fresh file."""
    folder = tmp_path_factory.mktemp("demo")
    path = folder / "swarm.db"
    ran = swarmdb("demo", *DEMO_ARGS, "--json", "--db", str(path), cwd=folder)
    return Demo(path, ran.json())
