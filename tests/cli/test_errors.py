"""Bad input: one clear ``error:`` line, exit status 1, and the database left as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from .conftest import (
    COMMAND_TIMEOUT,
    Demo,
    Ran,
    assert_one_line_error,
    cli_env,
    snapshot,
    swarmdb,
)

#: Commands that only read, and commands that change a database that must already exist.
READ_ONLY = [
    ["status"],
    ["agents"],
    ["tasks", "--status", "pending"],
    ["events", "--since", "10m"],
    ["messages"],
    ["metrics", "cpu_usage"],
    ["migrate", "--status"],
    ["backup", "out.db"],
]
CHANGES_EXISTING = [["vacuum"], ["checkpoint"], ["prune", "--events", "30d"]]


@pytest.mark.parametrize("command", READ_ONLY + CHANGES_EXISTING, ids=lambda c: c[0])
def test_a_missing_database_is_not_created(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "swarm.db"
    ran = swarmdb(*command, "--db", str(missing), cwd=tmp_path)
    assert_one_line_error(ran, "no database at", str(missing))
    assert not missing.exists()
    assert not missing.parent.exists()
    assert not (tmp_path / "out.db").exists()


def test_the_default_database_is_not_created_by_a_read(tmp_path: Path) -> None:
    ran = swarmdb("tasks", cwd=tmp_path)
    assert_one_line_error(ran, "no database at swarm.db")
    assert list(tmp_path.iterdir()) == []


def test_copy_from_a_missing_database(tmp_path: Path) -> None:
    ran = swarmdb("copy", str(tmp_path / "missing.db"), str(tmp_path / "out.db"))
    assert_one_line_error(ran, "no database at")
    assert not (tmp_path / "out.db").exists()


@pytest.mark.parametrize("url", ["bogus://host/db", "ftp://x"])
def test_an_unknown_url_scheme(url: str, tmp_path: Path) -> None:
    ran = swarmdb("status", "--db", url, cwd=tmp_path)
    assert_one_line_error(ran, "unknown scheme")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def db(demo: Demo, tmp_path: Path) -> Path:
    """A private copy of the demo database."""
    return demo.copy(tmp_path / "swarm.db")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            ["tasks", "--where", '{"status": "pending"'], ["--where", "not valid JSON"], id="json"
        ),
        pytest.param(["events", "--where", "[1, 2]"], ["--where", "JSON object"], id="json-list"),
        pytest.param(["tasks", "--where", '{"no_such": 1}'], ["unknown field"], id="field"),
        pytest.param(["tasks", "--where", '{"payload": 1}'], ["JSON field"], id="json-field"),
        pytest.param(["tasks", "--status", "sleeping"], ["--status", "sleeping"], id="status"),
        pytest.param(["events", "--since", "10 parsecs"], ["--since"], id="since"),
        pytest.param(
            ["metrics", "cpu_usage", "--bucket", "0s"], ["--bucket", "positive"], id="bucket"
        ),
        pytest.param(["metrics", "cpu_usage", "--by", "colour"], ["--by"], id="by"),
        pytest.param(["prune"], ["nothing to prune"], id="prune-nothing"),
        pytest.param(["prune", "--events", "yesterday"], ["--events"], id="prune-time"),
        pytest.param(["events", "--since", "800000d"], ["--since", "year 1"], id="since-far"),
        pytest.param(
            ["events", "--until", "0001-01-01T00:00+05:00"], ["--until", "9999"], id="until-year-0"
        ),
        pytest.param(
            ["events", "--since", "9999-12-31T23:00-05:00"], ["--since", "9999"], id="since-10000"
        ),
        pytest.param(
            ["metrics", "cpu_usage", "--bucket", "99999999999999d"],
            ["--bucket", "longer"],
            id="bucket-huge",
        ),
        pytest.param(
            ["prune", "--events", "99999999999999d"], ["--events", "longer"], id="prune-huge"
        ),
    ],
)
def test_bad_values_are_usage_errors(db: Path, args: list[str], fragments: list[str]) -> None:
    before = snapshot(db)
    ran = swarmdb(*args, "--db", str(db))
    assert_one_line_error(ran, *fragments, status=2)
    assert snapshot(db) == before


def test_bad_usage_is_status_2(db: Path) -> None:
    for args in (
        ["tasks", "--no-such-option"],
        ["no-such-command"],
        ["tasks", "--limit", "x"],
        ["events", "--limit", str(2**70)],
        ["agents", "--offset", str(2**63)],
    ):
        ran = swarmdb(*args, "--db", str(db))
        assert ran.returncode == 2, ran.describe()
        assert "Traceback" not in ran.stderr


def test_a_database_from_a_newer_release(db: Path) -> None:
    conn = apsw.Connection(str(db))
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
        "VALUES (999, 'core:from_the_future', 'unknown', 0)"
    )
    conn.close()
    before = snapshot(db)
    for command in (["status"], ["tasks"], ["migrate"], ["prune", "--events", "1d"], ["demo"]):
        ran = swarmdb(*command, "--db", str(db))
        assert_one_line_error(ran, "version 999", "newer than this release")
        assert snapshot(db) == before


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[None]:
    """Another process holds the database: an exclusive lock in exclusive locking mode."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import apsw, sys\n"
            "c = apsw.Connection(sys.argv[1])\n"
            "c.execute('PRAGMA locking_mode=EXCLUSIVE')\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
            "c.execute('ROLLBACK')\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=COMMAND_TIMEOUT)
        holder.stdout.close()


@pytest.mark.parametrize(
    "command",
    [["status"], ["tasks"], ["prune", "--events", "2100-01-01"], ["vacuum"]],
    ids=lambda c: c[0],
)
def test_a_locked_database(db: Path, command: list[str]) -> None:
    before = snapshot(db)
    with held_by_another_process(db):
        # A short busy timeout keeps the wait brief; the default (5 s) behaves the same.
        ran = swarmdb(*command, "--db", f"sqlite:///{db}?busy_timeout=200")
    assert_one_line_error(ran, "locked")
    assert snapshot(db) == before


def _read_only_runner(folder: Path) -> list[str] | None:
    """How to run a command that cannot write to ``folder``, or None if this machine can't.

    Not root: file permissions do it. Root ignores them, so the command runs in a private
    mount namespace where ``folder`` is a read-only bind mount (a read-only file system).
    """
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}' && true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return None
    return [
        unshare,
        "-m",
        "sh",
        "-c",
        f'mount --bind -o ro "{folder}" "{folder}" && exec "$@"',
        "sh",
    ]


def _run_read_only(prefix: list[str], *args: str) -> Ran:
    command = [*prefix, sys.executable, "-m", "ruv_swarm_persistence", *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=cli_env(), check=False
    )
    return Ran(list(args), done.returncode, done.stdout, done.stderr)


def test_a_read_only_database(db: Path) -> None:
    folder = db.parent
    prefix = _read_only_runner(folder)
    if prefix is None:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot make a read-only file system here (root without unshare/mount)")
        pytest.skip("root ignores file permissions and no mount namespace is available here")
    before = snapshot(db)
    mtime = db.stat().st_mtime_ns
    if not prefix:
        db.chmod(0o444)
        folder.chmod(0o555)
    try:
        for command in (["prune", "--events", "2100-01-01"], ["vacuum"], ["demo", "--fresh"]):
            ran = _run_read_only(prefix, *command, "--db", str(db))
            assert_one_line_error(ran)
            assert "read-only" in ran.stderr.lower(), ran.describe()
    finally:
        if not prefix:
            folder.chmod(0o755)
            db.chmod(0o644)
    assert db.stat().st_mtime_ns == mtime
    assert snapshot(db) == before


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    text = b"this is not a database, just text\n" * 200
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(text)
    for command in (["status"], ["prune", "--events", "1d"], ["demo"]):
        ran = swarmdb(*command, "--db", str(bogus))
        assert_one_line_error(ran)
        assert bogus.read_bytes() == text
