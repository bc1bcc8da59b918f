"""``PostgresStorage``: the Storage API on PostgreSQL through an asyncpg pool.

This module holds the class's public methods and its lifecycle; the rest is apart:
:mod:`.options` checks the options, :mod:`.runner` runs work on the pool under a named retry
policy, :mod:`.ops` says what each operation does on a connection, :mod:`.sql` holds the
statements, :mod:`.transaction` the held transaction, :mod:`.appender` the group commit of
``store_event``, and :mod:`.listener` the notifications.

How the semantics are kept (the conformance suite checks every one):

* Every write runs in one transaction (or, inside a caller's transaction, a savepoint, so a
  refused write leaves the transaction usable). Task writes requeue expired leases first, as
  the memory backend does, and every status change goes through
  :meth:`.ops.PostgresOps.transition`, built on :mod:`ruv_swarm_persistence.rules`; the claim
  is folded into one ``UPDATE … FOR UPDATE SKIP LOCKED`` statement that also refuses to run
  while a lease has expired (the caller then expires leases in a transaction and claims
  there).
* Event sequences come from a counter row updated in the appending statement: its row lock
  serializes appends until commit, so sequences are gapless and commit in order, and a
  reader of ``read_events(after=N)`` never misses a later commit with a lower number.
  Concurrent ``store_event`` calls of one process are grouped into one statement (group
  commit), so the serialization costs one round trip per group, not per event.
* Writers ``NOTIFY`` in the transaction of the write; a dedicated listener connection wakes
  ``subscribe``, ``wait_for_messages`` and :meth:`PostgresStorage.wait_for_tasks` in every
  process (see :mod:`.listener`).
* Transactions hold one connection; while one is open, calls from other tasks of this
  process wait for it to end (the memory backend's rule), other processes are isolated by
  MVCC and row locks.
* Dead connections are replaced by the pool. A read that loses its connection is retried
  once; a write is retried only when it certainly did not commit; a write whose commit is in
  doubt raises :class:`DatabaseError` (the policies are described in :mod:`.runner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ... import codec, rules
from ..._time import now_us, to_us
from ...aggregate import MetricRow, aggregate, crate_aggregate, grouping_args, window_args
from ...codec import EventValues, Limits
from ...errors import (
    DatabaseError,
    MigrationError,
    NotASwarmDatabaseError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from ...migrations import (
    AppliedMigration,
    Migration,
    MigrationRunner,
    bundled_migrations,
    check_applied,
)
from ...models import AgentModel, AgentStatus, EventModel, MessageModel, MetricModel, TaskModel
from ...query import QueryBuilder
from ...storage import (
    ACTIVE_TRANSACTION,
    Duration,
    MetricAggregate,
    PruneResult,
    TimeArg,
    Transaction,
)
from .._gate import Deadline, GatedStorage, TxState
from . import ops, sql
from .appender import EventAppender
from .listener import Listener
from .ops import (
    COPY_ROWS,
    MIGRATION_LOCK_KEY,
    Effects,
    Op,
    PostgresOps,
    decode,
    jsonb_text,
    perform,
    task,
    task_model,
)
from .options import (
    PoolOptions,
    application_name,
    channel_for,
    check_dsn,
    check_flags,
    check_schema,
    check_standard,
    connect_options,
    pool_options,
)
from .runner import Conn, Runner
from .transaction import PostgresTransaction

__all__ = [
    "COPY_ROWS",
    "MIGRATION_LOCK_KEY",
    "PoolOptions",
    "PostgresStorage",
    "PostgresTransaction",
    "application_name",
    "channel_for",
    "check_schema",
    "jsonb_text",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_AGENT_COLS = sql.AGENT_COLS
_EVENT_COLS = sql.EVENT_COLS
_MESSAGE_COLS = sql.MESSAGE_COLS


class PostgresStorage(GatedStorage[PostgresTransaction]):
    """A swarm stored in PostgreSQL; many processes on many machines may share it.

    Open with ``await PostgresStorage.open(dsn, **options)`` or
    ``await init_storage("postgresql://user@host/db?schema=swarm1")``. Options: ``schema``
    (created if missing; several swarms can share a database), the pool's ``min_size``,
    ``max_size``, ``command_timeout``, ``max_inactive_connection_lifetime`` and
    ``acquire_timeout`` (seconds to wait for a free connection before :class:`PoolError`),
    and the standard ``clock``, ``lease``, ``retry_policy``, ``limits`` and
    ``transaction_timeout``; ``migrate=False`` opens without applying migrations, and
    ``read_only=True`` opens an existing swarm schema only to read it (nothing is created or
    migrated, every transaction is read-only, a schema that is not a swarm's is refused with
    a ``DatabaseError``, and a write raises ``DatabaseError``). Times are
    stored as integer microseconds, so they round-trip exactly; JSON fields are ``jsonb``
    (values come back equal, object keys in jsonb's order).

    While a transaction is open, calls from other tasks of this storage object wait for it
    (as on every backend); other storage objects and other processes are not held up, they
    see the committed state only.
    """

    dialect = "postgres"

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        dsn: str,
        schema: str,
        connect_options: dict[str, Any],
        pool_options: PoolOptions,
        clock: Callable[[], datetime] | None = None,
        lease: Duration = 30,
        retry_policy: rules.RetryPolicy | None = None,
        limits: Limits | None = None,
        transaction_timeout: Duration = 30,
    ) -> None:
        self._pool = pool
        self._runner = Runner(pool, pool_options)
        self._dsn = dsn
        self.schema = schema
        self._connect_options = connect_options
        self.pool_options = pool_options
        self._now: Callable[[], int] = now_us if clock is None else (lambda: to_us(clock()))
        self._lease_us = codec.duration_arg(lease, "lease")
        self._policy = retry_policy or rules.RetryPolicy()
        self._ops = PostgresOps(self._now, self._policy)
        self._limits = limits or codec.DEFAULT_LIMITS
        self._tx_timeout_us = codec.duration_arg(transaction_timeout, "transaction_timeout")
        self.channel = channel_for(schema)
        self.listener = Listener(self._listen_connection, self.channel)
        self._appender = EventAppender(self._append_alone, lambda: self.listener.wake("e"))
        self._closed = False
        self._init_gate()
        self._background: set[asyncio.Task[None]] = set()

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float | None = None,
        max_inactive_connection_lifetime: float = 300.0,
        acquire_timeout: float = 30.0,
        migrate: bool = True,
        read_only: bool = False,
        **options: Any,
    ) -> PostgresStorage:
        """Connect, create the schema if missing and apply pending migrations."""
        schema = check_schema(schema)
        check_flags(migrate=migrate, read_only=read_only)
        pool_opts = pool_options(
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            max_inactive_connection_lifetime=max_inactive_connection_lifetime,
            acquire_timeout=acquire_timeout,
        )
        check_standard(options)
        dsn = check_dsn(dsn)
        connect = connect_options(schema, pool_opts, read_only=read_only)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                reset=_keep_session,
                min_size=pool_opts.min_size,
                max_size=pool_opts.max_size,
                max_inactive_connection_lifetime=pool_opts.max_inactive_connection_lifetime,
                **connect,
            )
        except Exception as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
        storage = cls(
            pool,
            dsn=dsn,
            schema=schema,
            connect_options=connect,
            pool_options=pool_opts,
            **options,
        )
        try:
            if read_only:
                await storage._check_swarm_schema()
            elif migrate:
                await MigrationRunner(storage).migrate()
        except BaseException:
            await storage.close()
            raise
        return storage

    async def _listen_connection(self) -> asyncpg.Connection[Any]:
        settings = dict(self._connect_options["server_settings"])
        settings["application_name"] = application_name(self.schema, "listener")
        return await asyncpg.connect(self._dsn, server_settings=settings, timeout=10)

    async def close(self) -> None:
        """Finish pending appends, roll back an open transaction, close every connection."""
        if self._closed:
            return
        await self._appender.drain()
        self._closed = True
        self._blocked = True
        tx = self._tx
        if tx is not None:
            await tx._abort("storage closed")
        for bg in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await bg
        await self.listener.close()
        self._wake_tx_waiters()
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except (TimeoutError, Exception):
            self._pool.terminate()

    # --- migrations (MigrationTarget) ------------------------------------------------------

    async def _check_swarm_schema(self) -> None:
        """Refuse a schema this library did not make (a read-only storage cannot fix it)."""
        schema_exists, table_exists = await self._pooled_read(
            lambda conn: ops.find_schema(conn, self.schema)
        )
        if not table_exists:
            raise NotASwarmDatabaseError(
                f"schema {self.schema!r} holds no swarm database", empty=not schema_exists
            )
        check_applied(await self.applied_migrations(), bundled_migrations(self.dialect))

    async def applied_migrations(self) -> list[AppliedMigration]:
        """Rows of ``schema_migrations`` by version (none before the table exists)."""
        return await self._pooled_read(ops.applied_migrations)

    async def apply_migration(self, migration: Migration, recorded_name: str) -> bool:
        """Run one migration and record it, in one transaction under the migration lock."""
        applied = await self._pooled_read(
            lambda conn: ops.apply_migration(
                conn, self.schema, migration, recorded_name, self._now()
            )
        )
        if applied:
            await self._pool.expire_connections()
        return applied

    async def revert_migration(self, migration: Migration, recorded_name: str) -> None:
        """Run ``migration.down`` and delete its record, in one transaction under the lock."""
        down = migration.down
        if down is None:
            raise MigrationError(f"migration {migration.version} ({recorded_name}) has no down SQL")
        await self._pooled_read(
            lambda conn: ops.revert_migration(conn, self.schema, migration, recorded_name, down)
        )
        await self._pool.expire_connections()

    # --- the gate and the runner -------------------------------------------------------------

    async def _gate(self) -> PostgresTransaction | None:
        """Wait while another task's transaction is open; return the caller's own, if any."""
        while True:
            if self._closed:
                raise StorageError("storage is closed")
            current = ACTIVE_TRANSACTION.get()
            # The caller's own transaction, even while another task's holds the storage
            # (only one can be active, so that one is it).
            if (
                isinstance(current, PostgresTransaction)
                and current._pg is self
                and current._state == TxState.ACTIVE
            ):
                return current
            self._check_timed_out(current)
            if self._tx is None:
                return None
            await self._wait_for_tx()

    async def _pooled_read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection (the ``READ`` policy)."""
        return await self._runner.read(fn)

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run a read: inside the caller's transaction if any, else on the pool."""
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return await tx._run(fn)
        return await self._runner.read(fn)

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        return await self._read(lambda conn: conn.fetch(query, *args))

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        return await self._read(lambda conn: conn.fetchrow(query, *args))

    async def _write(self, op: Op[T]) -> T:
        """Run a write in its own transaction (``WRITE``), or a savepoint of the caller's."""
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return await tx._run_write(op)
        result, deferred, fx = await self._runner.write(
            lambda conn: perform(conn, op, self.channel)
        )
        self._after_commit(fx)
        if deferred is not None:
            raise deferred
        return result  # type: ignore[return-value]

    async def _statement(self, query: str, *args: Any) -> list[Any]:
        """One write statement: its own commit (``SELF_COMMITTING``), or in a savepoint."""
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return await tx._run_write(lambda conn, _fx: conn.fetch(query, *args))
        return list(await self._runner.self_committing(lambda conn: conn.fetch(query, *args)))

    async def _in_transaction(self) -> bool:
        return (await self._gate() if self._blocked else None) is not None

    def _after_commit(self, fx: Effects) -> None:
        """Wake this process's waiters at once (other processes hear the NOTIFY)."""
        for key in fx.notes():
            self.listener.wake(key)

    # --- agents ------------------------------------------------------------------------------

    async def store_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        await self._statement(sql.INSERT_AGENT, *ops.agent_args(rec))

    async def get_agent(self, agent_id: str) -> AgentModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        row = await self._fetchrow(sql.GET_AGENT, agent_id)
        return None if row is None else decode("agents", _AGENT_COLS, row)

    async def update_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        if not await self._statement(sql.UPDATE_AGENT, *ops.agent_args(rec)):
            raise NotFoundError("agent", rec["id"])

    async def delete_agent(self, agent_id: str) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        await self._write(lambda conn, fx: self._ops.delete_agent(conn, fx, agent_id))

    async def list_agents(self) -> list[AgentModel]:
        rows = await self._fetch(sql.LIST_AGENTS)
        return [decode("agents", _AGENT_COLS, r) for r in rows]

    async def list_agents_by_status(self, status: AgentStatus | str) -> list[AgentModel]:
        value = codec._enum(AgentStatus, status, "status").value
        rows = await self._fetch(sql.LIST_AGENTS_BY_STATUS, value)
        return [decode("agents", _AGENT_COLS, r) for r in rows]

    async def heartbeat(self, agent_id: str, at: TimeArg | None = None) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        stamp = codec.opt_time_arg(at, "at")
        now = self._now()
        if not await self._statement(sql.HEARTBEAT, agent_id, now if stamp is None else stamp, now):
            raise NotFoundError("agent", agent_id)

    async def find_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        cutoff = codec.cutoff_arg(older_than, "older_than", self._now())
        rows = await self._fetch(sql.STALE_AGENTS, cutoff)
        return [decode("agents", _AGENT_COLS, r) for r in rows]

    async def reap_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        now = self._now()
        cutoff = codec.cutoff_arg(older_than, "older_than", now)
        return await self._write(
            lambda conn, fx: self._ops.reap_stale_agents(conn, fx, cutoff, now)
        )

    # --- tasks -------------------------------------------------------------------------------

    async def store_task(self, task: TaskModel) -> None:
        await self.store_tasks([task])

    async def store_tasks(self, tasks: Sequence[TaskModel]) -> None:
        recs = codec.encode_batch(tasks, codec.encode_task, "tasks", self._limits)
        if not recs:
            return
        await self._write(lambda conn, fx: self._ops.store_tasks(conn, fx, recs))

    async def get_task(self, task_id: str) -> TaskModel | None:
        codec.check_id(task_id, "task_id", self._limits)
        row = await self._fetchrow(sql.GET_TASK, task_id)
        return None if row is None else codec.decode("tasks", task(row))

    async def update_task(self, task: TaskModel) -> None:
        rec = codec.encode_task(task, self._limits)
        await self._write(lambda conn, fx: self._ops.update_task(conn, fx, rec))

    async def delete_task(self, task_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        await self._write(lambda conn, fx: self._ops.delete_task(conn, fx, task_id))

    async def get_pending_tasks(self) -> list[TaskModel]:
        rows = await self._fetch(sql.PENDING_TASKS)
        return [codec.decode("tasks", task(r)) for r in rows]

    async def get_ready_tasks(self, limit: int | None = None) -> list[TaskModel]:
        n = None if limit is None else codec.limit_arg(limit)
        rows = await self._fetch(sql.READY_TASKS, self._now(), n)
        return [codec.decode("tasks", task(r)) for r in rows]

    async def get_tasks_by_agent(self, agent_id: str) -> list[TaskModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        rows = await self._fetch(sql.TASKS_BY_AGENT, agent_id)
        return [codec.decode("tasks", task(r)) for r in rows]

    def _lease(self, lease: Duration | None) -> int:
        return self._lease_us if lease is None else codec.duration_arg(lease, "lease")

    def _check_held_args(self, task_id: str, agent_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)

    async def claim_task(self, task_id: str, agent_id: str, lease: Duration | None = None) -> bool:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)
        lease_us = self._lease(lease)
        if not await self._in_transaction():
            claimed = await self._runner.self_committing(
                lambda conn: self._ops.claim_task_at_once(conn, task_id, agent_id, lease_us)
            )
            if claimed is not None:
                return claimed
        return await self._write(
            lambda conn, fx: self._ops.claim_task(conn, fx, task_id, agent_id, lease_us)
        )

    async def claim_next_task(
        self,
        agent_id: str,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> TaskModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        types = codec.types_arg(task_types)
        lease_us = self._lease(lease)
        if not await self._in_transaction():
            expired, got = await self._runner.self_committing(
                lambda conn: self._ops.claim_next_at_once(conn, agent_id, types, lease_us)
            )
            if not expired:
                return None if got is None else task_model(got)
        rec = await self._write(
            lambda conn, fx: self._ops.claim_next(conn, fx, agent_id, types, lease_us)
        )
        return None if rec is None else task_model(rec)

    async def start_task(self, task_id: str, agent_id: str) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        now = self._now()
        return task_model(
            await self._write(
                lambda conn, fx: self._ops.start_task(conn, fx, task_id, agent_id, now)
            )
        )

    async def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        encoded = None if result is None else codec._json_field(result, "result", self._limits)
        now = self._now()
        if not await self._in_transaction():
            done, woke = await self._runner.self_committing(
                lambda conn: self._ops.complete_at_once(
                    conn, task_id, agent_id, encoded, now, self.channel
                )
            )
            if done is not None:
                if woke:
                    self.listener.wake("t")
                return task_model(done)
            # A lease ran out somewhere, or the task is not held as asked: the full path
            # requeues expired leases and says what went wrong.
        return task_model(
            await self._write(
                lambda conn, fx: self._ops.complete_task(conn, fx, task_id, agent_id, encoded, now)
            )
        )

    async def fail_task(self, task_id: str, agent_id: str, error: str) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        codec.check_text(error, "error", self._limits, empty_ok=True)
        now = self._now()
        return task_model(
            await self._write(
                lambda conn, fx: self._ops.fail_task(conn, fx, task_id, agent_id, error, now)
            )
        )

    async def cancel_task(self, task_id: str, reason: str | None = None) -> list[str]:
        codec.check_id(task_id, "task_id", self._limits)
        if reason is not None:
            codec.check_text(reason, "reason", self._limits, empty_ok=True)
        now = self._now()
        return await self._write(
            lambda conn, fx: self._ops.cancel_task(conn, fx, task_id, reason, now)
        )

    async def heartbeat_task(
        self, task_id: str, agent_id: str, lease: Duration | None = None
    ) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        lease_us = self._lease(lease)
        now = self._now()
        return task_model(
            await self._write(
                lambda conn, fx: self._ops.heartbeat_task(
                    conn, fx, task_id, agent_id, lease_us, now
                )
            )
        )

    async def wait_for_tasks(
        self, timeout: Duration | None = None, task_types: Sequence[str] | None = None
    ) -> bool:
        """Wait until a task is ready to claim (of these types); ``False`` after ``timeout``.

        Woken across processes when a task is stored, a dependency completes or a task is
        requeued; a task waiting out a retry backoff is noticed when its time comes.
        """
        deadline = Deadline(timeout)  # arguments are checked left to right
        types = codec.types_arg(task_types)
        while True:
            gen = self.listener.generation("t")
            now = self._now()
            ready, next_run = await self._fetchrow(sql.TASKS_DUE, now, types)
            if ready:
                return True
            if self._closed:
                return False
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                return False
            remaining = deadline.wait_before(None if next_run is None else next_run - now)
            await self.listener.wait("t", gen, remaining)
            if self._closed:
                return False

    # --- events ------------------------------------------------------------------------------

    async def _append_alone(self, rows: list[EventValues]) -> list[int]:
        """Append rows in a statement of their own (the appender's writes)."""
        return await self._runner.self_committing(
            lambda conn: ops.append_events(conn, rows, self.channel)
        )

    async def store_event(self, event: EventModel) -> int:
        return (await self.store_events([event]))[0]

    async def store_events(self, events: Sequence[EventModel]) -> list[int]:
        if (
            not self._blocked
            and isinstance(events, Sequence)
            and not isinstance(events, (str, bytes))
            and len(events) >= COPY_ROWS
        ):
            # A large batch on its own: validated while COPY streams it (see ops).
            seqs = await self._runner.self_committing(
                lambda conn: ops.stream_events(conn, events, self._limits, self.channel)
            )
            self.listener.wake("e")
            for ev, seq in zip(events, seqs, strict=True):
                ev.sequence = seq
            return seqs
        rows = codec.encode_batch(events, codec.event_values, "events", self._limits)
        codec.check_unique_ids([row[0] for row in rows], "event")
        if not rows:
            if self._blocked:
                await self._gate()
            return []
        tx = await self._gate() if self._blocked else None
        if tx is not None:

            async def append(conn: Conn, fx: Effects) -> list[int]:
                fx.events = True
                return await ops.append_events(conn, rows, self.channel)

            seqs = await tx._run_write(append)
        else:
            seqs = await self._appender.append(rows)
        for ev, seq in zip(events, seqs, strict=True):
            ev.sequence = seq
        return seqs

    async def get_events_by_agent(self, agent_id: str, limit: int = 100) -> list[EventModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        n = codec.limit_arg(limit)
        rows = await self._fetch(sql.EVENTS_BY_AGENT, agent_id, n)
        return [decode("events", _EVENT_COLS, r) for r in rows]

    async def get_events_by_type(self, event_type: str, limit: int = 100) -> list[EventModel]:
        codec.check_text(event_type, "event_type", self._limits)
        n = codec.limit_arg(limit)
        rows = await self._fetch(sql.EVENTS_BY_TYPE, event_type, n)
        return [decode("events", _EVENT_COLS, r) for r in rows]

    async def get_events_since(self, since: TimeArg) -> list[EventModel]:
        t = codec.time_arg(since, "since")
        rows = await self._fetch(sql.EVENTS_SINCE, t)
        return [decode("events", _EVENT_COLS, r) for r in rows]

    async def read_events(self, after_sequence: int = 0, limit: int = 1000) -> list[EventModel]:
        after = codec.limit_arg(after_sequence, "after_sequence")
        n = codec.limit_arg(limit)
        rows = await self._fetch(sql.READ_EVENTS, after, n)
        return [decode("events", _EVENT_COLS, r) for r in rows]

    async def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[EventModel]:
        last = codec.limit_arg(after_sequence, "after_sequence")
        types = (
            None
            if event_types is None
            else frozenset(codec.types_arg(event_types, "event_types") or ())
        )
        while not self._closed:
            gen = self.listener.generation("e")
            batch = await self.read_events(last, 500)
            for ev in batch:
                last = ev.sequence or last
                if types is None or ev.event_type in types:
                    yield ev
            if len(batch) < 500:
                await self.listener.wait("e", gen, None)

    # --- messages ----------------------------------------------------------------------------

    async def store_message(self, message: MessageModel) -> None:
        rec = codec.encode_message(message, self._limits)
        args = [rec[c] for c in _MESSAGE_COLS]
        args[4] = jsonb_text(args[4])
        tx = await self._gate() if self._blocked else None
        await self._statement(sql.STORE_MESSAGE, *args, self.channel)
        if tx is None:
            self.listener.wake(f"m:{rec['to_agent']}")
        else:
            tx._note_mail(rec["to_agent"])

    async def get_message(self, message_id: str) -> MessageModel | None:
        codec.check_id(message_id, "message_id", self._limits)
        row = await self._fetchrow(sql.GET_MESSAGE, message_id)
        return None if row is None else decode("messages", _MESSAGE_COLS, row)

    async def delete_message(self, message_id: str) -> None:
        codec.check_id(message_id, "message_id", self._limits)
        await self._statement(sql.DELETE_MESSAGE, message_id)

    async def get_messages_between(
        self, agent_a: str, agent_b: str, limit: int = 100
    ) -> list[MessageModel]:
        codec.check_id(agent_a, "agent_a", self._limits)
        codec.check_id(agent_b, "agent_b", self._limits)
        n = codec.limit_arg(limit)
        rows = await self._fetch(sql.MESSAGES_BETWEEN, agent_a, agent_b, n)
        return [decode("messages", _MESSAGE_COLS, r) for r in rows]

    async def get_unread_messages(self, agent_id: str) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        rows = await self._fetch(sql.UNREAD_MESSAGES, agent_id)
        return [decode("messages", _MESSAGE_COLS, r) for r in rows]

    async def mark_message_read(self, message_id: str) -> MessageModel:
        codec.check_id(message_id, "message_id", self._limits)
        rows = await self._statement(sql.MARK_READ, message_id, self._now())
        if rows:
            return ops.message(rows[0])
        row = await self._fetchrow(sql.GET_MESSAGE, message_id)
        if row is None:
            raise NotFoundError("message", message_id)
        return ops.message(row)

    async def wait_for_messages(
        self, agent_id: str, timeout: Duration | None = None
    ) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        deadline = Deadline(timeout)
        key = f"m:{agent_id}"
        while True:
            gen = self.listener.generation(key)
            unread = await self.get_unread_messages(agent_id)
            if unread or self._closed:
                return unread
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                return []
            await self.listener.wait(key, gen, remaining)
            if self._closed:
                # Woken by close(): return like a timeout instead of failing the next read.
                return []

    # --- metrics -----------------------------------------------------------------------------

    async def store_metric(self, metric: MetricModel) -> None:
        await self.store_metrics([metric])

    async def store_metrics(self, metrics: Sequence[MetricModel]) -> None:
        recs = codec.encode_batch(metrics, codec.encode_metric, "metrics", self._limits)
        codec.check_unique_ids([rec["id"] for rec in recs], "metric")
        if not recs:
            if self._blocked:
                await self._gate()
            return
        cols = ops.columns(recs, sql.METRIC_COLS)
        cols[5] = [jsonb_text(v) for v in cols[5]]
        await self._statement(sql.INSERT_METRICS, *cols)

    async def get_metrics_by_agent(
        self, agent_id: str, metric_type: str | None = None
    ) -> list[MetricModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        if metric_type is not None:
            codec.check_text(metric_type, "metric_type", self._limits)
        rows = await self._fetch(sql.METRICS_BY_AGENT, agent_id, metric_type)
        return [decode("metrics", sql.METRIC_COLS, r) for r in rows]

    async def _metric_rows(self, metric_type: str, start: int, end: int) -> list[MetricRow]:
        rows = await self._fetch(sql.METRIC_ROWS, metric_type, start, end)
        return [MetricRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def get_aggregated_metrics(
        self, metric_type: str, start: TimeArg, end: TimeArg
    ) -> list[MetricModel]:
        _, s, t = window_args(metric_type, start, end, self._limits)
        return crate_aggregate(metric_type, await self._metric_rows(metric_type, s, t))

    async def aggregate_metrics(
        self,
        metric_type: str,
        start: TimeArg,
        end: TimeArg,
        group_by: Sequence[str] = ("agent_id",),
        bucket: Duration | None = None,
    ) -> list[MetricAggregate]:
        _, s, t = window_args(metric_type, start, end, self._limits)
        groups, bucket_us = grouping_args(group_by, bucket)
        rows = await self._metric_rows(metric_type, s, t)
        return aggregate(metric_type, rows, groups, bucket_us)

    # --- transactions --------------------------------------------------------------------------

    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        timeout_us = (
            self._tx_timeout_us if timeout is None else codec.duration_arg(timeout, "timeout")
        )
        tx = await self._hold(lambda: PostgresTransaction(self, timeout_us / 1e6))
        try:
            await tx._start()
        except BaseException:
            tx._state = TxState.FAILED
            self._release_tx(tx)
            raise
        ACTIVE_TRANSACTION.set(tx)
        return tx

    # --- queries and maintenance ---------------------------------------------------------------

    async def query(self, builder: QueryBuilder[Any]) -> list[Any]:
        if not isinstance(builder, QueryBuilder):
            raise ValidationError("expected a QueryBuilder", field="builder")
        text, params = builder.build("postgres")
        table = builder.table
        columns = codec.COLUMNS[table]
        rows = await self._fetch(text, *params)
        return [decode(table, columns, r) for r in rows]

    async def vacuum(self) -> None:
        """``VACUUM ANALYZE`` the swarm's tables (only ``ANALYZE`` inside a transaction)."""
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            await tx._run(lambda conn: conn.execute(sql.ANALYZE))
            return
        await self._runner.read(lambda conn: conn.execute(sql.VACUUM))

    async def checkpoint(self) -> None:
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

        tx = await self._gate() if self._blocked else None
        if tx is not None:
            await tx._run(lambda conn: conn.fetchval(sql.PING))
            return
        await self._runner.read(run)

    async def get_storage_size(self) -> int:
        """Bytes used by the swarm's tables and their indexes."""
        size = await self._read(
            lambda conn: conn.fetchval(sql.STORAGE_SIZE, self.schema, list(sql.TABLES))
        )
        return int(size)

    async def prune(
        self,
        events_before: TimeArg | None = None,
        metrics_before: TimeArg | None = None,
        read_messages_before: TimeArg | None = None,
    ) -> PruneResult:
        ev_t = codec.opt_time_arg(events_before, "events_before")
        me_t = codec.opt_time_arg(metrics_before, "metrics_before")
        ms_t = codec.opt_time_arg(read_messages_before, "read_messages_before")
        return await self._write(lambda conn, fx: self._ops.prune(conn, fx, ev_t, me_t, ms_t))


async def _keep_session(conn: Any) -> None:
    """Pool reset: nothing to undo, since no call leaves session state behind.

    asyncpg rolls back an open transaction before calling this; its default reset query
    (``RESET ALL``, ``UNLISTEN *``, …) would cost a round trip on every release.
    """
