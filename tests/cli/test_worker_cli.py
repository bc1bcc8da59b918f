"""``swarmdb worker``: handlers from a module, run until a signal stops the worker."""

from __future__ import annotations

import asyncio
import io
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from ruv_swarm_persistence import AgentStatus, TaskModel, TaskStatus, init_storage
from ruv_swarm_persistence.cli.worker import _Status
from ruv_swarm_persistence.worker import WorkerStats

from .conftest import COMMAND_TIMEOUT, assert_one_line_error, cli_env, swarmdb

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.workers.handlers:handlers"


class _Worker:
    """A ``swarmdb worker`` process whose stderr lines are read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ruv_swarm_persistence", "worker", *args],
            cwd=ROOT,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        stderr = self.proc.stderr
        assert stderr is not None
        self.reader = threading.Thread(
            target=lambda: [self.lines.put(x) for x in stderr], daemon=True
        )
        self.reader.start()

    def wait_for_line(self, fragment: str) -> str:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            for line in self.seen:
                if fragment in line:
                    return line
            try:
                self.seen.append(self.lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line with {fragment!r}:\n{''.join(self.seen)}") from None

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit; the status, stdout and every stderr line."""
        try:
            self.proc.wait(timeout=COMMAND_TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=COMMAND_TIMEOUT)  # stderr read to its end
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        with self.proc.stdout, self.proc.stderr:
            return self.proc.returncode, self.proc.stdout.read(), "".join(self.seen)


def _make_db(path: Path, tasks: list[TaskModel]) -> Path:
    async def make() -> None:
        async with await init_storage(str(path)) as storage:
            await storage.store_tasks(tasks)

    asyncio.run(make())
    return path


async def _wait_final(path: Path, ids: list[str]) -> dict[str, TaskModel]:
    async with await init_storage(str(path)) as storage:
        done = {}
        for task_id in ids:
            task = await storage.wait_for_task(task_id, COMMAND_TIMEOUT)
            assert task is not None, task_id
            done[task_id] = task
        return done


async def _read(path: Path) -> tuple[dict[str, TaskModel], dict[str, AgentStatus], list[str]]:
    async with await init_storage(str(path)) as storage:
        tasks = {t.id: t for t in await storage.tasks.find_all()}
        agents = {a.id: a.status for a in await storage.list_agents()}
        events = [e.event_type for e in await storage.read_events(0, 10_000)]
    return tasks, agents, events


def test_the_worker_runs_the_handlers_until_sigterm(tmp_path: Path) -> None:
    db = _make_db(
        tmp_path / "swarm.db",
        [
            TaskModel.new("echo", {"i": 1}, id="e1"),
            TaskModel.new("echo", {"i": 2}, id="e2"),
            TaskModel.new("square", {"n": 7}, id="sq"),
            TaskModel.new("fail", id="bad", max_retries=0),
        ],
    )
    worker = _Worker(HANDLERS, "--db", str(db), "--agent", "w1", "--concurrency", "2")
    done = asyncio.run(_wait_final(db, ["e1", "e2", "sq", "bad"]))
    worker.proc.send_signal(signal.SIGTERM)
    status, stdout, stderr = worker.finish()
    assert status == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert done["e1"].result == {"echo": {"i": 1}, "by": "w1"}
    assert done["sq"].result == 49
    assert done["bad"].status == TaskStatus.Failed
    assert done["bad"].error == "RuntimeError: this task always fails"
    # Piped: plain log lines, one per finished task, and at start and stop.
    assert "worker w1 started" in stderr
    assert len(re.findall(r"task \S+ \(\w+\) completed", stderr)) == 3
    assert "task bad (fail) failed for good (attempt 1): RuntimeError: this task" in stderr
    assert "worker w1 stopped" in stderr
    _, agents, events = asyncio.run(_read(db))
    assert agents == {"w1": AgentStatus.Shutdown}
    assert events.count("task.completed") == 3
    assert events[0] == "worker.started"
    assert events[-1] == "worker.stopped"


def test_ctrl_c_waits_for_the_grace_and_a_second_one_stops_at_once(tmp_path: Path) -> None:
    db = _make_db(
        tmp_path / "swarm.db",
        [TaskModel.new("slow", {"marker_dir": str(tmp_path), "hang": True}, id="hangs")],
    )
    # A callable returning the handlers works as well as the mapping itself.
    worker = _Worker("tests.workers.handlers:make_handlers", "--db", str(db), "--agent", "w1",
                     "--grace", "1h")  # fmt: skip
    worker.wait_for_line("worker w1 started")
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while not (tmp_path / "started-hangs-w1").exists():
        assert worker.proc.poll() is None, worker.finish()
        assert time.monotonic() < deadline
        time.sleep(0.02)

    worker.proc.send_signal(signal.SIGINT)
    worker.wait_for_line("stopping: waiting up to 3600s for 1 running task(s)")
    assert worker.proc.poll() is None  # within its grace: the handler may still finish
    worker.proc.send_signal(signal.SIGINT)
    status, _, stderr = worker.finish()
    assert status == 130, stderr
    assert "stopping now" in stderr
    assert "Traceback" not in stderr
    tasks, agents, events = asyncio.run(_read(db))
    task = tasks["hangs"]
    assert (task.status, task.assigned_to, task.retry_count) == (TaskStatus.Pending, None, 0)
    assert agents == {"w1": AgentStatus.Shutdown}
    assert "task.released" in events


def test_sigterm_releases_what_still_runs_after_the_grace(tmp_path: Path) -> None:
    db = _make_db(
        tmp_path / "swarm.db",
        [TaskModel.new("slow", {"marker_dir": str(tmp_path), "hang": True}, id="hangs")],
    )
    worker = _Worker(HANDLERS, "--db", str(db), "--agent", "w1", "--grace", "0.2",
                     "--types", "slow,echo", "--no-events")  # fmt: skip
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while not (tmp_path / "started-hangs-w1").exists():
        assert worker.proc.poll() is None, worker.finish()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    worker.proc.send_signal(signal.SIGTERM)
    status, _, stderr = worker.finish()
    assert status == 0, stderr
    assert "task hangs (slow) released" in stderr
    tasks, _, events = asyncio.run(_read(db))
    assert (tasks["hangs"].status, tasks["hangs"].assigned_to) == (TaskStatus.Pending, None)
    assert events == []  # --no-events


@pytest.mark.parametrize(
    ("spec", "fragments", "status"),
    [
        ("no-colon", ["module:attribute"], 2),
        ("tests.workers.nosuch:handlers", ["cannot import", "no such module"], 1),
        ("tests.workers.handlers:nothing", ["has no attribute 'nothing'"], 1),
        ("tests.workers.handlers:not_handlers", ["is a int, not a mapping"], 1),
    ],
)
def test_handlers_that_cannot_be_loaded_are_one_line_errors(
    tmp_path: Path, spec: str, fragments: list[str], status: int
) -> None:
    db = _make_db(tmp_path / "swarm.db", [])
    ran = swarmdb("worker", spec, "--db", str(db), cwd=ROOT)
    assert_one_line_error(ran, *fragments, status=status)


@pytest.mark.parametrize(
    ("args", "fragments", "status"),
    [
        (["--types", "echo,nope"], ["--types", "no handler for 'nope'"], 2),
        (["--lease", "soon"], ["--lease", "not a duration"], 2),
        (["--lease", "0"], ["--lease", "positive"], 2),
    ],
)
def test_bad_options_are_usage_errors(
    tmp_path: Path, args: list[str], fragments: list[str], status: int
) -> None:
    db = _make_db(tmp_path / "swarm.db", [])
    ran = swarmdb("worker", HANDLERS, "--db", str(db), *args, cwd=ROOT)
    assert_one_line_error(ran, *fragments, status=status)


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    ran = swarmdb("worker", HANDLERS, "--db", str(tmp_path / "typo.db"), cwd=ROOT)
    assert_one_line_error(ran, "no database at")
    assert not (tmp_path / "typo.db").exists()


def test_every_placeholder_is_an_upper_case_word() -> None:
    ran = swarmdb("worker", "--help")
    assert ran.returncode == 0, ran.describe()
    usage = ran.stdout.splitlines()[0]
    assert usage.endswith("[OPTIONS] {HANDLERS}"), usage
    options = re.findall(r"^\s+(?:-\w, )?--[\w-]+ ([A-Z_]+)\s", ran.stdout, flags=re.MULTILINE)
    assert sorted(options) == ["N", "NAME", "SECONDS", "SECONDS", "TYPES", "URL"]


def test_the_status_line_shows_counts_and_rate() -> None:
    status = _Status("w1", "swarm.db", ["echo", "fail"])
    status.sample(WorkerStats(claimed=1, running=1), now=100.0)
    status.sample(WorkerStats(claimed=9, running=2, completed=6, failed=1, released=1), now=102.0)
    console = Console(file=io.StringIO(), width=300, color_system=None, record=True)
    console.print(status)
    line = console.export_text().strip()
    assert line.startswith("worker w1 on swarm.db (echo, fail)")
    assert "claimed 9  running 2  done 6  failed 1  released 1  3.5 tasks/s" in line
    status.stopping = "stopping: waiting up to 5s for 2 running task(s)"
    console.print(status)
    assert console.export_text().strip().endswith(status.stopping)
