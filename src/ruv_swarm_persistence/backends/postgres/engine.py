"""The PostgreSQL engine: every operation of :class:`~..engine.Engine` on an asyncpg pool.

The front (:mod:`..front`) has checked every argument and taken the transaction gate; each
method gets the transaction its call joins as ``tx`` (``None`` outside any). Given one, a
read runs on its connection and a write in a savepoint of it
(:meth:`.transaction.PostgresTransaction._run_write`); without one, work runs on the pool
under a named retry policy of :mod:`.runner`: ``READ``, ``WRITE`` (a transaction of its own,
see :func:`.ops.perform`) or ``SELF_COMMITTING`` (one statement). The hot paths are single
statements: the claims (``FOR UPDATE SKIP LOCKED``), the completion, and the appends, which
concurrent callers share (:mod:`.appender`); a large batch of events goes in with ``COPY``.

Rows come back as records (``dict`` by column); the front decodes them. Writers ``NOTIFY``
in the transaction of the write, so other processes hear of it through their
:class:`.listener.Listener`; this process's waiters are woken after each local commit
(:meth:`PostgresEngine.after_commit`). The clock is read when an operation runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from ...aggregate import MetricRow, aggregate, crate_metric, crate_order, sum_and_mean
from ...codec import COLUMNS, EventValues, Record, check_unique_ids
from ...errors import ConflictError, NotFoundError
from ...models import MetricModel
from ...query import QueryBuilder
from ...retention import RetentionPlan
from ...storage import MetricAggregate, PruneResult
from .._wake import EVENTS, FINISHED, TASKS, Wakeups, mail
from ..sql_common import row_record
from . import ops, sql
from .appender import EventAppender
from .listener import Listener
from .ops import COPY_ROWS, Effects, Op, PostgresOps, jsonb_text, perform, task
from .runner import Conn, Runner

__all__ = ["MIN_LEASE_S", "PostgresEngine"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The shortest lease that makes sense here; a shorter one is warned about, once per storage.
#: A worker's claim, start and completion are each a round trip, after a wait for a pooled
#: connection: under load the three took 0.1 to 0.3 s (4 workers x 8 lanes on a busy 2-core
#: machine), so 0.1 s leases ran out between claim and completion. Each lease that runs out
#: is a failed attempt (retried after a backoff, failed for good past ``max_retries``).
MIN_LEASE_S: Final = 1.0

_AGENTS: Final = sql.AGENT_COLS
_EVENTS: Final = sql.EVENT_COLS
_MESSAGES: Final = sql.MESSAGE_COLS
_METRICS: Final = sql.METRIC_COLS


def _records(columns: Sequence[str], rows: Sequence[Any]) -> list[Record]:
    return [row_record(columns, r) for r in rows]


class PostgresEngine:
    """The operations of the PostgreSQL backend (see the module)."""

    #: Events a subscriber reads per step.
    subscribe_page: Final = 500

    def __init__(
        self,
        runner: Runner,
        ops_: PostgresOps,
        now: Callable[[], int],
        *,
        channel: str,
        schema: str,
        listener: Listener,
        wake: Wakeups,
    ) -> None:
        self._runner = runner
        self.ops = ops_
        self._now = now
        self.channel = channel
        self.schema = schema
        self.listener = listener
        self._wake = wake
        self.appender = EventAppender(self._append_alone, lambda: wake.wake(EVENTS))
        self._short_lease_told = False

    def _check_lease(self, lease_us: int) -> None:
        """Warn (once) about a lease too short to outlast a worker's round trips."""
        if lease_us < MIN_LEASE_S * 1e6 and not self._short_lease_told:
            self._short_lease_told = True
            log.warning(
                "a lease of %g s is shorter than %g s: under load, claiming, starting and "
                "completing a task on PostgreSQL can take longer, and every lease that runs "
                "out is a failed attempt (retried after a backoff, failed for good past "
                "max_retries)",
                lease_us / 1e6,
                MIN_LEASE_S,
            )

    # --- waiting ---------------------------------------------------------------------------

    def note_changes(self) -> None:
        """Other processes' commits arrive as notifications: nothing to look at."""

    def watch(self) -> None:
        """Make sure the listener runs (it wakes the waiters on notifications)."""
        self.listener.start()

    def after_commit(self, fx: Effects) -> None:
        """Wake this process's waiters at once (other processes hear the NOTIFY)."""
        for key in fx.notes():
            self._wake.wake(key)

    # --- running ---------------------------------------------------------------------------

    async def _read(self, tx: Any, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """A read: on the transaction's connection, else on the pool (``READ``)."""
        if tx is not None:
            result: T = await tx._run(fn)
            return result
        return await self._runner.read(fn)

    async def _fetch(self, tx: Any, query: str, *args: Any) -> list[Any]:
        return await self._read(tx, lambda conn: conn.fetch(query, *args))

    async def _fetchrow(self, tx: Any, query: str, *args: Any) -> Any:
        return await self._read(tx, lambda conn: conn.fetchrow(query, *args))

    async def _rows(self, tx: Any, columns: Sequence[str], query: str, *args: Any) -> list[Record]:
        return _records(columns, await self._fetch(tx, query, *args))

    async def _write(self, tx: Any, op: Op[T]) -> T:
        """A write in its own transaction (``WRITE``), or a savepoint of ``tx``."""
        if tx is not None:
            result: T = await tx._run_write(op)
            return result
        value, deferred, fx = await self._runner.write(lambda conn: perform(conn, op, self.channel))
        self.after_commit(fx)
        if deferred is not None:
            raise deferred
        return value  # type: ignore[return-value]

    async def _statement(self, tx: Any, query: str, *args: Any) -> list[Any]:
        """One write statement: its own commit (``SELF_COMMITTING``), or in a savepoint."""
        if tx is not None:
            rows: list[Any] = await tx._run_write(lambda conn, _fx: conn.fetch(query, *args))
            return rows
        return list(await self._runner.self_committing(lambda conn: conn.fetch(query, *args)))

    # --- agents ----------------------------------------------------------------------------

    async def insert_agent(self, tx: Any, rec: Record) -> None:
        await self._statement(tx, sql.INSERT_AGENT, *ops.agent_args(rec))

    async def get_agent(self, tx: Any, agent_id: str) -> Record | None:
        row = await self._fetchrow(tx, sql.GET_AGENT, agent_id)
        return None if row is None else row_record(_AGENTS, row)

    async def replace_agent(self, tx: Any, rec: Record) -> None:
        if not await self._statement(tx, sql.UPDATE_AGENT, *ops.agent_args(rec)):
            raise NotFoundError("agent", rec["id"])

    async def delete_agent(self, tx: Any, agent_id: str) -> None:
        await self._write(tx, lambda conn, fx: self.ops.delete_agent(conn, fx, agent_id))

    async def list_agents(self, tx: Any, status: str | None) -> list[Record]:
        if status is None:
            return await self._rows(tx, _AGENTS, sql.LIST_AGENTS)
        return await self._rows(tx, _AGENTS, sql.LIST_AGENTS_BY_STATUS, status)

    async def heartbeat(self, tx: Any, agent_id: str, at: int | None) -> None:
        now = self._now()
        stamp = now if at is None else at
        if not await self._statement(tx, sql.HEARTBEAT, agent_id, stamp, now):
            raise NotFoundError("agent", agent_id)

    async def stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        return await self._rows(tx, _AGENTS, sql.STALE_AGENTS, cutoff)

    async def reap_stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        now = self._now()
        return await self._write(
            tx, lambda conn, fx: self.ops.reap_stale_agents(conn, fx, cutoff, now)
        )

    # --- tasks -----------------------------------------------------------------------------

    async def insert_tasks(
        self, tx: Any, recs: list[Record], raise_on_duplicate: bool
    ) -> list[str]:
        if (
            tx is None
            and len(recs) == 1
            and recs[0]["dependencies"] == "[]"
            and recs[0]["dedup_key"] is None
        ):
            # The common case, a lone task with nothing to check against: one round trip
            # instead of a transaction that reads first.
            rec = recs[0]
            stored, woke = await self._runner.self_committing(
                lambda conn: self.ops.store_lone_task(conn, rec, self.channel)
            )
            if not stored:
                raise ConflictError("task", rec["id"])
            if woke:
                self._wake.wake(TASKS)
            return [rec["id"]]
        ids: list[str] = await self._write(
            tx, lambda conn, fx: self.ops.store_tasks(conn, fx, recs, raise_on_duplicate)
        )
        return ids

    async def get_task(self, tx: Any, task_id: str) -> Record | None:
        row = await self._fetchrow(tx, sql.GET_TASK, task_id)
        return None if row is None else task(row)

    async def replace_task(self, tx: Any, rec: Record) -> None:
        await self._write(tx, lambda conn, fx: self.ops.update_task(conn, fx, rec))

    async def delete_task(self, tx: Any, task_id: str) -> None:
        await self._write(tx, lambda conn, fx: self.ops.delete_task(conn, fx, task_id))

    async def pending_tasks(self, tx: Any) -> list[Record]:
        return [task(r) for r in await self._fetch(tx, sql.PENDING_TASKS)]

    async def ready_tasks(self, tx: Any, limit: int | None) -> list[Record]:
        rows = await self._read(tx, lambda conn: conn.fetch(sql.READY_TASKS, self._now(), limit))
        return [task(r) for r in rows]

    async def tasks_by_agent(self, tx: Any, agent_id: str) -> list[Record]:
        return [task(r) for r in await self._fetch(tx, sql.TASKS_BY_AGENT, agent_id)]

    async def claim_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> bool:
        self._check_lease(lease_us)
        if tx is None:
            claimed = await self._runner.self_committing(
                lambda conn: self.ops.claim_task_at_once(conn, task_id, agent_id, lease_us)
            )
            if claimed is not None:
                return claimed
        return await self._write(
            tx, lambda conn, fx: self.ops.claim_task(conn, fx, task_id, agent_id, lease_us)
        )

    async def claim_next_task(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int
    ) -> Record | None:
        self._check_lease(lease_us)
        if tx is None:
            expired, got = await self._runner.self_committing(
                lambda conn: self.ops.claim_next_at_once(conn, agent_id, types, lease_us)
            )
            if not expired:
                return got
        return await self._write(
            tx, lambda conn, fx: self.ops.claim_next(conn, fx, agent_id, types, lease_us)
        )

    async def claim_next_tasks(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int, n: int
    ) -> list[Record]:
        self._check_lease(lease_us)
        got: list[Record] = []
        if tx is None:
            rest, got = await self._runner.self_committing(
                lambda conn: self.ops.claim_batch_at_once(conn, agent_id, types, lease_us, n)
            )
            if not rest or len(got) == n:
                return got
            # A lease ran out, or a task of a limited key came up: the rest one by one.
        more = await self._write(
            tx,
            lambda conn, fx: self.ops.claim_batch(
                conn, fx, agent_id, types, lease_us, n - len(got)
            ),
        )
        return got + more

    async def set_queue_limit(
        self, tx: Any, key: str, kind: str, limit: int | None, period_us: int | None
    ) -> None:
        op = self.ops.set_queue_limit
        await self._write(tx, lambda conn, fx: op(conn, fx, key, kind, limit, period_us))

    async def queue_limits(self, tx: Any) -> list[Record]:
        return await self._rows(tx, sql.QUEUE_LIMIT_COLS, sql.QUEUE_LIMITS)

    async def start_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        return await self._write(
            tx, lambda conn, fx: self.ops.start_task(conn, fx, task_id, agent_id, self._now())
        )

    async def complete_task(
        self, tx: Any, task_id: str, agent_id: str, result: str | None
    ) -> Record:
        if tx is None:
            done, woke = await self._runner.self_committing(
                lambda conn: self.ops.complete_at_once(
                    conn, task_id, agent_id, result, self._now(), self.channel
                )
            )
            if done is not None:
                if woke:
                    self._wake.wake(TASKS)
                self._wake.wake(FINISHED)
                return done
            # A lease ran out somewhere, or the task is not held as asked: the full path
            # requeues expired leases and says what went wrong.
        return await self._write(
            tx,
            lambda conn, fx: self.ops.complete_task(
                conn, fx, task_id, agent_id, result, self._now()
            ),
        )

    async def complete_tasks(
        self, tx: Any, agent_id: str, pairs: list[tuple[str, str | None]]
    ) -> list[Record]:
        if tx is None:
            done, woke = await self._runner.self_committing(
                lambda conn: self.ops.complete_batch_at_once(
                    conn, agent_id, pairs, self._now(), self.channel
                )
            )
            if done is not None:
                if woke:
                    self._wake.wake(TASKS)
                self._wake.wake(FINISHED)
                return done
            # A lease ran out somewhere, or a task is not held as asked: the full path
            # requeues expired leases and says what went wrong.
        return await self._write(
            tx,
            lambda conn, fx: self.ops.complete_tasks(conn, fx, agent_id, pairs, self._now()),
        )

    async def fail_task(self, tx: Any, task_id: str, agent_id: str, error: str) -> Record:
        return await self._write(
            tx,
            lambda conn, fx: self.ops.fail_task(conn, fx, task_id, agent_id, error, self._now()),
        )

    async def cancel_task(self, tx: Any, task_id: str, reason: str | None) -> list[str]:
        return await self._write(
            tx, lambda conn, fx: self.ops.cancel_task(conn, fx, task_id, reason, self._now())
        )

    async def heartbeat_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> Record:
        self._check_lease(lease_us)
        return await self._write(
            tx,
            lambda conn, fx: self.ops.heartbeat_task(
                conn, fx, task_id, agent_id, lease_us, self._now()
            ),
        )

    async def release_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        return await self._write(
            tx, lambda conn, fx: self.ops.release_task(conn, fx, task_id, agent_id, self._now())
        )

    async def failed_tasks(self, tx: Any, task_type: str | None, limit: int) -> list[Record]:
        rows = await (
            self._fetch(tx, sql.FAILED_TASKS, limit)
            if task_type is None
            else self._fetch(tx, sql.FAILED_TASKS_OF_TYPE, task_type, limit)
        )
        return [task(r) for r in rows]

    async def retry_tasks(
        self, tx: Any, task_ids: list[str] | None, task_type: str | None
    ) -> list[Record]:
        return await self._write(
            tx, lambda conn, fx: self.ops.retry_tasks(conn, fx, task_ids, task_type, self._now())
        )

    async def dependency_results(
        self, tx: Any, task_id: str
    ) -> list[tuple[str, str | None]] | None:
        rows = await self._fetch(tx, sql.DEPENDENCY_RESULTS, task_id)
        if not rows:
            return None
        return [(r[0], r[1]) for r in rows if r[0] is not None]

    async def next_ready(self, tx: Any, types: list[str] | None) -> int | None:
        async def read_due(conn: Conn) -> tuple[int, Any]:
            now = self._now()
            return now, await conn.fetchrow(sql.TASKS_DUE, now, types)

        now, (ready, next_run, lease_end, rate_frees) = await self._read(tx, read_due)
        if ready or (lease_end is not None and lease_end <= now):
            return 0  # ready, or a claim requeues a task whose lease ran out
        due = [int(t) for t in (next_run, lease_end, rate_frees) if t is not None]
        return max(min(due) - now, 1) if due else None

    # --- events ----------------------------------------------------------------------------

    async def _append_alone(self, rows: list[EventValues]) -> list[int]:
        """Append rows in a statement of their own (the appender's writes)."""
        return await self._runner.self_committing(
            lambda conn: ops.append_events(conn, rows, self.channel)
        )

    async def append_event(self, tx: Any, row: EventValues) -> int:
        return (await self.append_events(tx, [row]))[0]

    async def append_events(self, tx: Any, rows: list[EventValues]) -> list[int]:
        check_unique_ids([row[0] for row in rows], "event")
        if tx is not None:

            async def append(conn: Conn, fx: Effects) -> list[int]:
                fx.events = True
                return await ops.append_events(conn, rows, self.channel)

            seqs: list[int] = await tx._run_write(append)
            return seqs
        if len(rows) >= COPY_ROWS:
            # A large batch on its own: COPY, in a transaction of its own.
            seqs = await self._append_alone(rows)
            self._wake.wake(EVENTS)
            return seqs
        return await self.appender.append(rows)

    async def events_by_agent(self, tx: Any, agent_id: str, limit: int) -> list[Record]:
        return await self._rows(tx, _EVENTS, sql.EVENTS_BY_AGENT, agent_id, limit)

    async def events_by_type(self, tx: Any, event_type: str, limit: int) -> list[Record]:
        return await self._rows(tx, _EVENTS, sql.EVENTS_BY_TYPE, event_type, limit)

    async def events_since(self, tx: Any, since: int) -> list[Record]:
        return await self._rows(tx, _EVENTS, sql.EVENTS_SINCE, since)

    async def read_events(self, tx: Any, after: int, limit: int) -> list[Record]:
        return await self._rows(tx, _EVENTS, sql.READ_EVENTS, after, limit)

    # --- messages --------------------------------------------------------------------------

    async def insert_message(self, tx: Any, rec: Record) -> None:
        args = [rec[c] for c in _MESSAGES]
        args[4] = jsonb_text(args[4])
        await self._statement(tx, sql.STORE_MESSAGE, *args, self.channel)
        if tx is None:
            self._wake.wake(mail(rec["to_agent"]))
        else:
            tx._note_mail(rec["to_agent"])

    async def get_event(self, tx: Any, event_id: str) -> Record | None:
        row = await self._fetchrow(tx, sql.GET_EVENT, event_id)
        return None if row is None else row_record(_EVENTS, row)

    async def get_message(self, tx: Any, message_id: str) -> Record | None:
        row = await self._fetchrow(tx, sql.GET_MESSAGE, message_id)
        return None if row is None else row_record(_MESSAGES, row)

    async def delete_message(self, tx: Any, message_id: str) -> None:
        await self._statement(tx, sql.DELETE_MESSAGE, message_id)

    async def messages_between(self, tx: Any, a: str, b: str, limit: int) -> list[Record]:
        return await self._rows(tx, _MESSAGES, sql.MESSAGES_BETWEEN, a, b, limit)

    async def unread_messages(self, tx: Any, agent_id: str) -> list[Record]:
        return await self._rows(tx, _MESSAGES, sql.UNREAD_MESSAGES, agent_id)

    async def mark_message_read(self, tx: Any, message_id: str) -> Record:
        rows = await self._statement(tx, sql.MARK_READ, message_id, self._now())
        if rows:
            return row_record(_MESSAGES, rows[0])
        row = await self._fetchrow(tx, sql.GET_MESSAGE, message_id)
        if row is None:
            raise NotFoundError("message", message_id)
        return row_record(_MESSAGES, row)

    # --- metrics ---------------------------------------------------------------------------

    async def insert_metrics(self, tx: Any, recs: list[Record]) -> None:
        check_unique_ids([rec["id"] for rec in recs], "metric")
        if not recs:
            return
        cols = ops.columns(recs, _METRICS)
        cols[5] = [jsonb_text(v) for v in cols[5]]
        await self._statement(tx, sql.INSERT_METRICS, *cols)

    async def metrics_by_agent(
        self, tx: Any, agent_id: str, metric_type: str | None
    ) -> list[Record]:
        return await self._rows(tx, _METRICS, sql.METRICS_BY_AGENT, agent_id, metric_type)

    async def _metric_rows(
        self, tx: Any, metric_type: str, start: int, end: int
    ) -> list[MetricRow]:
        rows = await self._fetch(tx, sql.METRIC_ROWS, metric_type, start, end)
        return [MetricRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def crate_aggregate(
        self, tx: Any, metric_type: str, start: int, end: int
    ) -> list[MetricModel]:
        # Summed here with math.fsum, as on every backend: the server's sum() of float8 adds
        # naively, and a cast to numeric keeps 15 digits. The server groups and sends each
        # group's values as one array, which asyncpg decodes in C: a third of the time of a row
        # per value.
        groups = await self._fetch(tx, sql.AGGREGATE_VALUES_BY_AGENT, metric_type, start, end)
        out = []
        for agent_id, unit, count, low, high, latest, values in groups:
            total, mean = sum_and_mean(values)
            out.append(
                crate_metric(metric_type, agent_id, unit, count, total, low, high, latest, mean)
            )
        out.sort(key=lambda m: crate_order(m.agent_id, m.unit))
        return out

    async def aggregate_metrics(
        self,
        tx: Any,
        metric_type: str,
        start: int,
        end: int,
        groups: list[str],
        bucket_us: int | None,
    ) -> list[MetricAggregate]:
        rows = await self._metric_rows(tx, metric_type, start, end)
        return aggregate(metric_type, rows, tuple(groups), bucket_us)

    # --- queries, maintenance --------------------------------------------------------------

    # --- schedules -------------------------------------------------------------------------

    async def put_schedule(self, tx: Any, rec: Record) -> Record:
        args = [rec[c] for c in sql.SCHEDULE_COLS]
        (row,) = await self._statement(tx, sql.PUT_SCHEDULE, *args)
        return row_record(sql.SCHEDULE_COLS, row)

    async def restore_schedule(self, tx: Any, rec: Record) -> None:
        args = [rec[c] for c in sql.SCHEDULE_COLS]
        if not await self._statement(tx, sql.RESTORE_SCHEDULE, *args):
            raise ConflictError("schedule", rec["name"])

    async def get_schedule(self, tx: Any, name: str) -> Record | None:
        row = await self._fetchrow(tx, sql.GET_SCHEDULE, name)
        return None if row is None else row_record(sql.SCHEDULE_COLS, row)

    async def list_schedules(self, tx: Any) -> list[Record]:
        return await self._rows(tx, sql.SCHEDULE_COLS, sql.LIST_SCHEDULES)

    async def delete_schedule(self, tx: Any, name: str) -> None:
        await self._statement(tx, sql.DELETE_SCHEDULE, name)

    async def set_schedule_paused(
        self, tx: Any, name: str, paused: bool, next_due: int | None, now: int
    ) -> Record | None:
        rows = await self._statement(tx, sql.SET_SCHEDULE_PAUSED, name, int(paused), next_due, now)
        return row_record(sql.SCHEDULE_COLS, rows[0]) if rows else None

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
        return await self._write(
            tx,
            lambda conn, fx: self.ops.fire_schedule(
                conn, fx, name, expected_due, next_due, due, task, now
            ),
        )

    async def query(self, tx: Any, builder: QueryBuilder[Any]) -> list[Record]:
        text, params = builder.build("postgres")
        return await self._rows(tx, COLUMNS[builder.table], text, *params)

    async def count(
        self, tx: Any, builder: QueryBuilder[Any], group_by: tuple[str, ...]
    ) -> list[tuple[Any, ...]]:
        text, params = builder.build_count(group_by, "postgres")
        return [tuple(r) for r in await self._fetch(tx, text, *params)]

    async def vacuum(self, tx: Any) -> None:
        """``VACUUM ANALYZE`` the swarm's tables (only ``ANALYZE`` inside a transaction)."""
        if tx is not None:
            await tx._run(lambda conn: conn.execute(sql.ANALYZE))
            return
        await self._runner.read(lambda conn: conn.execute(sql.VACUUM))

    async def checkpoint(self, tx: Any) -> None:
        """Run ``CHECKPOINT`` when permitted; otherwise only check the connection.

        PostgreSQL flushes its write-ahead log by itself; ``CHECKPOINT`` needs superuser or
        the ``pg_checkpoint`` role, so without them this is a no-op that verifies the server
        answers.
        """

        async def run(conn: Conn) -> None:
            try:
                await conn.execute(sql.CHECKPOINT)
            except asyncpg.InsufficientPrivilegeError:
                await conn.fetchval(sql.PING)

        if tx is not None:
            await tx._run(lambda conn: conn.fetchval(sql.PING))
            return
        await self._runner.read(run)

    async def storage_size(self, tx: Any) -> int:
        """Bytes used by the swarm's tables and their indexes."""
        size = await self._read(
            tx, lambda conn: conn.fetchval(sql.STORAGE_SIZE, self.schema, list(sql.TABLES))
        )
        return int(size)

    async def prune(
        self, tx: Any, events: int | None, metrics: int | None, read_messages: int | None
    ) -> PruneResult:
        return await self._write(
            tx, lambda conn, fx: self.ops.prune(conn, fx, events, metrics, read_messages)
        )

    async def retain(self, tx: Any, plan: RetentionPlan) -> PruneResult:
        return await self._write(tx, lambda conn, fx: self.ops.retain(conn, fx, plan))

    async def retention_record(self, tx: Any) -> dict[str, int]:
        rows = await self._fetch(tx, sql.RETENTION_RECORD)
        return {str(name).removeprefix("retention."): int(value) for name, value in rows}

    async def set_retention_record(self, tx: Any, record: dict[str, int]) -> None:
        names = [f"retention.{key}" for key in record]
        await self._statement(tx, sql.SET_RECORD, names, list(record.values()))
