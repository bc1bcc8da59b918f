"""Commands that change or copy a database: migrate, vacuum, checkpoint, backup, prune, copy."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ..copy import CopyReport, copy_storage
from ..errors import StorageError, ValidationError
from ..migrations import MigrationRunner, MigrationTarget
from ..retention import parse_retention
from ..storage import Storage
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
    parse_time,
    print_json,
    run,
    table,
    when,
)


def _runner(storage: Storage) -> MigrationRunner:
    if not isinstance(storage, MigrationTarget):
        raise CliError(f"{type(storage).__name__} has no schema to migrate")
    return MigrationRunner(storage)


def _spinner(label: str, enabled: bool) -> Progress:
    """An indeterminate progress line on stderr, for one long call."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled or not err.is_terminal,
    )
    progress.add_task(label, total=None)
    return progress


# --- migrate ------------------------------------------------------------------------------


@app.command()
def migrate(
    ctx: typer.Context,
    show: Annotated[
        bool, typer.Option("--status", help="List migrations and whether each is applied.")
    ] = False,
    to: Annotated[
        int | None,
        typer.Option(
            "--to",
            min=0,
            metavar="N",
            help="Migrate (or roll back) to this version instead of the latest.",
        ),
    ] = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Apply the schema migrations (creating the database if needed); --status lists them."""
    url = db_url(ctx, db)
    parsed = locate(url, must_exist=show)
    created = parsed.scheme == "sqlite" and not Path(parsed.location).exists()

    async def go() -> dict[str, Any]:
        # Opened without migrating, so that --status shows what is pending and --to stops
        # where it is asked to.
        async with opened(
            url, must_exist=show, write=not show, current_schema=False, migrate=False
        ) as storage:
            runner = _runner(storage)
            before = await runner.current_version()
            applied: list[int] = []
            undone: list[int] = []
            if not show:
                if to is not None and to < before:
                    undone = await runner.rollback_to(to)
                else:
                    applied = await runner.migrate(to)
            return {
                "created": created,
                "version_before": before,
                "version": await runner.current_version(),
                "applied": applied,
                "rolled_back": undone,
                "migrations": await runner.status(),
            }

    result = run(go())
    if json:
        print_json(result)
        return
    if show:
        t = table(
            f"schema at version {result['version']}", "version", "name", "applied", "checksum"
        )
        for m in result["migrations"]:
            t.add_row(
                cell(m.version),
                cell(m.name),
                Text(when(m.applied_at), style="green")
                if m.applied
                else Text("pending", style="yellow"),
                cell({None: "", True: "ok", False: "EDITED"}[m.checksum_ok]),
            )
        out.print(t)
        return
    if created:
        out.print(
            f"created {parsed.location}: applied {', '.join(map(str, result['applied']))}; "
            f"schema at version {result['version']}"
        )
    elif result["rolled_back"]:
        out.print(
            f"rolled back {', '.join(map(str, result['rolled_back']))}; "
            f"schema at version {result['version']}"
        )
    elif result["applied"]:
        out.print(
            f"applied {', '.join(map(str, result['applied']))}; "
            f"schema at version {result['version']}"
        )
    else:
        out.print(f"schema already at version {result['version']}; nothing to do")


# --- vacuum, checkpoint -------------------------------------------------------------------


@app.command()
def vacuum(ctx: typer.Context, db: DbOption = None, json: JsonOption = False) -> None:
    """Reclaim free space (the file shrinks after pruning)."""
    url = db_url(ctx, db)

    async def go() -> dict[str, int]:
        async with opened(url, write=True) as storage:
            before = await storage.get_storage_size()
            await storage.vacuum()
            return {"size_before": before, "size_after": await storage.get_storage_size()}

    sizes = run(go())
    if json:
        print_json(sizes)
        return
    out.print(
        f"vacuumed: {sizes['size_before'] / 1024:,.0f} KiB → {sizes['size_after'] / 1024:,.0f} KiB"
    )


@app.command()
def checkpoint(ctx: typer.Context, db: DbOption = None, json: JsonOption = False) -> None:
    """Copy the write-ahead log into the database file."""
    url = db_url(ctx, db)

    async def go() -> None:
        async with opened(url, write=True) as storage:
            await storage.checkpoint()

    run(go())
    if json:
        print_json({"checkpoint": "ok"})
    else:
        out.print("checkpoint done")


# --- backup -------------------------------------------------------------------------------


@app.command()
def backup(
    ctx: typer.Context,
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="File to write the copy to.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite DEST if it exists.")] = False,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Copy the database to DEST while it stays in use (an online, consistent snapshot)."""
    url = db_url(ctx, db)
    if dest.exists() and not force:
        raise CliError(f"{dest} exists; pass --force to overwrite it")
    locate(url, must_exist=True)  # before deleting anything
    if force:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{dest}{suffix}").unlink(missing_ok=True)

    async def go() -> dict[str, Any]:
        async with opened(url) as storage:
            copy = getattr(storage, "backup", None)
            if copy is None:
                raise CliError(
                    f"{type(storage).__name__} has no online backup; "
                    "use 'swarmdb copy SRC DST' to copy it into a SQLite file instead"
                )
            started = time.monotonic()
            with _spinner(f"backing up to {dest}", not json):
                await copy(str(dest))
            elapsed = time.monotonic() - started
        problems: list[str] = []
        async with opened(str(dest)) as copied:
            check = getattr(copied, "integrity_check", None)
            if check is not None:
                problems = await check()
        if problems:
            raise StorageError(f"the backup at {dest} fails its integrity check: {problems[0]}")
        return {"dest": str(dest), "bytes": dest.stat().st_size, "seconds": round(elapsed, 3)}

    result = run(go())
    if json:
        print_json(result)
    else:
        out.print(
            f"backed up to {result['dest']} ({result['bytes'] / 1024:,.0f} KiB, "
            f"{result['seconds']:.2f} s; integrity check ok)"
        )


# --- prune --------------------------------------------------------------------------------


@app.command()
def prune(
    ctx: typer.Context,
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            metavar="AGE",
            help="Delete events older than this: 30d, or an ISO time (local without an offset).",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            metavar="AGE",
            help="Delete metrics older than this: 7d, or an ISO time (local without an offset).",
        ),
    ] = None,
    read_messages: Annotated[
        str | None,
        typer.Option(
            "--read-messages",
            metavar="AGE",
            help="Delete read messages older than this: 1d, or an ISO time (local without an "
            "offset).",
        ),
    ] = None,
    retention: Annotated[
        str | None,
        typer.Option(
            "--retention",
            metavar="RULES",
            help="One pass of a retention policy, as the storages run it in the background: "
            "table:rule pairs for tasks (completed), events, messages (read), metrics; a rule "
            "is an age (7d), a count of newest rows kept (100000) or both (7d+100000). "
            "E.g. tasks:7d,events:30d,metrics:100000.",
        ),
    ] = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Retention: delete old events, metrics and read messages, or apply a policy once."""
    url = db_url(ctx, db)
    if events is None and metrics is None and read_messages is None and retention is None:
        raise CliError(
            "nothing to prune: give --events, --metrics, --read-messages and/or --retention",
            usage=True,
        )
    try:
        policy = parse_retention(retention)
    except ValidationError as exc:
        raise CliError(f"--retention: {exc}", usage=True) from None
    now = datetime.now(UTC)
    cut = {
        "events_before": parse_time(events, "--events", now) if events else None,
        "metrics_before": parse_time(metrics, "--metrics", now) if metrics else None,
        "read_messages_before": (
            parse_time(read_messages, "--read-messages", now) if read_messages else None
        ),
    }

    async def go() -> Any:
        async with opened(url, write=True) as storage:
            result = await storage.prune(**cut)
            if policy is not None:
                more = await storage.apply_retention(policy)
                result.events += more.events
                result.metrics += more.metrics
                result.messages += more.messages
                result.tasks += more.tasks
            return result

    result = run(go())
    if json:
        print_json(result)
        return
    out.print(
        f"pruned {result.tasks:,} completed tasks, {result.events:,} events, "
        f"{result.metrics:,} metrics, {result.messages:,} read messages"
    )


# --- copy ---------------------------------------------------------------------------------


@app.command()
def copy(
    src: Annotated[str, typer.Argument(metavar="SRC", help="Database to copy from (path or URL).")],
    dst: Annotated[
        str,
        typer.Argument(metavar="DST", help="Database to copy into (path or URL); must be empty."),
    ],
    json: JsonOption = False,
) -> None:
    """Copy a whole swarm from SRC into an empty DST (SQLite or PostgreSQL), verified.

    Every table, then the queue controls: each key's concurrency and rate limits, the
    schedules as they stand (next and last due times, paused or not) and the record of
    retention passes. Not copied: the claims counted in a rate limit's current window, and
    the retention policy, which is not stored in a database: give it in DST's URL
    (?retention=...) wherever the copy is opened.

    Prints one row per table (limits, schedules and retention included): the rows copied
    and whether the copy matches the source (row counts and a checksum over every row); a
    bar per table shows the progress on a terminal. Exit status 1 when any table does not
    match.
    """
    locate(src, must_exist=True)
    locate(dst, must_exist=False)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise CliError("SRC and DST are the same database")

    async def go() -> CopyReport:
        source = await open_db(src)
        try:
            target = await open_db(dst, must_exist=False, write=True)
            try:
                with Progress(
                    TextColumn("{task.description:<10}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=err,
                    transient=True,
                    disable=json or not err.is_terminal,
                ) as bars:
                    rows: dict[str, TaskID] = {}

                    def progress(table_name: str, done: int, total: int) -> None:
                        if table_name not in rows:
                            rows[table_name] = bars.add_task(table_name, total=total)
                        bars.update(rows[table_name], completed=done, total=total)

                    # Not verified there: a mismatch is shown in the table, then exits 1.
                    return await copy_storage(source, target, verify=False, progress=progress)
            finally:
                await target.close()
        finally:
            await source.close()

    report = run(go())
    if json:
        print_json(
            {
                "src": display_url(src),
                "dst": display_url(dst),
                "ok": report.ok,
                "rows": report.rows,
                "tables": {
                    t.table: {
                        "source_rows": t.source_rows,
                        "rows_copied": t.destination_rows,
                        "source_checksum": t.source_checksum,
                        "checksum": t.destination_checksum,
                        "ok": t.ok,
                    }
                    for t in report.tables.values()
                },
            }
        )
    else:
        t = table(
            f"copied {display_url(src)} → {display_url(dst)}",
            "table",
            "rows copied",
            "source rows",
            "sha-256",
            "verified",
        )
        for c in report.tables.values():
            t.add_row(
                cell(c.table),
                cell(f"{c.destination_rows:,}"),
                cell(f"{c.source_rows:,}"),
                cell(c.destination_checksum[:16]),
                Text("ok", style="green") if c.ok else Text("MISMATCH", style="red"),
            )
        out.print(t)
    if not report.ok:
        bad = ", ".join(c.table for c in report.tables.values() if not c.ok)
        raise CliError(f"the copy does not match its source: {bad} (rows or checksums differ)")
