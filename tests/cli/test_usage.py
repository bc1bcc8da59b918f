"""``swarmdb`` as a shell tool: exit statuses, closed pipes, Ctrl-C, completion, logging, help."""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import (
    COMMAND_TIMEOUT,
    Demo,
    assert_one_line_error,
    cli_env,
    snapshot,
    swarmdb,
)

COMMAND = [sys.executable, "-m", "ruv_swarm_persistence"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["tasks", "--status", "bogus"], id="tasks-status"),
        pytest.param(["agents", "--status", "sleeping"], id="agents-status"),
        pytest.param(["events", "--since", "10x"], id="since"),
        pytest.param(["events", "--until", "yesterday"], id="until"),
        pytest.param(["agents", "--where", "{bad"], id="where-json"),
        pytest.param(["tasks", "--where", '{"no_such": 1}'], id="where-field"),
        pytest.param(["metrics", "cpu_usage", "--by", "colour"], id="by"),
        pytest.param(["metrics", "cpu_usage", "--bucket", "0s"], id="bucket"),
        pytest.param(["prune"], id="prune-nothing"),
        pytest.param(["prune", "--events", "yesterday"], id="prune-time"),
        pytest.param(["tasks", "--json", "--csv"], id="json-csv"),
        pytest.param(["events", "--csv", "--tsv"], id="csv-tsv"),
        pytest.param(["--log-level", "loud", "status"], id="log-level"),
    ],
)
def test_bad_usage_is_one_error_line_and_status_2(
    demo: Demo, tmp_path: Path, args: list[str]
) -> None:
    db = demo.copy(tmp_path / "swarm.db")
    before = snapshot(db)
    ran = swarmdb(*args, "--db", str(db))
    assert ran.returncode == 2, ran.describe()
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.describe()
    assert lines[0].startswith("error: "), ran.describe()
    assert ran.stdout == ""
    assert snapshot(db) == before


def test_typer_usage_errors_are_status_2_too(demo: Demo) -> None:
    for args in (["tasks", "--offset", "-1"], ["events", "--no-such-option"], ["nope"]):
        ran = swarmdb(*args, "--db", str(demo.path))
        assert ran.returncode == 2, ran.describe()
        assert "Traceback" not in ran.stderr


def test_errors_about_the_database_stay_status_1(tmp_path: Path) -> None:
    ran = swarmdb("tasks", "--db", str(tmp_path / "missing.db"))
    assert_one_line_error(ran, "no database at")


def _pipe(size: int) -> tuple[int, int]:
    """A pipe whose buffer is ``size`` bytes where the platform allows (Linux), so that a
    command's output does not fit in it whatever the size of the demo."""
    read_end, write_end = os.pipe()
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        fcntl.fcntl(write_end, set_size, size)
    return read_end, write_end


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["events", "-n", "0"], id="events-table"),
        pytest.param(["events", "-n", "0", "--json"], id="events-json-lines"),
        pytest.param(["tasks", "-n", "0", "--json"], id="tasks-json"),
        pytest.param(["tasks", "-n", "0", "--csv"], id="tasks-csv"),
    ],
)
def test_a_closed_pipe_ends_quietly_with_status_0(demo: Demo, args: list[str]) -> None:
    """``swarmdb events | head -1``: the reader goes away after a few bytes, as with cat."""
    whole = swarmdb(*args, "--db", str(demo.path))
    assert whole.returncode == 0, whole.describe()
    assert len(whole.stdout) > 8192  # more than the pipe holds: the command must meet EPIPE
    read_end, write_end = _pipe(4096)
    proc = subprocess.Popen(
        [*COMMAND, *args, "--db", str(demo.path)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    os.close(write_end)
    try:
        assert os.read(read_end, 10)
    finally:
        os.close(read_end)  # head exits
    _, stderr = proc.communicate(timeout=COMMAND_TIMEOUT)
    assert proc.returncode == 0, stderr.decode()
    assert stderr == b""  # no traceback, no "Exception ignored … BrokenPipeError"


def test_ctrl_c_exits_130_without_a_traceback(demo: Demo, tmp_path: Path) -> None:
    db = demo.copy(tmp_path / "tail.db")
    tail = subprocess.Popen(
        [*COMMAND, "tail", "--last", "2", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert tail.stdout is not None
    try:
        # Once the backlog is out, tail is following the log: interrupt it there.
        for _ in range(2):
            assert tail.stdout.readline()
        tail.send_signal(signal.SIGINT)
        _, stderr = tail.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) <= 1


def test_shell_completion_script() -> None:
    # Run from bash, as a user would: the shell is detected from the parent process (bash
    # must not exec the command, hence the "exit"), so a test runner with no shell above it
    # would otherwise get no script at all.
    env = cli_env() | {"SHELL": "/bin/bash"}
    done = subprocess.run(
        ["bash", "-c", shlex.join([*COMMAND, "--show-completion"]) + "; exit $?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "_SWARMDB_COMPLETE" in done.stdout
    assert "complete " in done.stdout  # bash's builtin registers the function
    listed = swarmdb("--help")
    assert "--install-completion" in listed.stdout


def test_verbose_shows_the_library_logs(tmp_path: Path) -> None:
    quiet = swarmdb("migrate", "--db", str(tmp_path / "quiet.db"))
    assert quiet.returncode == 0, quiet.describe()
    assert "applied migration" not in quiet.stderr
    for flags in (["-v"], ["--verbose"], ["--log-level", "INFO"], ["-vv"]):
        path = tmp_path / f"{flags[-1].strip('-')}.db"
        ran = swarmdb(*flags, "migrate", "--db", str(path))
        assert ran.returncode == 0, ran.describe()
        assert "applied migration" in ran.stderr, ran.describe()
    high = swarmdb("--log-level", "error", "migrate", "--db", str(tmp_path / "high.db"))
    assert "applied migration" not in high.stderr


#: An option's placeholder in --help: after the option's names, before two spaces.
_OPTION = re.compile(r"^\s{2}(?:-\w, )?--[\w-]+(?: (?P<metavar>\S+))?(?:\s{2,}|$)")


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["status"],
        ["agents"],
        ["tasks"],
        ["retry"],
        ["events"],
        ["tail"],
        ["messages"],
        ["metrics"],
        ["migrate"],
        ["vacuum"],
        ["checkpoint"],
        ["backup"],
        ["prune"],
        ["copy"],
        ["demo"],
        ["bench"],
    ],
    ids=lambda c: c[0] if c else "swarmdb",
)
def test_every_placeholder_is_an_upper_case_word(command: list[str]) -> None:
    ran = swarmdb(*command, "--help")
    assert ran.returncode == 0, ran.describe()
    usage = ran.stdout.splitlines()[0]
    for placeholder in re.findall(r"[\[{]([^\]}]+)[\]}]", usage):
        assert re.fullmatch(r"[A-Z][A-Z_]*", placeholder), usage
    for line in ran.stdout.splitlines():
        found = _OPTION.match(line)
        if found and found["metavar"]:
            assert re.fullmatch(r"[A-Z][A-Z_]*", found["metavar"]), line
