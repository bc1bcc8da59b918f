"""The SQLite engine: every operation of :class:`~..engine.Engine` on the backend's machinery.

Writes go to the group-commit writer (:mod:`.writer`), which commits the writes of every
coroutine together; what each write does is in :mod:`.ops`. Reads run on the reader pool
(:mod:`.readers`): those expected to return few rows run at once in the loop on an idle
connection (a thread hop costs more than the read), the others on a pool thread. Single
events and metrics are queued as tuples and inserted in runs (one ``executemany``); a claim
is one statement.

The front (:mod:`..front`) has checked every argument and taken the transaction gate; each
method gets the transaction its call joins as ``tx`` (``None`` outside any) and, given one,
runs on the writer's connection inside it. Rows come back as records (``dict`` by column);
the front decodes them. After each commit the engine wakes the front's waiters, and while
anyone waits it watches the file for other processes' commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import apsw

from ... import rules
from ...aggregate import MetricRow, aggregate, crate_aggregate, crate_metric, crate_order
from ...codec import COLUMNS, EventValues, Record
from ...errors import ConflictError, StorageError
from ...models import MetricModel
from ...query import QueryBuilder
from ...retention import RetentionPlan
from ...storage import MetricAggregate, PruneResult
from .._wake import EVENTS, FINISHED, TASKS, Wakeups, mail
from . import sql
from .errors import translate
from .ops import METRIC_VALUES, SqliteOps, scalar
from .readers import NOT_RUN, NotRun, ReaderPool
from .writer import GroupCommitWriter, WriteContext

__all__ = ["HEAVY_ROWS", "INLINE_ROWS", "WATCH_INTERVAL_S", "SqliteEngine"]

T = TypeVar("T")

#: How often a waiting subscriber, mail or task waiter looks for other processes' commits.
WATCH_INTERVAL_S: Final = 0.05
#: Reads expected to return at most this many rows run in the loop, without a thread hop.
INLINE_ROWS: Final = 100
#: Operations writing more rows than this run on the writer's thread, off the loop.
HEAVY_ROWS: Final = 1000

_AGENTS: Final = COLUMNS["agents"]
_TASKS: Final = COLUMNS["tasks"]
_EVENTS: Final = COLUMNS["events"]
_MESSAGES: Final = COLUMNS["messages"]
_METRICS: Final = COLUMNS["metrics"]


class HeldTransaction(Protocol):
    """What the engine needs of the backend's transaction (``SqliteTransaction``)."""

    ctx: WriteContext | None

    def check_alive(self, conn: apsw.Connection, cause: BaseException | None) -> None:
        """After an operation: end the transaction if SQLite rolled it back."""


def _reader(
    statement: str, params: Sequence[Any], columns: tuple[str, ...]
) -> Callable[[apsw.Connection], list[Record]]:
    """A read of every row ``statement`` selects, as records of ``columns``."""

    def read(conn: apsw.Connection) -> list[Record]:
        return [dict(zip(columns, row, strict=True)) for row in conn.execute(statement, params)]

    return read


def _point(
    statement: str, key: str, columns: tuple[str, ...]
) -> Callable[[apsw.Connection], Record | None]:
    """A read of the one row with id ``key``, as a record of ``columns`` (or ``None``)."""
    args = (key,)

    def read(conn: apsw.Connection) -> Record | None:
        row = conn.execute(statement, args).fetchone()
        return None if row is None else dict(zip(columns, row, strict=True))

    return read


class SqliteEngine:
    """The operations of the SQLite backend (see the module).

    The storage opens the writer and the reader pool and hands them over with
    :meth:`attach`; until then, and after :meth:`close`, operations raise "storage is
    closed" (the front's gate refuses them before that).
    """

    #: Rows a subscriber reads per step (few enough to read in the loop).
    subscribe_page: Final = 100

    def __init__(
        self,
        now: Callable[[], int],
        ops: SqliteOps,
        wake: Wakeups,
        connect_watcher: Callable[[], apsw.Connection],
    ) -> None:
        self._now = now
        self.ops = ops
        self._wake = wake
        self._connect_watcher = connect_watcher
        # Bound once: the writer coalesces consecutive rows of the same bulk (by identity).
        self._event_rows = ops.event_rows
        self._metric_rows = ops.metric_rows
        self.writer: GroupCommitWriter | None = None
        self.pool: ReaderPool | None = None
        self._closed = False
        self.watcher: asyncio.Task[None] | None = None
        self._watch_conn: apsw.Connection | None = None
        self._seen_version: int | None = None

    def attach(self, writer: GroupCommitWriter, pool: ReaderPool | None) -> None:
        """Use these (the storage opened them and closes them)."""
        self.writer = writer
        self.pool = pool

    async def close(self) -> None:
        """Stop watching other processes and let go of the writer and the pool."""
        self._closed = True
        watcher = self.watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if self._watch_conn is not None:
            self._watch_conn.close()
            self._watch_conn = None
        self.writer = None
        self.pool = None

    # --- running operations -----------------------------------------------------------------

    @property
    def _w(self) -> GroupCommitWriter:
        writer = self.writer
        if writer is None:
            raise StorageError("storage is closed")
        return writer

    def _in_tx(
        self,
        tx: HeldTransaction,
        op: Callable[[WriteContext], T],
        *,
        row_kind: str | None = None,
        row_id: str | None = None,
    ) -> T:
        """Run an operation inside the transaction ``tx`` holds (in the loop)."""
        writer = self._w
        assert tx.ctx is not None  # the storage's gate refuses a transaction not yet begun
        try:
            result: T = writer.run_held(tx.ctx, op, row_kind=row_kind, row_id=row_id)
        except StorageError as exc:
            tx.check_alive(writer.conn, exc)
            raise
        tx.check_alive(writer.conn, None)
        return result

    def _write(
        self,
        tx: HeldTransaction | None,
        op: Callable[[WriteContext], Any],
        *,
        row_kind: str | None = None,
        row_id: str | None = None,
        heavy: bool = False,
    ) -> Awaitable[Any]:
        """Queue ``op`` for the next group commit, or run it in ``tx``; await the answer.

        A plain call returning what to await: one coroutine fewer on every write.
        """
        if tx is None:
            return self._w.submit(op, row_kind=row_kind, row_id=row_id, heavy=heavy)
        return _done(self._in_tx(tx, op, row_kind=row_kind, row_id=row_id))

    async def read(
        self, tx: HeldTransaction | None, fn: Callable[[apsw.Connection], T], *, inline: bool
    ) -> T:
        """Run ``fn(conn)`` on a reader (in the loop when ``inline`` and one is idle), or in
        ``tx`` on the writer's connection."""
        if tx is not None:
            return self._in_tx(tx, lambda ctx: fn(ctx.conn))
        pool = self.pool
        if pool is None:
            raise StorageError("storage is closed")
        if inline:
            got = pool.run_inline(fn)
            if got is not NOT_RUN:
                return got
        return await pool.run(fn)

    def _try_now(
        self, tx: HeldTransaction | None, fn: Callable[[apsw.Connection], T]
    ) -> T | NotRun:
        """A short indexed read run at once in the loop, if nothing stands in the way.

        A plain call, not a coroutine: point reads are the hot path of readers.
        """
        pool = self.pool
        if tx is not None or pool is None:
            return NOT_RUN
        return pool.run_inline(fn)

    # --- wake-ups ---------------------------------------------------------------------------

    def committed(self, ctx: WriteContext) -> None:
        """After a COMMIT: wake the waiters of what the batch (or transaction) changed."""
        if ctx.events:
            self._wake.wake(EVENTS)
        for agent_id in ctx.mail:
            self._wake.wake(mail(agent_id))
        if ctx.tasks:
            self._wake.wake(TASKS)
        if ctx.finished:
            self._wake.wake(FINISHED)

    def note_changes(self) -> None:
        """Wake everyone if the file changed since last looked at; remember how it is now.

        A waiter calls this before it reads, so that a commit made by another process
        between its read and its wait changes the version it will be compared with (a
        baseline taken only when the watcher starts would already include that commit, and
        the waiter would sleep through it).
        """
        if self._closed or self.writer is None:
            return
        if self._watch_conn is None:
            self._watch_conn = self._connect_watcher()
        now = scalar(self._watch_conn, sql.DATA_VERSION)
        if self._seen_version is not None and now != self._seen_version:
            self._wake.wake_all()
        self._seen_version = now

    def watch(self) -> None:
        """Look for other processes' commits while anyone waits (cheap, and only then)."""
        if self.watcher is None or self.watcher.done():
            self.watcher = asyncio.get_running_loop().create_task(self._watch_other_processes())

    async def _watch_other_processes(self) -> None:
        while self._wake.waiting() and not self._closed:
            await asyncio.sleep(WATCH_INTERVAL_S)
            self.note_changes()

    # --- agents -----------------------------------------------------------------------------

    async def insert_agent(self, tx: Any, rec: Record) -> None:
        await self._write(
            tx, lambda ctx: SqliteOps.insert_agent(ctx, rec), row_kind="agent", row_id=rec["id"]
        )

    async def get_agent(self, tx: Any, agent_id: str) -> Record | None:
        read = _point(sql.GET_AGENT, agent_id, _AGENTS)
        got = self._try_now(tx, read)
        return await self.read(tx, read, inline=False) if got is NOT_RUN else got

    async def replace_agent(self, tx: Any, rec: Record) -> None:
        await self._write(tx, lambda ctx: SqliteOps.update_agent(ctx, rec))

    async def delete_agent(self, tx: Any, agent_id: str) -> None:
        await self._write(tx, lambda ctx: self.ops.delete_agent(ctx, agent_id))

    async def list_agents(self, tx: Any, status: str | None) -> list[Record]:
        if status is None:
            return await self.read(tx, _reader(sql.LIST_AGENTS, (), _AGENTS), inline=False)
        read = _reader(sql.AGENTS_BY_STATUS, (status,), _AGENTS)
        return await self.read(tx, read, inline=False)

    async def heartbeat(self, tx: Any, agent_id: str, at: int | None) -> None:
        await self._write(tx, lambda ctx: self.ops.heartbeat(ctx, agent_id, at))

    async def stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        return await self.read(tx, _reader(sql.STALE_AGENTS, (cutoff,), _AGENTS), inline=False)

    async def reap_stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        now = self._now()
        reaped: list[Record] = await self._write(
            tx, lambda ctx: self.ops.reap_stale_agents(ctx, cutoff, now)
        )
        return reaped

    # --- tasks ------------------------------------------------------------------------------

    async def insert_tasks(
        self, tx: Any, recs: list[Record], raise_on_duplicate: bool
    ) -> list[str]:
        op = self.ops.store_tasks
        ids: list[str] = await self._write(
            tx, lambda ctx: op(ctx, recs, raise_on_duplicate), heavy=len(recs) > HEAVY_ROWS
        )
        return ids

    async def get_task(self, tx: Any, task_id: str) -> Record | None:
        read = _point(sql.GET_TASK, task_id, _TASKS)
        got = self._try_now(tx, read)
        return await self.read(tx, read, inline=False) if got is NOT_RUN else got

    async def replace_task(self, tx: Any, rec: Record) -> None:
        await self._write(tx, lambda ctx: self.ops.update_task(ctx, rec))

    async def delete_task(self, tx: Any, task_id: str) -> None:
        await self._write(tx, lambda ctx: self.ops.delete_task(ctx, task_id))

    async def pending_tasks(self, tx: Any) -> list[Record]:
        return await self.read(tx, _reader(sql.PENDING_TASKS, (), _TASKS), inline=False)

    async def ready_tasks(self, tx: Any, limit: int | None) -> list[Record]:
        now = self._now()
        if limit is None:
            read = _reader(sql.READY_TASKS, (now,), _TASKS)
        else:
            read = _reader(sql.READY_TASKS_LIMIT, (now, limit), _TASKS)
        return await self.read(tx, read, inline=limit is not None and limit <= INLINE_ROWS)

    async def count(
        self, tx: Any, builder: QueryBuilder[Any], group_by: tuple[str, ...]
    ) -> list[tuple[Any, ...]]:
        statement, params = builder.build_count(group_by, "sqlite")

        def read(conn: apsw.Connection) -> list[tuple[Any, ...]]:
            return list(conn.execute(statement, params))

        return await self.read(tx, read, inline=False)

    async def tasks_by_agent(self, tx: Any, agent_id: str) -> list[Record]:
        return await self.read(tx, _reader(sql.TASKS_BY_AGENT, (agent_id,), _TASKS), inline=False)

    async def claim_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> bool:
        claimed: bool = await self._write(
            tx, lambda ctx: self.ops.claim_task(ctx, task_id, agent_id, lease_us)
        )
        return claimed

    async def claim_next_task(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int
    ) -> Record | None:
        rec: Record | None = await self._write(
            tx, lambda ctx: self.ops.claim_next_task(ctx, agent_id, types, lease_us)
        )
        return rec

    async def claim_next_tasks(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int, n: int
    ) -> list[Record]:
        recs: list[Record] = await self._write(
            tx, lambda ctx: self.ops.claim_next_tasks(ctx, agent_id, types, lease_us, n)
        )
        return recs

    async def set_queue_limit(
        self, tx: Any, key: str, kind: str, limit: int | None, period_us: int | None
    ) -> None:
        op = SqliteOps.set_queue_limit
        await self._write(tx, lambda ctx: op(ctx, key, kind, limit, period_us))

    async def queue_limits(self, tx: Any) -> list[Record]:
        read = _reader(sql.QUEUE_LIMITS, (), sql.QUEUE_LIMIT_COLUMNS)
        return await self.read(tx, read, inline=True)

    async def start_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        rec: Record = await self._write(tx, lambda ctx: self.ops.start_task(ctx, task_id, agent_id))
        return rec

    async def complete_task(
        self, tx: Any, task_id: str, agent_id: str, result: str | None
    ) -> Record:
        rec: Record = await self._write(
            tx, lambda ctx: self.ops.complete_task(ctx, task_id, agent_id, result)
        )
        return rec

    async def complete_tasks(
        self, tx: Any, agent_id: str, pairs: list[tuple[str, str | None]]
    ) -> list[Record]:
        recs: list[Record] = await self._write(
            tx,
            lambda ctx: self.ops.complete_tasks(ctx, agent_id, pairs),
            heavy=len(pairs) > HEAVY_ROWS,
        )
        return recs

    async def fail_task(self, tx: Any, task_id: str, agent_id: str, error: str) -> Record:
        rec: Record = await self._write(
            tx, lambda ctx: self.ops.fail_task(ctx, task_id, agent_id, error)
        )
        return rec

    async def cancel_task(self, tx: Any, task_id: str, reason: str | None) -> list[str]:
        ids: list[str] = await self._write(
            tx, lambda ctx: self.ops.cancel_task(ctx, task_id, reason)
        )
        return ids

    async def heartbeat_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> Record:
        rec: Record = await self._write(
            tx, lambda ctx: self.ops.heartbeat_task(ctx, task_id, agent_id, lease_us)
        )
        return rec

    async def release_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        rec: Record = await self._write(
            tx, lambda ctx: self.ops.release_task(ctx, task_id, agent_id)
        )
        return rec

    async def failed_tasks(self, tx: Any, task_type: str | None, limit: int) -> list[Record]:
        read = (
            _reader(sql.FAILED_TASKS, (limit,), _TASKS)
            if task_type is None
            else _reader(sql.FAILED_TASKS_OF_TYPE, (task_type, limit), _TASKS)
        )
        return await self.read(tx, read, inline=False)

    async def retry_tasks(
        self, tx: Any, task_ids: list[str] | None, task_type: str | None
    ) -> list[Record]:
        recs: list[Record] = await self._write(
            tx, lambda ctx: self.ops.retry_tasks(ctx, task_ids, task_type)
        )
        return recs

    async def dependency_results(
        self, tx: Any, task_id: str
    ) -> list[tuple[str, str | None]] | None:
        args = (task_id,)

        def read(conn: apsw.Connection) -> list[tuple[str, str | None]] | None:
            rows: list[tuple[Any, ...]] = conn.execute(sql.DEPENDENCY_RESULTS, args).fetchall()
            if not rows:
                return None
            return [(row[0], row[1]) for row in rows if row[0] is not None]

        # One indexed statement over a task's few dependencies: no thread hop.
        return await self.read(tx, read, inline=True)

    async def next_ready(self, tx: Any, types: list[str] | None) -> int | None:
        type_args: tuple[str, ...] = () if types is None else (json.dumps(types),)
        any_ready = sql.ANY_READY if types is None else sql.ANY_READY_OF_TYPES
        next_due = sql.NEXT_RUN_AFTER if types is None else sql.NEXT_RUN_AFTER_OF_TYPES
        lease_end = sql.NEXT_LEASE_END if types is None else sql.NEXT_LEASE_END_OF_TYPES

        def due(conn: apsw.Connection) -> int | None:
            now = self._now()
            if conn.execute(any_ready, (now, *type_args, now)).fetchone() is not None:
                return 0
            first: int | None = scalar(conn, next_due, (now, *type_args))
            expires: int | None = scalar(conn, lease_end, type_args)
            if expires is not None:
                if expires <= now:
                    return 0  # a claim requeues the task now
                first = expires if first is None else min(first, expires)
            # Tasks held back by a rate limit become claimable as its window moves on (a
            # key without such tasks at worst wakes the waiter once for nothing).
            limited: list[Any] = conn.execute(sql.RATE_LIMITED_KEYS).fetchall()
            for key, rate, period in limited:
                recent = [r[0] for r in conn.execute(sql.RECENT_CLAIMS, (key, now - period))]
                frees = None if len(recent) < rate else rules.rate_frees_at(rate, period, recent)
                if frees is not None and (first is None or frees < first):
                    first = frees
            return None if first is None else max(first - now, 1)

        return await self.read(tx, due, inline=True)

    # --- events -----------------------------------------------------------------------------

    async def append_event(self, tx: Any, row: EventValues) -> int:
        if tx is None:
            seq: int = await self._w.submit_row(self._event_rows, row)
            return seq
        return self._in_tx(tx, lambda ctx: self.ops.store_events(ctx, (row,)))[0]

    async def append_events(self, tx: Any, rows: list[EventValues]) -> list[int]:
        seqs: list[int] = await self._write(
            tx, lambda ctx: self.ops.store_events(ctx, rows), heavy=len(rows) > HEAVY_ROWS
        )
        return seqs

    async def events_by_agent(self, tx: Any, agent_id: str, limit: int) -> list[Record]:
        read = _reader(sql.EVENTS_BY_AGENT, (agent_id, limit), _EVENTS)
        return await self.read(tx, read, inline=limit <= INLINE_ROWS)

    async def events_by_type(self, tx: Any, event_type: str, limit: int) -> list[Record]:
        read = _reader(sql.EVENTS_BY_TYPE, (event_type, limit), _EVENTS)
        return await self.read(tx, read, inline=limit <= INLINE_ROWS)

    async def get_event(self, tx: Any, event_id: str) -> Record | None:
        read = _point(sql.GET_EVENT, event_id, _EVENTS)
        got = self._try_now(tx, read)
        return await self.read(tx, read, inline=False) if got is NOT_RUN else got

    async def events_since(self, tx: Any, since: int) -> list[Record]:
        return await self.read(tx, _reader(sql.EVENTS_SINCE, (since,), _EVENTS), inline=False)

    async def read_events(self, tx: Any, after: int, limit: int) -> list[Record]:
        read = _reader(sql.READ_EVENTS, (after, limit), _EVENTS)
        return await self.read(tx, read, inline=limit <= INLINE_ROWS)

    # --- messages ---------------------------------------------------------------------------

    async def insert_message(self, tx: Any, rec: Record) -> None:
        await self._write(
            tx,
            lambda ctx: SqliteOps.insert_message(ctx, rec),
            row_kind="message",
            row_id=rec["id"],
        )

    async def get_message(self, tx: Any, message_id: str) -> Record | None:
        read = _point(sql.GET_MESSAGE, message_id, _MESSAGES)
        got = self._try_now(tx, read)
        return await self.read(tx, read, inline=False) if got is NOT_RUN else got

    async def delete_message(self, tx: Any, message_id: str) -> None:
        await self._write(tx, lambda ctx: SqliteOps.delete_message(ctx, message_id))

    async def messages_between(self, tx: Any, a: str, b: str, limit: int) -> list[Record]:
        read = _reader(sql.MESSAGES_BETWEEN, (a, b, limit), _MESSAGES)
        return await self.read(tx, read, inline=limit <= INLINE_ROWS)

    async def unread_messages(self, tx: Any, agent_id: str) -> list[Record]:
        # A mailbox is short, and waiting workers poll it: read it in the loop.
        read = _reader(sql.UNREAD_MESSAGES, (agent_id,), _MESSAGES)
        return await self.read(tx, read, inline=True)

    async def mark_message_read(self, tx: Any, message_id: str) -> Record:
        rec: Record = await self._write(tx, lambda ctx: self.ops.mark_message_read(ctx, message_id))
        return rec

    # --- metrics ----------------------------------------------------------------------------

    async def insert_metrics(self, tx: Any, recs: list[Record]) -> None:
        if tx is None and len(recs) == 1:
            # A single metric joins the run of single metrics queued by other callers.
            await self._w.submit_row(self._metric_rows, METRIC_VALUES(recs[0]))
            return
        rows = [METRIC_VALUES(rec) for rec in recs]
        await self._write(
            tx, lambda ctx: self.ops.store_metrics(ctx, rows), heavy=len(rows) > HEAVY_ROWS
        )

    async def metrics_by_agent(
        self, tx: Any, agent_id: str, metric_type: str | None
    ) -> list[Record]:
        if metric_type is None:
            read = _reader(sql.METRICS_BY_AGENT, (agent_id,), _METRICS)
        else:
            read = _reader(sql.METRICS_BY_AGENT_AND_TYPE, (agent_id, metric_type), _METRICS)
        return await self.read(tx, read, inline=False)

    async def crate_aggregate(
        self, tx: Any, metric_type: str, start: int, end: int
    ) -> list[MetricModel]:
        args = (metric_type, start, end)

        def read(conn: apsw.Connection) -> list[MetricModel]:
            # Summed exactly in SQL (math.fsum, as on every backend: SQLite's sum() is off in
            # the last bit after cancellations). A total past the float range would make an
            # infinite mean in SQL; the rows give the true mean, as on every backend.
            groups: list[Any] = conn.execute(sql.AGGREGATE_EXACT_BY_AGENT, args).fetchall()
            if any(math.isinf(g[3]) for g in groups):
                rows = [MetricRow(*row) for row in conn.execute(sql.METRIC_ROWS, args)]
                return crate_aggregate(metric_type, rows)
            groups.sort(key=lambda g: crate_order(g[0], g[1]))
            return [crate_metric(metric_type, *g) for g in groups]

        return await self.read(tx, read, inline=False)

    async def aggregate_metrics(
        self,
        tx: Any,
        metric_type: str,
        start: int,
        end: int,
        groups: list[str],
        bucket_us: int | None,
    ) -> list[MetricAggregate]:
        args = (metric_type, start, end)
        group_by = tuple(groups)

        def read(conn: apsw.Connection) -> list[MetricAggregate]:
            rows = [MetricRow(*row) for row in conn.execute(sql.METRIC_ROWS, args)]
            return aggregate(metric_type, rows, group_by, bucket_us)

        return await self.read(tx, read, inline=False)

    # --- schedules ---------------------------------------------------------------------------

    async def put_schedule(self, tx: Any, rec: Record) -> Record:
        values = tuple(rec[c] for c in sql.SCHEDULE_COLUMNS)

        def put(ctx: WriteContext) -> Record:
            (row,) = ctx.conn.execute(sql.PUT_SCHEDULE, values).fetchall()
            return dict(zip(sql.SCHEDULE_COLUMNS, row, strict=True))

        stored: Record = await self._write(tx, put)
        return stored

    async def restore_schedule(self, tx: Any, rec: Record) -> None:
        values = tuple(rec[c] for c in sql.SCHEDULE_COLUMNS)

        def insert(ctx: WriteContext) -> None:
            if ctx.conn.execute(sql.RESTORE_SCHEDULE, values).fetchone() is None:
                raise ConflictError("schedule", rec["name"])

        await self._write(tx, insert)

    async def get_schedule(self, tx: Any, name: str) -> Record | None:
        return await self.read(
            tx, _point(sql.GET_SCHEDULE, name, sql.SCHEDULE_COLUMNS), inline=True
        )

    async def list_schedules(self, tx: Any) -> list[Record]:
        read = _reader(sql.LIST_SCHEDULES, (), sql.SCHEDULE_COLUMNS)
        return await self.read(tx, read, inline=True)

    async def delete_schedule(self, tx: Any, name: str) -> None:
        await self._write(tx, lambda ctx: ctx.conn.execute(sql.DELETE_SCHEDULE, (name,)))

    async def set_schedule_paused(
        self, tx: Any, name: str, paused: bool, next_due: int | None, now: int
    ) -> Record | None:
        args = (int(paused), next_due, now, name)

        def update(ctx: WriteContext) -> Record | None:
            row = ctx.conn.execute(sql.SET_SCHEDULE_PAUSED, args).fetchone()
            return None if row is None else dict(zip(sql.SCHEDULE_COLUMNS, row, strict=True))

        rec: Record | None = await self._write(tx, update)
        return rec

    async def fire_schedule(
        self,
        tx: Any,
        name: str,
        expected_due: int,
        next_due: int,
        due: int | None,
        task: Record | None,
        now: int,
    ) -> bool:
        done: bool = await self._write(
            tx,
            lambda ctx: self.ops.fire_schedule(ctx, name, expected_due, next_due, due, task, now),
        )
        return done

    # --- queries and maintenance ------------------------------------------------------------

    async def query(self, tx: Any, builder: QueryBuilder[Any]) -> list[Record]:
        statement, params = builder.build("sqlite")
        limit = builder.limit_value
        read = _reader(statement, params, COLUMNS[builder.table])
        return await self.read(tx, read, inline=limit is not None and limit <= INLINE_ROWS)

    async def vacuum(self, tx: Any) -> None:
        """Rebuild the file without free pages (after the writes queued before)."""
        if tx is None:  # VACUUM cannot run inside a transaction: nothing to do in one
            await self._w.submit_alone(lambda conn: conn.execute("VACUUM"))

    async def checkpoint(self, tx: Any) -> None:
        """Copy the whole write-ahead log into the database file and truncate it."""

        def run(conn: apsw.Connection) -> None:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)

        if tx is None:  # nothing is committed inside a transaction yet
            await self._w.submit_alone(run)

    async def storage_size(self, tx: Any) -> int:
        """Bytes of the database (free pages included; the log not yet copied too)."""
        size: int = await self.read(tx, lambda conn: scalar(conn, sql.STORAGE_SIZE), inline=True)
        return size

    async def prune(
        self, tx: Any, events: int | None, metrics: int | None, read_messages: int | None
    ) -> PruneResult:
        """Delete old history, then give the freed pages back to the file system."""
        if tx is not None:
            return self._in_tx(
                tx, lambda ctx: SqliteOps.prune(ctx.conn, events, metrics, read_messages)
            )

        def run(conn: apsw.Connection) -> PruneResult:
            conn.execute("BEGIN IMMEDIATE")
            result = SqliteOps.prune(conn, events, metrics, read_messages)
            conn.execute("COMMIT")
            if result.events or result.metrics or result.messages:
                # Each step frees one page: read it to the end.
                conn.execute("PRAGMA incremental_vacuum").fetchall()
            return result

        pruned: PruneResult = await self._w.submit_alone(run)
        return pruned

    async def retain(self, tx: Any, plan: RetentionPlan) -> PruneResult:
        """A retention pass, then the freed pages given back to the file system."""
        if tx is not None:
            return self._in_tx(tx, lambda ctx: SqliteOps.retain(ctx.conn, plan))

        def run(conn: apsw.Connection) -> PruneResult:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = SqliteOps.retain(conn, plan)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, apsw.Error):
                    raise translate(exc) from exc
                raise
            if result.events or result.metrics or result.messages or result.tasks:
                conn.execute("PRAGMA incremental_vacuum").fetchall()
            return result

        retained: PruneResult = await self._w.submit_alone(run)
        return retained

    async def retention_record(self, tx: Any) -> dict[str, int]:
        def read(conn: apsw.Connection) -> dict[str, int]:
            rows: list[tuple[Any, ...]] = conn.execute(sql.RETENTION_RECORD).fetchall()
            return {str(k).removeprefix("retention."): int(v or 0) for k, v in rows}

        return await self.read(tx, read, inline=True)

    async def set_retention_record(self, tx: Any, record: dict[str, int]) -> None:
        rows = [(f"retention.{key}", value) for key, value in record.items()]

        def replace(ctx: WriteContext) -> None:
            ctx.conn.execute(sql.CLEAR_RETENTION_RECORD)
            ctx.conn.executemany(sql.SET_IN_RECORD, rows)

        await self._write(tx, replace)


def _done(value: Any) -> Awaitable[Any]:
    """An awaitable already answered with ``value`` (an operation run inside a transaction)."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut
