"""``swarmdb serve`` as a user runs it: it says where it listens, serves, and stops on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env

#: Bounds each wait; never an assertion about speed.
TIMEOUT = 60


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``swarmdb serve ARGS --port 0``, its process and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ruv_swarm_persistence", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"on (http://\S+/) ", line)
        assert found, line + proc.stderr.read()
        yield proc, found.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.cli.conftest import swarmdb

    path = tmp_path_factory.mktemp("serve") / "swarm.db"
    made = swarmdb("demo", "--agents", "3", "--tasks", "30", "--seed", "5", "--db", str(path))
    assert made.returncode == 0, made.describe()
    return path


def test_serves_the_database_read_only_and_stops_on_ctrl_c(database: Path) -> None:
    with serving("--db", str(database)) as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        overview = get(url + "api/overview")
        assert isinstance(overview, dict)
        assert overview["tasks_total"] == 30
        assert overview["actions"] is False
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 130  # interrupted, as every swarmdb command says it


def test_a_missing_database_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruv_swarm_persistence", "serve", "--db", str(tmp_path / "x.db")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=cli_env(),
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: no database at")
    assert not (tmp_path / "x.db").exists()


def test_a_port_in_use_is_an_error(database: Path) -> None:
    with serving("--db", str(database)) as (_, url):
        port = url.rsplit(":", 1)[1].strip("/")
        done = subprocess.run(
            [sys.executable, "-m", "ruv_swarm_persistence", "serve", "--db", str(database),
             "--port", port],
            capture_output=True, text=True, timeout=TIMEOUT, env=cli_env(),
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
