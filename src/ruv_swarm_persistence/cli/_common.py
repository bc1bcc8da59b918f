"""What every ``swarmdb`` command shares: the database option, opening, output, parsing."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import enum
import json
import logging
import math
import os
import re
import sys
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import DatabaseError, ValidationError
from ..migrations import MigrationRunner, MigrationTarget
from ..query import QueryBuilder
from ..storage import Storage
from ..urls import DEFAULT_PATH, ParsedUrl, init_storage, parse_url

T = TypeVar("T")


class CliError(Exception):
    """A user error: printed as one ``error: …`` line, exit status 1 (2 with ``usage``)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        #: The exit status: 2 when the command line itself is wrong, as with typer's errors.
        self.status = 2 if usage else 1


class SchemaBehindError(CliError):
    """A database whose schema is older than this release: ``swarmdb migrate`` upgrades it."""


class UsageError(CliError):
    """A malformed or contradictory option value: one ``error: …`` line, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, usage=True)


class PipeClosed(Exception):
    """Whoever read our output has gone (``swarmdb events | head -1``): stop, successfully.

    Not an ``OSError``, so that typer's own broken-pipe handling (exit status 1) lets it pass.
    """


class Interrupted(Exception):
    """Ctrl-C: exit status 130.

    Not a ``KeyboardInterrupt``, so that a command suppressing that to stop quietly still
    ends with the status a shell expects of an interrupted command.
    """


class _Console(Console):
    """A console whose closed pipe stops the command instead of exiting with status 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise PipeClosed


#: Human output (tables); colour only when stdout is a terminal (rich decides, NO_COLOR wins).
#: Piped, rows stay unwrapped up to 200 columns (or $COLUMNS) so lines can be grepped.
out = _Console(
    highlight=False,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200,
)
#: Progress, notes and errors: stderr, so ``--json`` output stays clean.
err = _Console(stderr=True, highlight=False)


@dataclasses.dataclass
class Clock:
    """How times are shown and read: local time (the default, as ``date`` does) or UTC."""

    utc: bool = False

    def zone(self, value: datetime) -> datetime:
        """``value`` in the zone times are shown in."""
        return value.astimezone(UTC) if self.utc else value.astimezone()

    def aware(self, value: datetime) -> datetime:
        """A time as read from the command line, in UTC: without an offset it is local time
        (UTC with ``--utc``)."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC) if self.utc else value.astimezone()
        return value.astimezone(UTC)


#: Set by ``--utc`` (before the command or after it); one process runs one command.
clock = Clock()


def _use_utc(value: bool) -> None:
    if value:
        clock.utc = True


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database: a file path or URL (default: $SWARM_DB_URL, else ./swarm.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
]
CsvOption = Annotated[
    bool,
    typer.Option(
        "--csv", help="Print CSV: a header row, then one row per item (times in ISO 8601, UTC)."
    ),
]
TsvOption = Annotated[
    bool,
    typer.Option(
        "--tsv",
        help="Print tab-separated values as --csv does, one line per row "
        "(a tab, newline or backslash in a value is written \\t, \\n, \\\\).",
    ),
]
UtcOption = Annotated[
    bool,
    typer.Option(
        "--utc",
        callback=_use_utc,
        help="Show times in UTC, and read times without an offset as UTC (default: local time).",
    ),
]
#: The most rows a listing can page over (a 64-bit count, what every database takes).
MAX_ROWS = 2**63 - 1

OffsetOption = Annotated[
    int,
    typer.Option(
        "--offset",
        min=0,
        max=MAX_ROWS,
        metavar="N",
        help="Skip this many rows first (pages with --limit).",
        show_default=False,
    ),
]
LimitOption = Annotated[
    int,
    typer.Option(
        "--limit",
        "-n",
        min=0,
        max=MAX_ROWS,
        metavar="N",
        help="Show at most this many rows (0: all).",
    ),
]


def db_url(ctx: typer.Context, db: str | None) -> str:
    """The database a command works on: its ``--db``, the global one, the env, the default."""
    if db:
        return db
    root = ctx.find_root().params.get("db")
    if root:
        return str(root)
    return os.environ.get("SWARM_DB_URL") or DEFAULT_PATH


def display_url(url: str) -> str:
    """A URL fit to print: without a password."""
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.password, "***")))
    return url


def locate(url: str, *, must_exist: bool) -> ParsedUrl:
    """Parse ``url``; for a read-only command, refuse a database file that does not exist."""
    parsed = parse_url(url)
    if must_exist and parsed.scheme == "sqlite" and not Path(parsed.location).exists():
        raise CliError(
            f"no database at {parsed.location} (create one with 'swarmdb demo', "
            "or point --db / $SWARM_DB_URL at an existing one)"
        )
    return parsed


async def open_db(
    url: str,
    *,
    must_exist: bool = True,
    write: bool = False,
    current_schema: bool = True,
    **options: Any,
) -> Storage:
    """Open the storage at ``url``; a database that cannot be opened says which and why.

    Reading (the default) opens read-only: nothing is created, migrated or written, and a
    file that is empty or not a swarm database is refused and left as it was. With
    ``current_schema``, a database whose schema is behind this release is refused too (its
    tables may lack what the reads need): ``swarmdb migrate`` brings it up to date.
    Writing creates and migrates as the library does, but never into a file that holds
    something other than a swarm database.
    """
    parsed = locate(url, must_exist=must_exist or not write)
    if not write:
        options["read_only"] = True
    elif parsed.scheme == "sqlite" and _has_content(Path(parsed.location)):
        probe = await open_db(url, current_schema=False)  # refuses a foreign file untouched
        await probe.close()
    storage = await _open(url, parsed, options)
    if write or not current_schema or not isinstance(storage, MigrationTarget):
        return storage
    try:
        states = await MigrationRunner(storage).status()
    except BaseException:
        await storage.close()
        raise
    pending = [m.version for m in states if not m.applied]
    if pending:
        await storage.close()
        version = max((m.version for m in states if m.applied), default=0)
        raise SchemaBehindError(
            f"{_where(url, parsed)} has schema version {version} and this swarmdb needs "
            f"{max(pending)}: run 'swarmdb migrate' to upgrade it"
        )
    return storage


def _has_content(path: Path) -> bool:
    """A file that exists and is not empty (an empty file is a new SQLite database)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _where(url: str, parsed: ParsedUrl) -> str:
    return parsed.location if parsed.scheme == "sqlite" else display_url(url)


async def _open(url: str, parsed: ParsedUrl, options: dict[str, Any]) -> Storage:
    try:
        return await init_storage(url, **options)
    except DatabaseError as exc:
        where = _where(url, parsed)
        reason = str(exc)
        # The backend's own sentence often names the file already.
        text = reason if reason.startswith(where) else f"cannot open {where}: {reason}"
        hint = "" if options.get("read_only") else _read_only_hint(parsed)
        raise CliError(text + hint) from exc


def _read_only_hint(parsed: ParsedUrl) -> str:
    """Why a database file may have failed to open, when the file system tells."""
    if parsed.scheme != "sqlite":
        return ""
    path = Path(parsed.location)
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return " (the file or its folder is read-only)"
    return ""


@asynccontextmanager
async def opened(
    url: str,
    *,
    must_exist: bool = True,
    write: bool = False,
    current_schema: bool = True,
    **options: Any,
) -> AsyncIterator[Storage]:
    """Open the storage at ``url`` for one command (see :func:`open_db`); close it after."""
    storage = await open_db(
        url, must_exist=must_exist, write=write, current_schema=current_schema, **options
    )
    try:
        yield storage
    finally:
        await storage.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C (which cancels it, so it closes what it opened)
    raises :class:`Interrupted`."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise Interrupted from None


# --- parsing ------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def _seconds(text: str) -> float | None:
    """The seconds a duration like ``1h30m`` spells, or ``None`` if it is not one."""
    cleaned = text.strip().lower()
    pos, seconds = 0, 0.0
    for m in _PART.finditer(cleaned):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return seconds if cleaned and pos == len(cleaned) else None


def parse_duration(text: str, option: str) -> timedelta:
    """``30s``, ``10m``, ``2h``, ``1d``, ``1h30m``, ``250ms`` as a timedelta."""
    seconds = _seconds(text)
    if seconds is None:
        raise UsageError(f"{option}: {text!r} is not a duration (like 30s, 10m, 2h, 1d)")
    if seconds <= 0:
        raise UsageError(f"{option}: the duration must be positive, not {text!r}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise UsageError(f"{option}: {text!r} is longer than any time can reach") from None


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """An age (``10m``: ten minutes ago) or an ISO time, as an aware UTC time.

    An ISO time may carry an offset (``Z``, ``+02:00``); without one it is local time, as
    ``date`` and ``journalctl`` read it (UTC with ``--utc``).
    """
    if _seconds(text) is not None:
        ago = parse_duration(text, option)
        try:
            return (now or datetime.now(UTC)) - ago
        except OverflowError:
            raise UsageError(f"{option}: {text!r} ago is before the year 1") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is neither a duration (30s, 10m, 2h, 1d) "
            "nor an ISO time (2026-12-03T10:00, 2026-12-03T10:00+02:00, 2026-12-03T08:00Z)"
        ) from None
    try:
        return clock.aware(when)
    except (OverflowError, ValueError):
        # In UTC the time would fall before the year 1 or after 9999.
        raise UsageError(f"{option}: {text!r} is outside the years 1 to 9999 in UTC") from None


def parse_where(text: str | None, builder: QueryBuilder[T]) -> QueryBuilder[T]:
    """Add ``--where '{"field": value, "other": [a, b]}'`` to a query (lists mean any of)."""
    if text is None:
        return builder
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--where: not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(spec, dict):
        raise UsageError('--where: expected a JSON object such as {"status": "pending"}')
    try:
        for field, value in spec.items():
            if isinstance(value, list):
                builder = builder.where_in(field, value)
            else:
                builder = builder.where_eq(field, value)
    except ValidationError as exc:
        # An unknown field or a value of the wrong kind: the command line is wrong.
        raise UsageError(f"--where: {exc}") from None
    return builder


def one_format(json: bool, csv: bool = False, tsv: bool = False) -> str:
    """The output format asked for: ``table``, ``json``, ``csv`` or ``tsv`` (one at most)."""
    chosen = [name for name, on in (("json", json), ("csv", csv), ("tsv", tsv)) if on]
    if len(chosen) > 1:
        raise UsageError(f"--{' and --'.join(chosen)} exclude each other: choose one")
    return chosen[0] if chosen else "table"


#: Level names ``--log-level`` accepts.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(verbose: int, level: str | None) -> None:
    """Show the library's log records on stderr: ``-v`` info, ``-vv`` debug, or ``level``.

    Without either, Python's default stays: warnings and worse, as bare lines.
    """
    if level is not None:
        if level.strip().lower() not in LOG_LEVELS:
            raise UsageError(f"--log-level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
        threshold = logging.getLevelName(level.strip().upper())
    elif verbose:
        threshold = logging.INFO if verbose == 1 else logging.DEBUG
    else:
        return
    handler: logging.Handler
    if err.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, markup=False, log_time_format="%X")
    else:
        # Piped or redirected: whole lines, easy to grep, never wrapped.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    library = logging.getLogger("ruv_swarm_persistence")
    library.addHandler(handler)
    library.setLevel(threshold)


# --- output -------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A value as JSON-ready data: dataclasses, datetimes (ISO 8601), enums, paths."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(plain(value), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_json_lines(values: Iterable[Any]) -> None:
    """One JSON document per line (for streams)."""
    for v in values:
        sys.stdout.write(json.dumps(plain(v), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _cell_text(value: Any) -> str:
    """A value as one CSV/TSV field: JSON values as compact JSON, times in ISO 8601."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def print_delimited(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], fmt: str) -> None:
    """A header row, then one row per item, as the ``csv`` module writes them.

    ``csv`` quotes as RFC 4180 does; ``tsv`` never quotes but escapes, as PostgreSQL's text
    format and "linear TSV" do, so that every row is one line for ``cut`` and ``awk`` and a
    JSON field stays JSON.
    """
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell_text(row.get(c)) for c in columns])
    else:
        writer = csv.writer(
            sys.stdout, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n"
        )
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell_text(row.get(c)).translate(_TSV_ESCAPES) for c in columns])
    sys.stdout.flush()


def print_items(items: Sequence[Any], fmt: str, *, lines: bool = False) -> None:
    """Model objects (dataclasses) as JSON (``lines``: one document per line), CSV or TSV,
    with one column per field."""
    if fmt == "json":
        if lines:
            print_json_lines(items)
        else:
            print_json(items)
        return
    rows = [plain(i) for i in items]
    columns = [f.name for f in dataclasses.fields(items[0])] if items else []
    print_delimited(rows, columns, fmt)


def table(title: str | None, *columns: str, numeric: Collection[str] = ()) -> Table:
    """A table in the house style; the ``numeric`` columns are right-aligned."""
    t = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for i, c in enumerate(columns):
        if c in numeric:
            t.add_column(c, justify="right", no_wrap=True)
        else:
            # Ids and names stay whole; long free text folds.
            t.add_column(c, no_wrap=i == 0, overflow="fold")
    return t


def count(n: int) -> Text:
    """A count for a table: with thousands separators."""
    return Text(f"{n:,}")


def decimals(values: Iterable[float], digits: int = 3, most: int = 4) -> int:
    """How many decimals show every value of a column with ``digits`` significant digits
    (at most ``most``): one precision for the column, so its decimal points line up."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    if all(v == int(v) for v in finite):
        return 0
    smallest = min((v for v in finite if v), default=1.0)
    return max(0, min(most, digits - 1 - math.floor(math.log10(smallest))))


def number(value: float, places: int) -> Text:
    """A float for a table, with ``places`` decimals and thousands separators."""
    return Text(f"{value:,.{places}f}")


def offset_text(value: datetime) -> str:
    """A time's UTC offset as ``+05:30``."""
    delta = value.utcoffset() or timedelta(0)
    minutes = round(delta.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def when(value: datetime | None, *, ms: bool = False) -> str:
    """A time for tables, to the second (``ms``: millisecond) with its offset: local time,
    or UTC with ``--utc``."""
    if value is None:
        return ""
    shown = clock.zone(value)
    fraction = f".{shown.microsecond // 1000:03d}" if ms else ""
    return f"{shown:%Y-%m-%d %H:%M:%S}{fraction} {offset_text(shown)}"


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, compactly (``4s``, ``12m``, ``3h``, ``2d``)."""
    if value is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 0:
        return "in " + age(now or datetime.now(UTC), value)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def compact(value: Any, width: int = 60) -> str:
    """A JSON value on one short line."""
    text = value if isinstance(value, str) else json.dumps(plain(value), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


STATUS_STYLE = {
    "pending": "yellow",
    "assigned": "cyan",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "active": "green",
    "idle": "cyan",
    "busy": "blue",
    "initializing": "yellow",
    "paused": "yellow",
    "error": "red",
    "shutdown": "dim",
}


def styled(value: str) -> Text:
    """A status word in its colour."""
    return Text(value, style=STATUS_STYLE.get(value, ""))


def cell(value: Any) -> Text:
    """Any value as table text (never interpreted as rich markup)."""
    return Text("" if value is None else str(value))
