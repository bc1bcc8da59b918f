"""``swarmdb tail``: follow the event log as any process commits events.

A SQLite file that does not exist yet is waited for, and a file replaced while it is followed
(``swarmdb demo --fresh`` deletes the demo's old database and makes a new one) is followed
into its replacement, so ``tail`` in one terminal shows what ``demo`` does in another.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.text import Text

from ..errors import NotASwarmDatabaseError
from ..models import EventModel
from ..query import QueryBuilder
from ..storage import Storage
from ..urls import ParsedUrl
from ._app import app
from ._common import (
    CliError,
    DbOption,
    JsonOption,
    SchemaBehindError,
    compact,
    db_url,
    err,
    locate,
    open_db,
    out,
    print_json_lines,
    run,
    when,
)
from .listing import AgentFilter, TypeFilter

#: How often a followed file is checked for a replacement, and a missing one for its
#: arrival: a stat() each time, the same on every platform, no file-system watch needed.
POLL_S: Final = 0.25


def _line(e: EventModel) -> Text:
    line = Text()
    line.append(f"{e.sequence:>7} ", style="dim")
    line.append(f"{when(e.timestamp)} ", style="dim")
    style = "red" if "fail" in e.event_type or "lost" in e.event_type else "cyan"
    line.append(f"{e.event_type:<18} ", style=style)
    if e.agent_id:
        line.append(f"{e.agent_id} ", style="green")
    if e.task_id:
        line.append(f"{e.task_id} ", style="yellow")
    line.append(compact(e.payload, 80))
    return line


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` names now (device and inode), or None while there is none.

    Compared while the followed file is still open, so its inode cannot have been reused.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


async def _open_when_ready(url: str, parsed: ParsedUrl) -> tuple[Storage, bool]:
    """Open the database, waiting while it does not exist yet or is still being created.

    Also says whether it had to wait: then every event in the database is new.
    """
    said = False
    while True:
        path = Path(parsed.location) if parsed.scheme == "sqlite" else None
        if path is None or (path.exists() and path.stat().st_size > 0):
            try:
                return await open_db(url), said
            except SchemaBehindError:
                pass  # being created: its migrations are not all committed yet
            except CliError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, NotASwarmDatabaseError) and cause.empty):
                    raise
        if not said:
            err.print(f"waiting for a swarm database at {parsed.location or url}…", soft_wrap=True)
            said = True
        await asyncio.sleep(POLL_S)


async def _replaced(path: Path, identity: tuple[int, int] | None) -> None:
    """Return once ``path`` names another file than ``identity`` (or none)."""
    while True:  # polled: there is no event to wait for without a file-system watch
        await asyncio.sleep(POLL_S)
        if _identity(path) != identity:
            return


@app.command()
def tail(
    ctx: typer.Context,
    agent: AgentFilter = None,
    event_type: TypeFilter = None,
    last: Annotated[
        int,
        typer.Option("--last", "-n", min=0, metavar="N", help="Show this many past events first."),
    ] = 10,
    count: Annotated[
        int | None,
        typer.Option(
            "--count", min=1, metavar="N", help="Exit after printing this many new events."
        ),
    ] = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Follow the event log as events are committed (by any process); Ctrl-C stops.

    A SQLite file that does not exist yet is waited for; one that is replaced (as
    'swarmdb demo --fresh' does) is followed into the new file.
    """
    url = db_url(ctx, db)
    parsed = locate(url, must_exist=False)
    types = event_type or None
    printed = 0
    position = 0  # the last sequence handled in the database followed now

    def show(e: EventModel, new: bool = True) -> bool:
        """Print one event that passes the filters; True once --count new ones are out."""
        nonlocal printed, position
        position = max(position, e.sequence or 0)
        if (agent and e.agent_id != agent) or (types and e.event_type not in types):
            return False
        if json:
            print_json_lines([e])
        else:
            out.print(_line(e))
            sys.stdout.flush()
        printed += new
        return count is not None and printed >= count

    async def follow(storage: Storage, fresh: bool) -> bool:
        """The backlog (all of a database that appeared meanwhile), then new events.

        Returns True once --count events have been printed.
        """
        nonlocal position
        latest = await storage.query(QueryBuilder(EventModel).order_by("sequence", True).limit(1))
        position = (latest[0].sequence or 0) if latest else 0
        if fresh or last:
            past = QueryBuilder(EventModel).where_lte("sequence", position)
            if agent:
                past = past.where_eq("agent_id", agent)
            if types:
                past = past.where_in("event_type", types)
            if fresh:
                backlog = await storage.query(past.order_by("sequence"))
            else:
                backlog = (await storage.query(past.order_by("sequence", True).limit(last)))[::-1]
            for e in backlog:
                if show(e, new=fresh):
                    return True
        async for e in storage.subscribe(position, event_types=types):
            if show(e):
                return True
        return False

    async def drain(storage: Storage) -> bool:
        """What the replaced file still held after the last event shown."""
        while batch := await storage.read_events(position, 1000):
            for e in batch:
                if show(e):
                    return True
        return False

    async def go() -> None:
        replaced = False
        while True:
            storage, waited = await _open_when_ready(url, parsed)
            fresh = waited or replaced
            try:
                if parsed.scheme != "sqlite":
                    await follow(storage, fresh)
                    return
                path = Path(parsed.location)
                watcher = asyncio.ensure_future(_replaced(path, _identity(path)))
                follower = asyncio.ensure_future(follow(storage, fresh))
                try:
                    await asyncio.wait({watcher, follower}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (watcher, follower):
                        t.cancel()
                    await asyncio.gather(watcher, follower, return_exceptions=True)
                if follower.done() and not follower.cancelled():
                    follower.result()  # re-raise what stopped it, or return after --count
                    return
                # The old file stays readable through the open storage: finish it first.
                if await drain(storage):
                    return
            finally:
                await storage.close()
            err.print(f"{parsed.location} was replaced; following the new database", soft_wrap=True)
            replaced = True

    run(go())
