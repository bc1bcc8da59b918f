"""Move a whole swarm from one storage to another: ``await copy_storage(src, dst)``.

Works between any two storages (SQLite to PostgreSQL and back, memory, …) through the public
API only. Agents go first, then tasks in dependency order (a task is stored after the tasks it
depends on), then messages, metrics and events; events are appended in their sequence order,
so the log keeps its order (the destination numbers them afresh from 1). Then the queue
controls: each key's concurrency and rate limits, the schedules exactly as they stand (next
and last due times, paused or not), and the record of retention passes (when one last ran,
what they removed). Everything is written in one transaction of the destination, so a failed
copy leaves it empty.

Not copied: the claims counted against a rate limit in its current window (the destination's
window starts empty), and the retention policy, which is not stored in a database but is an
option of the storage that opens it (``?retention=…`` in the destination's URL).

The copy is verified: every table of both storages is read back and compared by row count and
by a SHA-256 checksum over its rows in a canonical form (JSON fields with sorted keys, times
in microseconds; events in log order without their sequence numbers); the limits, schedules
and retention record (one row, or none if retention never ran) are checked the same way.
Stop the swarm's writers while copying: rows written to the source meanwhile are not
guaranteed to be copied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from . import codec
from ._time import to_us
from .errors import StorageError, ValidationError
from .models import AgentModel, EventModel, MessageModel, MetricModel, TaskModel
from .query import QueryBuilder
from .retention import RetentionReport
from .schedules import ScheduleModel
from .storage import QueueLimit, Storage

__all__ = ["CopyReport", "TableCopy", "copy_storage", "table_checksums"]

T = TypeVar("T")

#: Tables in the order they are copied, with the model and the column that pages them.
_TABLES: Final[tuple[tuple[str, type, str], ...]] = (
    ("agents", AgentModel, "id"),
    ("tasks", TaskModel, "id"),
    ("messages", MessageModel, "id"),
    ("metrics", MetricModel, "id"),
    ("events", EventModel, "sequence"),
)
_JSON_FIELDS: Final = {
    "agents": ("capabilities", "metadata"),
    "tasks": ("payload", "result", "dependencies"),
    "events": ("payload", "metadata"),
    "messages": ("content",),
    "metrics": ("tags",),
}
#: The queue controls, copied after the tables and verified as tables are.
_CONTROLS: Final = ("limits", "schedules", "retention")
PAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class TableCopy:
    """How one table was copied: row counts and checksums on both sides."""

    table: str
    source_rows: int
    destination_rows: int
    source_checksum: str
    destination_checksum: str

    @property
    def ok(self) -> bool:
        """Same number of rows and the same checksum on both sides."""
        return (
            self.source_rows == self.destination_rows
            and self.source_checksum == self.destination_checksum
        )


@dataclass(frozen=True, slots=True)
class CopyReport:
    """The outcome of :func:`copy_storage`, one :class:`TableCopy` per table."""

    tables: dict[str, TableCopy]

    @property
    def ok(self) -> bool:
        """Every table matches."""
        return all(t.ok for t in self.tables.values())

    @property
    def rows(self) -> int:
        """Rows copied in all."""
        return sum(t.destination_rows for t in self.tables.values())

    def __str__(self) -> str:
        lines = [
            f"{t.table:<9} {t.source_rows:>9} -> {t.destination_rows:<9} "
            f"{t.destination_checksum[:16]} {'ok' if t.ok else 'MISMATCH'}"
            for t in self.tables.values()
        ]
        return "\n".join(lines)


async def _pages(storage: Storage, model: type[T], key: str) -> AsyncIterator[list[T]]:
    """Every row of a table in ``key`` order, a page at a time (keyset paging)."""
    last: Any = None
    while True:
        builder = QueryBuilder(model).order_by(key).limit(PAGE)
        if last is not None:
            builder = builder.where_gt(key, last)
        rows = await storage.query(builder)
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        last = getattr(rows[-1], key)


def _us(value: datetime | timedelta | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return to_us(value)


def _control_record(table: str, row: Any) -> dict[str, Any]:
    """A queue control's row as a record of JSON values."""
    if table == "limits":
        limit: QueueLimit = row
        return {"key": limit.key, "concurrency": limit.concurrency, "rate": limit.rate,
                "per": _us(limit.per)}  # fmt: skip
    if table == "schedules":
        s: ScheduleModel = row
        return {
            "name": s.name, "spec": s.spec, "timezone": s.timezone, "missed": s.missed,
            "task_template": s.task_template, "paused": s.paused, "next_due": _us(s.next_due),
            "last_due": _us(s.last_due), "created_at": _us(s.created_at),
            "updated_at": _us(s.updated_at),
        }  # fmt: skip
    report: RetentionReport = row
    return {"last_run": _us(report.last_run), "removed": report.removed}


def _canonical(table: str, model: Any) -> bytes:
    """A row as canonical bytes: the same on every backend for the same data."""
    if table in _CONTROLS:
        rec = _control_record(table, model)
        return json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    rec = codec.encode(model)
    for name in _JSON_FIELDS[table]:
        text = rec[name]
        if text is not None:
            rec[name] = json.loads(text)
    if table == "events":
        del rec["sequence"]  # renumbered by the destination; the order is hashed instead
    return json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"


class _Tally:
    """Row count and running checksum of one table."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.rows = 0
        self._hash = hashlib.sha256()

    def add(self, rows: list[Any]) -> None:
        for row in rows:
            self._hash.update(_canonical(self.table, row))
        self.rows += len(rows)

    @property
    def checksum(self) -> str:
        return self._hash.hexdigest()


async def _controls(storage: Storage) -> dict[str, list[Any]]:
    """The queue controls' rows: the limits, the schedules, the retention record."""
    report = await storage.retention_report()
    ran = report.last_run is not None or any(report.removed.values())
    return {
        "limits": await storage.list_queue_limits(),
        "schedules": await storage.list_schedules(),
        "retention": [report] if ran else [],
    }


class _Progress:
    """Reports rows written per table to a ``progress(table, done, total)`` callback."""

    def __init__(self, callback: Callable[[str, int, int], None] | None) -> None:
        self.callback = callback
        self.totals: dict[str, int] = {}

    async def start(self, src: Storage) -> None:
        if self.callback is None:
            return
        for table, model, _ in _TABLES:
            self.totals[table] = await src.count(QueryBuilder(model))
        for table, rows in (await _controls(src)).items():
            self.totals[table] = len(rows)
        for table in self.totals:
            self.callback(table, 0, self.totals[table])

    def advance(self, table: str, done: int) -> None:
        if self.callback is not None:
            # Rows written to the source since it was counted only raise the total.
            self.totals[table] = max(self.totals[table], done)
            self.callback(table, done, self.totals[table])

    def finish(self, table: str, done: int) -> None:
        if self.callback is not None and self.totals[table] != done:
            self.totals[table] = done  # rows deleted from the source since it was counted
            self.callback(table, done, done)


async def table_checksums(storage: Storage) -> dict[str, tuple[int, str]]:
    """``{table: (rows, sha256)}`` of a storage, in the canonical form the copy verifies."""
    out: dict[str, tuple[int, str]] = {}
    for table, model, key in _TABLES:
        tally = _Tally(table)
        page: list[Any]
        async for page in _pages(storage, model, key):
            tally.add(page)
        out[table] = (tally.rows, tally.checksum)
    for table, rows in (await _controls(storage)).items():
        tally = _Tally(table)
        tally.add(rows)
        out[table] = (tally.rows, tally.checksum)
    return out


def _dependency_order(tasks: list[TaskModel]) -> list[TaskModel]:
    """Tasks ordered so that each comes after every task it depends on."""
    by_id = {t.id: t for t in tasks}
    order: list[TaskModel] = []
    state: dict[str, int] = {}  # 1 visiting, 2 placed
    for root in tasks:
        if root.id in state:
            continue
        stack: list[tuple[TaskModel, int]] = [(root, 0)]
        state[root.id] = 1
        while stack:
            task, i = stack.pop()
            deps = [d for d in task.dependencies if d in by_id]
            if i < len(deps):
                stack.append((task, i + 1))
                dep = by_id[deps[i]]
                if dep.id not in state:
                    state[dep.id] = 1
                    stack.append((dep, 0))
                elif state[dep.id] == 1:
                    raise StorageError(f"the source has a dependency cycle through {task.id!r}")
            else:
                state[task.id] = 2
                order.append(task)
    return order


async def _ensure_empty(storage: Storage) -> None:
    for table, model, key in _TABLES:
        if await storage.query(QueryBuilder(model).order_by(key).limit(1)):
            raise ValidationError(
                f"the destination is not empty (it has {table}); copy into an empty storage",
                field="dst",
            )
    controls = await _controls(storage)
    for table in ("limits", "schedules"):
        if controls[table]:
            raise ValidationError(
                f"the destination is not empty (it has {table}); copy into an empty storage",
                field="dst",
            )


async def _copy_controls(
    src: Storage, dst: Storage, tallies: dict[str, _Tally], meter: _Progress
) -> None:
    """Copy the limits, the schedules and the retention record (inside the transaction)."""
    controls = await _controls(src)
    for limit in controls["limits"]:
        if limit.concurrency is not None:
            await dst.set_concurrency_limit(limit.key, limit.concurrency)
        if limit.rate is not None:
            await dst.set_rate_limit(limit.key, limit.rate, limit.per or timedelta(seconds=1))
    for schedule in controls["schedules"]:
        await dst.restore_schedule(schedule)
    # Written even when retention never ran: a record the destination had goes.
    report = await src.retention_report()
    await dst.restore_retention_record(report.last_run, report.removed)
    for table, rows in controls.items():
        tallies[table].add(rows)
        if rows:
            meter.advance(table, len(rows))
        meter.finish(table, len(rows))


async def copy_storage(
    src: Storage,
    dst: Storage,
    *,
    verify: bool = True,
    transaction_timeout: timedelta | float = timedelta(hours=1),
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyReport:
    """Copy every agent, task, message, metric and event of ``src`` into the empty ``dst``,
    then its queue controls: limits, schedules and the retention record (see the module).

    Returns the :class:`CopyReport`; with ``verify`` (the default) a copy whose counts or
    checksums differ raises :class:`StorageError` naming the tables. The writes to ``dst``
    form one transaction (``transaction_timeout`` bounds it).

    ``progress``, if given, is called as ``progress(table, rows_written, rows_total)``: first
    with 0 written for every table (in the order they are copied), then as each batch is
    written, the last call of a table having written == total. Counting the rows for it
    reads the source once more. The verification that follows the copy is not reported.
    """
    if src is dst:
        raise ValidationError("source and destination are the same storage", field="dst")
    await _ensure_empty(dst)
    meter = _Progress(progress)
    await meter.start(src)
    tallies = {table: _Tally(table) for table in (*(t for t, _, _ in _TABLES), *_CONTROLS)}
    async with dst.transaction(transaction_timeout):
        async for agents in _pages(src, AgentModel, "id"):
            tallies["agents"].add(agents)
            for agent in agents:
                await dst.store_agent(agent)
            meter.advance("agents", tallies["agents"].rows)
        meter.finish("agents", tallies["agents"].rows)
        tasks: list[TaskModel] = []
        async for page in _pages(src, TaskModel, "id"):
            tallies["tasks"].add(page)
            tasks.extend(page)
        ordered = _dependency_order(tasks)
        for i in range(0, len(ordered), PAGE):
            await dst.store_tasks(ordered[i : i + PAGE])
            meter.advance("tasks", min(i + PAGE, len(ordered)))
        meter.finish("tasks", len(ordered))
        async for messages in _pages(src, MessageModel, "id"):
            tallies["messages"].add(messages)
            for message in messages:
                await dst.store_message(message)
            meter.advance("messages", tallies["messages"].rows)
        meter.finish("messages", tallies["messages"].rows)
        async for metrics in _pages(src, MetricModel, "id"):
            tallies["metrics"].add(metrics)
            await dst.store_metrics(metrics)
            meter.advance("metrics", tallies["metrics"].rows)
        meter.finish("metrics", tallies["metrics"].rows)
        async for events in _pages(src, EventModel, "sequence"):
            tallies["events"].add(events)
            await dst.store_events(events)
            meter.advance("events", tallies["events"].rows)
        meter.finish("events", tallies["events"].rows)
        await _copy_controls(src, dst, tallies, meter)
    copied = await table_checksums(dst)
    report = CopyReport(
        {
            table: TableCopy(
                table,
                tally.rows,
                copied[table][0],
                tally.checksum,
                copied[table][1],
            )
            for table, tally in tallies.items()
        }
    )
    if verify and not report.ok:
        bad = ", ".join(t.table for t in report.tables.values() if not t.ok)
        raise StorageError(f"the copy does not match its source ({bad}):\n{report}")
    return report
