"""``swarmdb worker``: run a :class:`~ruv_swarm_persistence.worker.Worker` from the shell.

The handlers come from a module (``module:attribute``: a mapping of task types to handlers,
or a callable returning one), imported with the current directory on ``sys.path`` as
``python -m`` would. Signals are handled here, not by the worker: the first SIGINT or SIGTERM
stops it gracefully (nothing more is claimed, running handlers get ``--grace`` to finish, the
rest are cancelled and their tasks released), a second one stops it at once (still
releasing). Exit status 0 after SIGTERM, 130 after Ctrl-C, as for any interrupted command.

On a terminal a live status line shows the worker's counts and rate; otherwise the worker's
log records are written as plain lines (one per finished task, and at start and stop).
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from typing import Annotated, Any, Final

import typer
from rich.live import Live
from rich.text import Text

from ..worker import Handler, Worker, WorkerStats
from ._app import app
from ._common import (
    CliError,
    DbOption,
    Interrupted,
    UsageError,
    db_url,
    display_url,
    err,
    open_db,
    parse_duration,
    run,
)

#: The window the status line's rate is measured over, in seconds.
RATE_WINDOW_S: Final = 10.0
#: How often the status line takes a new snapshot of the worker's counts.
STATUS_EVERY_S: Final = 0.25

log = logging.getLogger("ruv_swarm_persistence.worker")


def load_handlers(spec: str) -> Mapping[str, Handler]:
    """The handlers named by ``module:attribute`` (a mapping, or a callable returning one)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"HANDLERS: {spec!r} is not module:attribute (like myapp.tasks:handlers)")
    # As ``python -m`` does: modules next to where the command runs are importable.
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise CliError(
                f"cannot import {module_name!r}: no such module (run swarmdb from the folder "
                "that holds it, or install it)"
            ) from None
        raise CliError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise CliError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CliError(f"{module_name} has no attribute {attribute!r}") from None
    if callable(found) and not isinstance(found, Mapping):
        try:
            found = found()
        except Exception as exc:
            raise CliError(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(found, Mapping):
        raise CliError(
            f"{spec} is a {type(found).__name__}, not a mapping of task types to handlers"
        )
    if not found:
        raise CliError(f"{spec} holds no handlers")
    for task_type, handler in found.items():
        if not isinstance(task_type, str) or not task_type:
            raise CliError(f"{spec}: a task type must be a non-empty string, not {task_type!r}")
        if not callable(handler):
            raise CliError(f"{spec}: the handler of {task_type!r} is not callable")
    return found


def _seconds(text: str, option: str, *, zero_ok: bool = False) -> float:
    """Seconds (``2.5``) or a duration (``30s``, ``2m``) as seconds."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text, option).total_seconds()
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"{option}: {text!r} is not a positive number of seconds")
    return value


def _types(values: list[str] | None) -> list[str] | None:
    """``--types a,b --types c`` as ``["a", "b", "c"]``."""
    if not values:
        return None
    types = [t.strip() for v in values for t in v.split(",") if t.strip()]
    if not types:
        raise UsageError("--types: name at least one task type")
    return types


class _Status:
    """The live status line: the worker's counts and its rate, from the latest snapshot.

    ``sample`` runs in the event loop; the frame is drawn by Live's refresh thread from the
    snapshot it finds, so one frame's numbers are of one moment.
    """

    def __init__(self, agent_id: str, where: str, types: list[str]) -> None:
        self.agent_id = agent_id
        self.where = where
        self.types = types
        self.stats = WorkerStats()
        self.stopping = ""
        self.rate = 0.0
        self._history: collections.deque[tuple[float, int]] = collections.deque()

    def sample(self, stats: WorkerStats, now: float | None = None) -> None:
        """Take a snapshot of the counts; the rate is finished tasks per second lately."""
        now = time.monotonic() if now is None else now
        finished = stats.completed + stats.failed
        history = self._history
        history.append((now, finished))
        while len(history) > 2 and now - history[1][0] >= RATE_WINDOW_S:
            history.popleft()
        first_time, first_count = history[0]
        span = now - first_time
        self.rate = (finished - first_count) / span if span > 0 else 0.0
        self.stats = stats

    def __rich__(self) -> Text:
        s = self.stats
        line = Text()
        line.append(f"worker {self.agent_id}", style="bold")
        line.append(f" on {self.where} ({', '.join(self.types)})  ", style="dim")
        line.append(f"claimed {s.claimed:,}  running {s.running:,}  ")
        line.append(f"done {s.completed:,}", style="green")
        line.append("  ")
        line.append(f"failed {s.failed:,}", style="red" if s.failed else "")
        others = [
            f"{name} {n:,}"
            for name, n in (
                ("lease lost", s.lease_lost),
                ("cancelled", s.cancelled),
                ("released", s.released),
                ("unrecorded", s.unrecorded),
            )
            if n
        ]
        if others:
            line.append("  " + "  ".join(others), style="yellow")
        line.append(f"  {self.rate:,.1f} tasks/s")
        if self.stopping:
            line.append(f"  {self.stopping}", style="bold yellow")
        return line


def _log_to_stderr(level: int) -> None:
    """Show the worker's log records on stderr, unless ``-v``/``--log-level`` already do."""
    library = logging.getLogger("ruv_swarm_persistence")
    if library.handlers:
        return
    handler: logging.Handler
    if err.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, markup=False, log_time_format="%X")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    library.addHandler(handler)
    library.setLevel(level)


@app.command()
def worker(
    ctx: typer.Context,
    handlers: Annotated[
        str,
        typer.Argument(
            metavar="HANDLERS",
            help="module:attribute naming a mapping of task types to handlers, or a callable "
            "returning one (e.g. myapp.tasks:handlers).",
            show_default=False,
        ),
    ],
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            metavar="NAME",
            help="The agent id to work as, one per worker (default: HOST-PID).",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=1, metavar="N", help="Tasks run at once."),
    ] = 1,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--types",
            "-t",
            metavar="TYPES",
            help="Claim only these task types (comma-separated or repeated; default: every "
            "type with a handler).",
            show_default=False,
        ),
    ] = None,
    lease: Annotated[
        str,
        typer.Option(
            "--lease",
            metavar="SECONDS",
            help="Lease of each claim, renewed every third of it while its handler runs "
            "(seconds, or a duration like 2m).",
        ),
    ] = "30",
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            metavar="SECONDS",
            help="How long running handlers may finish once asked to stop.",
        ),
    ] = "5",
    no_events: Annotated[
        bool,
        typer.Option("--no-events", help="Record no worker.* and task.* events."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Work the task queue with handlers from a module until stopped.

    Claims ready tasks of the handled types (woken as soon as one is ready), runs each
    handler (async, or a plain function in a thread) under a renewed lease, and completes
    the task with its return value or fails it with its error (retried by the storage).
    SIGTERM or Ctrl-C stops it gracefully: nothing more is claimed, running handlers get
    --grace to finish, then are cancelled and their tasks released for other workers; a
    second signal stops it at once. Exit status 0 after SIGTERM, 130 after Ctrl-C.
    """
    url = db_url(ctx, db)
    lease_s = _seconds(lease, "--lease")
    grace_s = _seconds(grace, "--grace", zero_ok=True)
    task_types = _types(types)
    found = load_handlers(handlers)
    if task_types is not None:
        missing = [t for t in task_types if t not in found]
        if missing:
            raise UsageError(
                f"--types: no handler for {', '.join(map(repr, missing))} in {handlers} "
                f"(it has {', '.join(map(repr, found))})"
            )
    agent_id = agent or f"{socket.gethostname()}-{os.getpid()}"
    live = err.is_terminal
    # A terminal shows the status line and only warnings above it; piped, one line per task.
    _log_to_stderr(logging.WARNING if live else logging.INFO)

    async def go() -> str | None:
        storage = await open_db(url, write=True)
        try:
            try:
                w = Worker(
                    storage,
                    agent_id,
                    found,
                    concurrency=concurrency,
                    task_types=task_types,
                    lease=lease_s,
                    grace=grace_s,
                    events=not no_events,
                )
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            return await _serve(w, display_url(url), grace_s, live)
        finally:
            await storage.close()

    if run(go()) == "SIGINT":
        raise Interrupted  # stopped cleanly, but by Ctrl-C: status 130 as for any command


async def _serve(w: Worker, where: str, grace: float, live: bool) -> str | None:
    """Run the worker until a signal stops it; the name of the first signal, if any."""
    loop = asyncio.get_running_loop()
    received: list[str] = []
    status = _Status(w.agent_id, where, w.task_types)

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        if len(received) == 1:
            running = w.stats.running
            note = (
                f"stopping: waiting up to {grace:g}s for {running} running task(s)"
                if running and grace
                else "stopping"
            )
            status.stopping = note + (" (again to stop now)" if running and grace else "")
            w.stop()
        else:
            note = "stopping now: cancelling and releasing running tasks"
            status.stopping = note
            w.stop(now=True)
        if not live:
            log.info("worker %s %s (%s)", w.agent_id, note, sig.name)

    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # no signal handlers here (Windows)
            continue
        handled.append(sig)
    try:
        if live:
            with Live(status, console=err, refresh_per_second=4, transient=False):
                sampler = asyncio.ensure_future(_sample(w, status))
                try:
                    await w.run()
                finally:
                    sampler.cancel()
                    status.sample(w.stats)
        else:
            await w.run()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return received[0] if received else None


async def _sample(w: Worker, status: _Status) -> None:
    while True:
        status.sample(w.stats)
        await asyncio.sleep(STATUS_EVERY_S)
