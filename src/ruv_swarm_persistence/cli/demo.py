"""``swarmdb demo``: run the simulated swarm with a live display, then summarise it."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..demo import DemoConfig, DemoProgress, DemoSummary, demo_retry_policy, has_data, run_demo
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
    out,
    print_json,
    run,
    styled,
    table,
)

_SQLITE_HEADER = b"SQLite format 3\x00"


def _remove_database_file(path: Path) -> None:
    """Delete a SQLite database and its side files; refuse anything else."""
    if path.exists():
        if path.is_dir():
            raise CliError(f"{path} is a directory")
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:
            raise CliError(f"{path} is not a SQLite database; --fresh will not delete it")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class _Display:
    """The live view: a progress bar, the agents and the running counts."""

    def __init__(self, total: int) -> None:
        self.snapshot: DemoProgress | None = None
        self.bar = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.task = self.bar.add_task("starting", total=total)

    def update(self, p: DemoProgress) -> None:
        self.snapshot = p
        done = p.stored if p.phase in ("registering agents", "storing tasks") else p.finished
        self.bar.update(self.task, completed=done, description=p.phase)

    def __rich__(self) -> RenderableType:
        p = self.snapshot
        if p is None:
            return self.bar
        agents = table(None, "agent", "state", "task", "done", "failed")
        for a in p.agents.values():
            agents.add_row(
                cell(a.agent_id),
                styled({"crashed": "error", "working": "running"}.get(a.state, a.state)),
                cell(a.current or ""),
                cell(a.completed),
                cell(a.failed_attempts),
            )
        facts = Text(
            f"completed {p.completed:,}  failed {p.failed:,}  cancelled {p.cancelled:,}  "
            f"failed attempts {p.failed_attempts:,}  messages {p.messages_sent:,} sent / "
            f"{p.messages_read:,} read"
        )
        if p.crashed_agent:
            facts.append(f"  {p.crashed_agent} crashed", style="red")
        return Group(self.bar, agents, facts)


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
    db = f" --db {shlex.quote(url)}" if explicit else ""
    victim = s.crashed_agent or (s.per_agent[0].agent_id if s.per_agent else "researcher-1")
    out.print("try next:")
    for command in (
        f"swarmdb status{db}",
        f"swarmdb tasks --status failed{db}",
        f"swarmdb events --agent {victim} --since 10m{db}",
        f"swarmdb metrics cpu_usage --by agent --bucket 1m{db}",
        f"swarmdb messages --unread{db}",
        f"swarmdb tail{db}",
    ):
        out.print(Text(f"  {command}", style="cyan"))


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
        typer.Option("--fresh", help="Start from an empty file (deletes an existing database)."),
    ] = False,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Run a simulated swarm on the database (a new ./swarm.db by default) and summarise it.

    8 agents heartbeat and work a DAG of 2,000 tasks with priorities and dependencies,
    claiming under leases; some tasks fail and retry with backoff, one agent crashes and its
    work is recovered after the lease, agents message each other; events and metrics are
    recorded throughout. A database that already holds data is refused unless --fresh.
    """
    url = db_url(ctx, db)
    explicit = bool(db or ctx.find_root().params.get("db") or os.environ.get("SWARM_DB_URL"))
    parsed = locate(url, must_exist=False)
    if fresh:
        if parsed.scheme == "sqlite":
            _remove_database_file(Path(parsed.location))
        elif parsed.scheme != "memory":
            raise CliError(
                f"--fresh starts from an empty file; for {parsed.scheme} point --db at an "
                "empty database (or schema) instead"
            )
    config = DemoConfig(agents=agents, tasks=tasks, seed=seed)

    async def go() -> tuple[DemoSummary, str | None]:
        storage = await open_db(
            url, must_exist=False, lease=config.lease, retry_policy=demo_retry_policy()
        )
        try:
            if await has_data(storage):
                where = parsed.location if parsed.scheme == "sqlite" else display_url(url)
                raise CliError(
                    f"{where} already holds data; run 'swarmdb demo --fresh' to start over "
                    "with an empty file, or choose another database with --db"
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
