"""``swarmdb demo``: run the simulated swarm with a live display, then summarise it."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.prompt import Confirm
from rich.text import Text

from .. import __version__
from ..demo import DemoConfig, DemoProgress, DemoSummary, demo_retry_policy, has_data, run_demo
from ..models import EventModel
from ..query import QueryBuilder
from ..urls import DEFAULT_PATH
from ._app import app
from ._common import (
    CliError,
    DbOption,
    JsonOption,
    cell,
    db_url,
    display_url,
    err,
    locate,
    open_db,
    opened,
    out,
    print_json,
    run,
    styled,
    table,
)

#: The first event of every database the demo makes: how ``--fresh`` tells the demo's own
#: databases from anyone else's, which it never deletes without asking.
DEMO_MARK = "demo.started"


@dataclass(frozen=True, slots=True)
class _Found:
    """What an existing swarm database holds, as far as the demo cares."""

    has_data: bool
    made_by_demo: bool
    agents: int


async def _inspect(url: str) -> _Found:
    """Look at an existing database without changing it (a foreign file is refused)."""
    async with opened(url, current_schema=False) as storage:
        marks = await storage.query(
            QueryBuilder(EventModel).where_eq("event_type", DEMO_MARK).limit(1)
        )
        return _Found(
            has_data=await has_data(storage),
            made_by_demo=bool(marks),
            agents=len(await storage.list_agents()),
        )


def _remove_database_file(path: Path) -> None:
    """Delete a SQLite database file and the journal files beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _confirm_replace(path: Path, found: _Found) -> None:
    """Ask before deleting a swarm database the demo did not make; refuse without a terminal."""
    agents = f"{found.agents:,} agent" + ("" if found.agents == 1 else "s")
    what = f"a swarm database the demo did not make ({agents})"
    if not (sys.stdin.isatty() and err.is_terminal):
        raise CliError(
            f"{path} holds {what}; --fresh replaces only databases the demo made. "
            "Delete it yourself, or choose another file with --db"
        )
    if not Confirm.ask(
        f"{path} holds {what}. Delete it and start afresh?", console=err, default=False
    ):
        raise CliError(f"kept {path}; nothing was changed")


def _prepare_sqlite(path: Path, url: str, fresh: bool) -> None:
    """Make room for the demo in a SQLite file, deleting only what it may delete."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        # Journal files left without their database belong to nothing: a new file must
        # not pick them up.
        _remove_database_file(path)
        return
    if path.is_dir():
        raise CliError(f"{path} is a directory")
    if size == 0:
        return
    found = run(_inspect(url))
    if not found.has_data and not found.made_by_demo:
        return
    if not fresh:
        hint = (
            "run 'swarmdb demo --fresh' to replace it"
            if found.made_by_demo
            else "choose another file with --db"
        )
        raise CliError(f"{path} already holds a swarm's data; {hint}")
    if not found.made_by_demo:
        _confirm_replace(path, found)
    _remove_database_file(path)


class _Display:
    """The live view: a progress bar, the agents and the running counts.

    Everything one frame shows comes from one snapshot: ``update`` only swaps in the latest,
    and the frame (drawn by Live's refresh thread) sets the bar from the snapshot it draws the
    counts from. The bar counts finished tasks (completed + failed + cancelled).
    """

    def __init__(self, total: int) -> None:
        self.snapshot: DemoProgress | None = None
        self.bar = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            # The snapshot's clock, so the time is of the same moment as the counts (rich's
            # own elapsed column also stops for good the first time a bar is full).
            TextColumn("{task.fields[elapsed]}"),
        )
        self.task = self.bar.add_task("starting", total=total, elapsed=_seconds(0.0))

    def update(self, p: DemoProgress) -> None:
        """Show this snapshot from the next frame on."""
        self.snapshot = p

    def __rich__(self) -> RenderableType:
        p = self.snapshot
        if p is None:
            return self.bar
        self.bar.update(
            self.task,
            completed=p.finished,
            total=p.total,
            description=p.phase,
            elapsed=_seconds(p.elapsed),
        )
        agents = table(None, "agent", "state", "task", "done", "failed")
        for a in p.agents.values():
            agents.add_row(
                cell(a.agent_id),
                styled({"crashed": "error", "working": "running"}.get(a.state, a.state)),
                cell(a.current or ""),
                cell(a.completed),
                cell(a.failed_attempts),
            )
        stored = f"stored {p.stored:,} of {p.total:,}  " if p.stored < p.total else ""
        facts = Text(
            f"{stored}finished {p.finished:,} (completed {p.completed:,}, failed {p.failed:,}, "
            f"cancelled {p.cancelled:,})  failed attempts {p.failed_attempts:,}  "
            f"messages {p.messages_sent:,} sent / {p.messages_read:,} read"
        )
        if p.crashed_agent:
            facts.append(f"  {p.crashed_agent} crashed", style="red")
        return Group(self.bar, agents, facts)


def _seconds(elapsed: float) -> str:
    return f"{elapsed:6.1f} s"


def _render(summary: DemoSummary, url: str, path: str | None, explicit: bool) -> None:
    s = summary
    completed = s.tasks_by_status.get("completed", 0)
    out.print(
        Text.assemble(
            ("demo swarm finished", "bold green"),
            f" in {s.elapsed_s:.1f} s: {completed:,} of {s.tasks:,} tasks completed by "
            f"{s.agents} agents ({s.throughput_tasks_per_s:,.0f} tasks/s)",
        )
    )
    by_status = table("tasks by status", "status", "tasks")
    for status, n in s.tasks_by_status.items():
        if n:
            by_status.add_row(styled(status), cell(f"{n:,}"))
    out.print(by_status)

    facts = table("what happened", "", "")
    facts.show_header = False
    facts.add_row("retries", cell(f"{s.retries:,} ({s.failed_attempts:,} failed attempts)"))
    crash = (
        f" ({s.crashed_agent} crashed holding work; reaped: {', '.join(s.reaped_agents) or 'no'})"
        if s.crashed_agent
        else ""
    )
    facts.add_row("recovered leases", cell(f"{s.recovered_leases:,}{crash}"))
    facts.add_row(
        "messages",
        cell(f"{s.messages_sent:,} sent, {s.messages_read:,} read, {s.messages_unread:,} unread"),
    )
    facts.add_row("events", cell(f"{s.events:,} (last sequence {s.last_sequence:,})"))
    facts.add_row("metrics", cell(f"{s.metrics:,}"))
    out.print(facts)

    agents = table(
        "per agent",
        "agent",
        "status",
        "tasks done",
        "ms avg",
        "ms p95",
        "cpu avg",
        "cpu max",
    )
    for a in s.per_agent:
        agents.add_row(
            cell(a.agent_id),
            styled(a.status),
            cell(a.tasks_completed),
            cell(f"{a.task_ms_mean:.1f}"),
            cell(f"{a.task_ms_p95:.1f}"),
            cell(f"{a.cpu_mean:.1f}%"),
            cell(f"{a.cpu_max:.1f}%"),
        )
    out.print(agents)

    where = f"database: {path}" if path else f"database: {display_url(url)}"
    if url.startswith("memory"):
        where += " (in memory: gone now that the demo has exited)"
    out.print(Text(where, style="bold"))
    if url.startswith("memory"):
        return
    heading = "try next:"
    if not explicit or os.environ.get("SWARM_DB_URL") == url:
        db = ""  # the default, or $SWARM_DB_URL, which the same shell still has
    elif display_url(url) != url:
        # A password is never printed: the hints read the URL from the environment.
        db = ""
        heading = f"try next, with SWARM_DB_URL set to {display_url(url)} (its password too):"
    else:
        db = f" --db {shlex.quote(url)}"
    swarmdb = _swarmdb_command()
    victim = s.crashed_agent or (s.per_agent[0].agent_id if s.per_agent else "researcher-1")
    out.print(heading)
    for command in (
        f"{swarmdb} status{db}",
        f"{swarmdb} tasks --status failed{db}",
        f"{swarmdb} events --agent {shlex.quote(victim)} --since 10m{db}",
        f"{swarmdb} metrics cpu_usage --by agent --bucket 1m{db}",
        f"{swarmdb} messages --unread{db}",
        f"{swarmdb} tail{db}",
    ):
        out.print(Text(f"  {command}", style="cyan"))


def _swarmdb_command() -> str:
    """``swarmdb`` as this process was started, so that a hint runs as printed.

    Plain ``swarmdb`` when that name on PATH is this program; else the path it was run by
    (``.venv/bin/swarmdb`` after ``make demo``, relative when under the current directory),
    or the interpreter and ``-m ruv_swarm_persistence``.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    started = Path(argv0)
    if started.name == "__main__.py" and started.parent.name == "ruv_swarm_persistence":
        return f"{_shown_path(sys.executable)} -m ruv_swarm_persistence"
    if started.stem != "swarmdb":
        return "swarmdb"  # run some other way (embedded, a test): the documented name
    on_path = shutil.which("swarmdb")
    try:
        if on_path is not None and os.path.samefile(on_path, argv0):
            return "swarmdb"
    except OSError:
        pass
    return _shown_path(argv0)


def _shown_path(path: str) -> str:
    """A program's path for a hint: relative to the current directory when under it."""
    full = os.path.abspath(path)  # not realpath: a venv's python must stay the venv's
    relative = os.path.relpath(full, os.getcwd())
    if relative.split(os.sep)[0] != os.pardir:
        # A bare name would be looked up on PATH instead.
        full = relative if os.sep in relative else os.path.join(os.curdir, relative)
    return shlex.quote(full)


@app.command()
def demo(
    ctx: typer.Context,
    agents: Annotated[
        int, typer.Option("--agents", min=1, metavar="N", help="How many agents.")
    ] = 8,
    tasks: Annotated[
        int, typer.Option("--tasks", min=1, metavar="N", help="How many tasks in the DAG.")
    ] = 2000,
    seed: Annotated[
        int,
        typer.Option("--seed", metavar="N", help="Fixes the swarm, its task graph and failures."),
    ] = 7,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Replace a SQLite file the demo made earlier (any other database: asked "
            "on a terminal, refused without one).",
        ),
    ] = False,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Run a simulated swarm on the database (a new ./swarm.db by default) and summarise it.

    8 agents heartbeat and work a DAG of 2,000 tasks with priorities and dependencies, each
    with a Worker (as 'swarmdb worker' runs) claiming under leases; some tasks fail and retry
    with backoff, one agent crashes and its work is recovered after the lease, agents message
    each other; events and metrics are recorded throughout. A database that already holds
    data is refused; --fresh replaces one that the demo itself made (its first event is
    'demo.started') and never deletes a file that is not a swarm database.
    """
    url = db_url(ctx, db)
    explicit = bool(db or ctx.find_root().params.get("db") or os.environ.get("SWARM_DB_URL"))
    parsed = locate(url, must_exist=False)
    if parsed.scheme == "sqlite":
        _prepare_sqlite(Path(parsed.location), url, fresh)
    elif fresh and parsed.scheme != "memory":
        raise CliError(
            f"--fresh replaces a SQLite file; for {parsed.scheme} point --db at an empty "
            "database or schema instead (e.g. ?schema=demo)"
        )
    config = DemoConfig(agents=agents, tasks=tasks, seed=seed)

    async def go() -> tuple[DemoSummary, str | None]:
        storage = await open_db(
            url,
            must_exist=False,
            write=True,
            lease=config.lease,
            retry_policy=demo_retry_policy(),
        )
        try:
            if await has_data(storage):
                raise CliError(
                    f"{display_url(url)} already holds a swarm's data; point --db at an empty "
                    "database or schema (e.g. ?schema=demo)"
                )
            await storage.store_event(
                EventModel.new(
                    DEMO_MARK,
                    {"agents": agents, "tasks": tasks, "seed": seed, "version": __version__},
                )
            )
            display = _Display(tasks)
            live_view = err.is_terminal and not json
            last_phase: list[str] = []

            def on_progress(p: DemoProgress) -> None:
                display.update(p)
                if not live_view and not json and (not last_phase or last_phase[-1] != p.phase):
                    last_phase.append(p.phase)
                    err.print(f"demo: {p.phase}")

            if live_view:
                with Live(display, console=err, refresh_per_second=8, transient=True):
                    summary = await run_demo(storage, config, on_progress)
            else:
                summary = await run_demo(storage, config, on_progress)
            path = getattr(storage, "path", None)
            return summary, (path if isinstance(path, str) else None)
        finally:
            await storage.close()

    summary, path = run(go())
    if path is not None:
        path = os.path.abspath(path)
    if json:
        data: dict[str, Any] = summary.to_dict()
        data["database"] = display_url(url)
        data["path"] = path
        print_json(data)
        return
    _render(summary, url, path, explicit or url != DEFAULT_PATH)
