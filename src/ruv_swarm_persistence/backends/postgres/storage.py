"""``PostgresStorage``: the Storage API on PostgreSQL through an asyncpg pool.

How the semantics are kept (the conformance suite checks every one):

* Every write runs in one transaction (or, inside a caller's transaction, a savepoint, so a
  refused write leaves the transaction usable). Task writes requeue expired leases first, as
  the memory backend does, and every status change goes through :meth:`_transition`, built on
  :mod:`ruv_swarm_persistence.rules`; the claim is folded into one ``UPDATE … FOR UPDATE SKIP
  LOCKED`` statement that also refuses to run while a lease has expired (the caller then
  expires leases in a transaction and claims there).
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
  once; a write is retried only when it certainly did not commit (the connection died before
  ``COMMIT`` was sent, or the server rolled it back after a deadlock); a write whose commit is
  in doubt raises :class:`DatabaseError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, TypeVar, cast

import asyncpg

from ... import _json, codec, rules
from ..._time import from_us, now_us, to_us
from ...aggregate import MetricRow, aggregate, crate_aggregate, grouping_args, window_args
from ...codec import EventValues, Limits, Record
from ...errors import (
    ConflictError,
    DatabaseError,
    LeaseLostError,
    MigrationError,
    NotASwarmDatabaseError,
    NotFoundError,
    PoolError,
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
from .._gate import Deadline, GatedStorage, GatedTransaction
from ..sql_common import check_new_status, plan_cascade, plan_task_batch, row_record
from . import errors, sql
from .listener import Listener
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

__all__ = [
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
#: A pooled asyncpg connection (typed loosely: asyncpg's proxies mirror ``Connection``).
Conn = Any

PENDING, ASSIGNED, RUNNING = rules.PENDING, rules.ASSIGNED, rules.RUNNING
COMPLETED, FAILED, CANCELLED = rules.COMPLETED, rules.FAILED, rules.CANCELLED

#: First key of the two-key advisory lock that serializes migrations (the second is the
#: schema's CRC-32, so swarms in different schemas migrate independently).
MIGRATION_LOCK_KEY: Final = 0x53574D47
_DEADLOCK_RETRIES: Final = 5
#: Event batches at least this large are written with COPY rather than one INSERT.
COPY_ROWS: Final = 1000


def _copy_row(sequence: int, row: EventValues) -> tuple[Any, ...]:
    """An event's row for ``COPY``, in ``sql.EVENT_COPY_COLUMNS`` order."""
    id_, event_type, agent_id, task_id, payload, metadata, timestamp = row
    return (
        sequence,
        id_,
        event_type,
        agent_id,
        task_id,
        jsonb_text(payload),
        jsonb_text(metadata),
        timestamp,
    )


# --- JSON into jsonb ---------------------------------------------------------------------------

_POSITIVE_EXPONENT = re.compile(r"\d[eE]\+?\d")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?[eE][+-]?\d+')


def _plain_number(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"' or "-" in token.lower().partition("e")[2]:
        return token
    text = format(Decimal(token), "f")
    return text if "." in text else text + ".0"


def jsonb_text(text: str) -> str:
    """JSON text that comes back out of ``jsonb`` as the same values.

    ``jsonb`` stores numbers as ``numeric`` and prints them without exponent, so the float
    ``1e+16`` would come back as the integer ``10000000000000000``. Writing such floats as
    plain decimals with a fractional part (``10000000000000000.0``) keeps them floats.
    """
    if _POSITIVE_EXPONENT.search(text) is None:
        return text
    return _JSON_TOKEN.sub(_plain_number, text)


def _opt_jsonb(text: str | None) -> str | None:
    return None if text is None else jsonb_text(text)


# --- records ---------------------------------------------------------------------------------


def _task(row: Any) -> Record:
    return row_record(sql.TASK_COLS, row)


def _decode(table: str, columns: tuple[str, ...], row: Any) -> Any:
    return codec.decode(table, row_record(columns, row))


def _task_model(rec: Record) -> TaskModel:
    return cast(TaskModel, codec.decode("tasks", rec))


def _message(row: Any) -> MessageModel:
    return cast(MessageModel, _decode("messages", sql.MESSAGE_COLS, row))


#: The columns each statement binds, in parameter order.
_AGENT_ARGS: Final = sql.AGENT_COLS
_TASK_UPDATE_ARGS: Final = tuple(c for c in codec.COLUMNS["tasks"] if c != "dependencies")
_JSON_COLUMNS: Final = frozenset(
    {"capabilities", "metadata", "payload", "result", "dependencies", "content", "tags"}
)


def _args(columns: Sequence[str], r: Record) -> tuple[Any, ...]:
    """A record's values for ``columns``, JSON made safe for ``jsonb``."""
    return tuple(_opt_jsonb(r[c]) if c in _JSON_COLUMNS else r[c] for c in columns)


def _agent_args(r: Record) -> tuple[Any, ...]:
    return _args(_AGENT_ARGS, r)


def _task_update_args(r: Record) -> tuple[Any, ...]:
    return _args(_TASK_UPDATE_ARGS, r)


def _columns(recs: Sequence[Record], names: Sequence[str]) -> list[list[Any]]:
    return [[r[n] for r in recs] for n in names]


class _Keep(Exception):
    """Raised inside a write to commit what it did, then raise ``error`` to the caller.

    A late worker's ``complete_task`` first requeues the expired leases (its own included)
    and then learns it lost the task: the requeue stays, as on every backend.
    """

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(slots=True)
class _Effects:
    """What a write changed that waiters care about: notified at commit."""

    events: bool = False
    tasks: bool = False
    mail: set[str] = field(default_factory=set)

    def notes(self) -> list[str]:
        out = [f"m:{a}" for a in sorted(self.mail)]
        if self.events:
            out.append("e")
        if self.tasks:
            out.append("t")
        return out

    def merge(self, other: _Effects) -> None:
        self.events |= other.events
        self.tasks |= other.tasks
        self.mail |= other.mail


class PostgresStorage(GatedStorage["PostgresTransaction"]):
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
        self._dsn = dsn
        self.schema = schema
        self._connect_options = connect_options
        self.pool_options = pool_options
        self._now: Callable[[], int] = now_us if clock is None else (lambda: to_us(clock()))
        self._lease_us = codec.duration_arg(lease, "lease")
        self._policy = retry_policy or rules.RetryPolicy()
        self._limits = limits or codec.DEFAULT_LIMITS
        self._tx_timeout_us = codec.duration_arg(transaction_timeout, "transaction_timeout")
        self.channel = channel_for(schema)
        self.listener = Listener(self._listen_connection, self.channel)
        self._appender = _EventAppender(self)
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

    # --- migrations (MigrationTarget) ------------------------------------------------------

    def _migration_lock_args(self) -> tuple[int, int]:
        crc = zlib.crc32(self.schema.encode())
        return MIGRATION_LOCK_KEY, crc - (1 << 32) if crc >= 1 << 31 else crc

    async def _prepare_schema(self, conn: Conn) -> None:
        """Create the schema and ``schema_migrations`` under the migration lock, if missing."""
        if await conn.fetchval(sql.MIGRATIONS_TABLE_EXISTS):
            return
        await conn.execute(sql.MIGRATION_LOCK, *self._migration_lock_args())
        if not await conn.fetchval(sql.SCHEMA_EXISTS, self.schema):
            await conn.execute(sql.create_schema(self.schema))
        await conn.execute(sql.CREATE_MIGRATIONS_TABLE)

    async def _check_swarm_schema(self) -> None:
        """Refuse a schema this library did not make (a read-only storage cannot fix it)."""

        async def find(conn: Conn) -> tuple[bool, bool]:
            table = await conn.fetchval(sql.MIGRATIONS_TABLE_EXISTS)
            return bool(await conn.fetchval(sql.SCHEMA_EXISTS, self.schema)), bool(table)

        schema_exists, table_exists = await self._pooled_read(find)
        if not table_exists:
            raise NotASwarmDatabaseError(
                f"schema {self.schema!r} holds no swarm database", empty=not schema_exists
            )
        check_applied(await self.applied_migrations(), bundled_migrations(self.dialect))

    async def applied_migrations(self) -> list[AppliedMigration]:
        """Rows of ``schema_migrations`` by version (none before the table exists)."""

        async def run(conn: Conn) -> list[AppliedMigration]:
            if not await conn.fetchval(sql.MIGRATIONS_TABLE_EXISTS):
                return []
            rows = await conn.fetch(sql.APPLIED)
            return [AppliedMigration(r[0], r[1], r[2], from_us(r[3])) for r in rows]

        return await self._pooled_read(run)

    async def apply_migration(self, migration: Migration, recorded_name: str) -> bool:
        """Run one migration and record it, in one transaction under the migration lock."""

        async def run(conn: Conn) -> bool:
            async with conn.transaction():
                await self._prepare_schema(conn)
                await conn.execute(sql.MIGRATION_LOCK, *self._migration_lock_args())
                # Another process may have applied it while we waited for the lock.
                if await conn.fetchval(sql.IS_APPLIED, migration.version):
                    return False
                try:
                    await conn.execute(migration.up)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {migration.version} ({recorded_name}) failed: {exc}"
                    ) from exc
                await conn.execute(
                    sql.RECORD_MIGRATION,
                    migration.version,
                    recorded_name,
                    migration.checksum,
                    self._now(),
                )
            return True

        applied = await self._pooled_read(run)
        if applied:
            await self._pool.expire_connections()
        return applied

    async def revert_migration(self, migration: Migration, recorded_name: str) -> None:
        """Run ``migration.down`` and delete its record, in one transaction under the lock."""
        down = migration.down
        if down is None:
            raise MigrationError(f"migration {migration.version} ({recorded_name}) has no down SQL")

        async def run(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(sql.MIGRATION_LOCK, *self._migration_lock_args())
                try:
                    await conn.execute(down)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"rolling back migration {migration.version} ({recorded_name}) "
                        f"failed: {exc}"
                    ) from exc
                await conn.execute(sql.FORGET_MIGRATION, migration.version)

        await self._pooled_read(run)
        await self._pool.expire_connections()

    # --- the gate: closed storage, transactions owned by other tasks -----------------------

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
                and current._state == "active"
            ):
                return current
            self._check_timed_out(current)
            if self._tx is None:
                return None
            await self._wait_for_tx()

    # --- running statements ----------------------------------------------------------------

    async def _acquire(self) -> Conn:
        try:
            return await self._pool.acquire(timeout=self.pool_options.acquire_timeout)
        except TimeoutError as exc:
            raise PoolError(
                f"no PostgreSQL connection became free within "
                f"{self.pool_options.acquire_timeout} s (max_size={self.pool_options.max_size})"
            ) from exc

    async def _release(self, conn: Conn) -> None:
        """Give a connection back; one the pool already took back (it died) is let go."""
        try:
            await self._pool.release(conn)
        except asyncpg.InterfaceError as exc:
            log.debug("connection not released: %s", exc)

    async def _pooled_read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection; a lost connection is retried once."""
        retried = False
        while True:
            try:
                conn = await self._acquire()
                try:
                    return await fn(conn)
                except BaseException as exc:
                    _drop_if_broken(conn, exc)
                    raise
                finally:
                    await self._release(conn)
            except StorageError:
                raise
            except Exception as exc:
                if not retried and errors.connection_lost(exc):
                    retried = True
                    log.warning("read lost its connection (%s); retrying once", exc)
                    continue
                raise errors.translate(exc) from exc

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run a read: inside the caller's transaction if any, else on the pool."""
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return await tx._run(fn)
        return await self._pooled_read(fn)

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        return await self._read(lambda conn: conn.fetch(query, *args))

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        return await self._read(lambda conn: conn.fetchrow(query, *args))

    async def _write(self, fn: Callable[[Conn, _Effects], Awaitable[T]]) -> T:
        """Run a write in its own transaction (or a savepoint of the caller's).

        Retried when it certainly did not commit: the connection died before ``COMMIT`` was
        sent, or the server rolled it back (deadlock, serialization failure).
        """
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return await tx._run_write(fn)
        attempt = 0
        while True:
            fx = _Effects()
            committing = False
            deferred: StorageError | None = None
            result: Any = None
            try:
                conn = await self._acquire()
                try:
                    tr = conn.transaction()
                    await tr.start()
                    try:
                        try:
                            result = await fn(conn, fx)
                        except _Keep as keep:
                            deferred = keep.error
                        keys = fx.notes()
                        if keys:
                            await conn.execute(sql.NOTIFY, self.channel, keys)
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await tr.rollback()
                        raise
                    committing = True
                    await tr.commit()
                except BaseException as exc:
                    _drop_if_broken(conn, exc)
                    raise
                finally:
                    await self._release(conn)
            except StorageError:
                raise
            except Exception as exc:
                retryable = errors.rolled_back(exc) or (
                    attempt == 0 and errors.connection_lost(exc)
                )
                if not committing and attempt < _DEADLOCK_RETRIES and retryable:
                    attempt += 1
                    log.info("write retried after %s", type(exc).__name__)
                    await asyncio.sleep(0.001 * attempt)
                    continue
                if committing and errors.connection_lost(exc):
                    raise DatabaseError(
                        "lost the PostgreSQL connection while committing: the write may or "
                        "may not have been applied"
                    ) from exc
                raise errors.translate(exc) from exc
            self._after_commit(fx)
            if deferred is not None:
                raise deferred
            return result  # type: ignore[no-any-return]

    async def _statement(self, query: str, *args: Any) -> list[Any]:
        """One write statement: its own transaction, or a savepoint of the caller's."""
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return await tx._run_write(lambda conn, _fx: conn.fetch(query, *args))
        return list(await self._once(lambda conn: conn.fetch(query, *args)))

    async def _once(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run a self-committing statement on the pool (effects are notified by its SQL).

        Retried once when it was certainly not sent (connecting failed, or the connection
        was found broken before sending); once sent, a single statement is its own commit, so
        a lost connection leaves its outcome unknown.
        """
        retried = False
        while True:
            sent = False
            try:
                conn = await self._acquire()
                try:
                    sent = True
                    return await fn(conn)
                except BaseException as exc:
                    _drop_if_broken(conn, exc)
                    if errors.not_sent(exc):
                        sent = False
                    raise
                finally:
                    await self._release(conn)
            except StorageError:
                raise
            except Exception as exc:
                if not errors.connection_lost(exc):
                    raise errors.translate(exc) from exc
                if not sent and not retried:
                    retried = True
                    log.warning("connection unusable (%s); retrying once", exc)
                    continue
                if sent:
                    raise DatabaseError(
                        "lost the PostgreSQL connection during a write: it may or may not "
                        "have been applied"
                    ) from exc
                raise errors.translate(exc) from exc

    async def _statement_append(self, rows: Sequence[EventValues]) -> list[int]:
        return await self._once(lambda conn: self._append(conn, rows))

    def _after_commit(self, fx: _Effects) -> None:
        """Wake this process's waiters at once (other processes hear the NOTIFY)."""
        for key in fx.notes():
            self.listener.wake(key)

    # --- lifecycle ---------------------------------------------------------------------------

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
        for task in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        await self.listener.close()
        self._wake_tx_waiters()
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except (TimeoutError, Exception):
            self._pool.terminate()

    # --- agents ------------------------------------------------------------------------------

    async def store_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        await self._statement(sql.INSERT_AGENT, *_agent_args(rec))

    async def get_agent(self, agent_id: str) -> AgentModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        row = await self._fetchrow(sql.GET_AGENT, agent_id)
        return None if row is None else _decode("agents", sql.AGENT_COLS, row)

    async def update_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        if not await self._statement(sql.UPDATE_AGENT, *_agent_args(rec)):
            raise NotFoundError("agent", rec["id"])

    async def delete_agent(self, agent_id: str) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)

        async def run(conn: Conn, fx: _Effects) -> None:
            if await conn.fetchval(sql.DELETE_AGENT, agent_id) is None:
                return
            await conn.execute(sql.DELETE_MAILBOX, agent_id)
            now = self._now()
            for row in await conn.fetch(sql.TASKS_OF_AGENT_LOCKED, agent_id):
                # Re-read: releasing an earlier task may have cancelled this one.
                rec = _task(await conn.fetchrow(sql.GET_TASK, row[0]))
                if rec["status"] in rules.ACTIVE:
                    rec = await self._fail_attempt(
                        conn, rec, rules.released_error(agent_id), now, fx
                    )
                if rec["assigned_to"] is not None:
                    await conn.execute(
                        sql.UPDATE_TASK, *_task_update_args({**rec, "assigned_to": None})
                    )

        await self._write(run)

    async def list_agents(self) -> list[AgentModel]:
        rows = await self._fetch(sql.LIST_AGENTS)
        return [_decode("agents", sql.AGENT_COLS, r) for r in rows]

    async def list_agents_by_status(self, status: AgentStatus | str) -> list[AgentModel]:
        value = codec._enum(AgentStatus, status, "status").value
        rows = await self._fetch(sql.LIST_AGENTS_BY_STATUS, value)
        return [_decode("agents", sql.AGENT_COLS, r) for r in rows]

    async def heartbeat(self, agent_id: str, at: TimeArg | None = None) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        stamp = codec.opt_time_arg(at, "at")
        now = self._now()
        if not await self._statement(sql.HEARTBEAT, agent_id, now if stamp is None else stamp, now):
            raise NotFoundError("agent", agent_id)

    async def find_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        cutoff = codec.cutoff_arg(older_than, "older_than", self._now())
        rows = await self._fetch(sql.STALE_AGENTS, cutoff)
        return [_decode("agents", sql.AGENT_COLS, r) for r in rows]

    async def reap_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        now = self._now()
        cutoff = codec.cutoff_arg(older_than, "older_than", now)

        async def run(conn: Conn, fx: _Effects) -> list[AgentModel]:
            reaped = []
            for row in await conn.fetch(sql.LOCK_STALE_AGENTS, cutoff):
                rec = {**row_record(sql.AGENT_COLS, row), "status": "error", "updated_at": now}
                await conn.execute(sql.MARK_AGENT_ERROR, rec["id"], now)
                reaped.append(codec.decode("agents", rec))
                for t in await conn.fetch(sql.HELD_BY_AGENT_LOCKED, rec["id"]):
                    await self._fail_attempt(
                        conn, _task(t), rules.released_error(rec["id"]), now, fx
                    )
            return reaped

        return await self._write(run)

    # --- the transition routine ------------------------------------------------------------

    async def _transition(
        self, conn: Conn, old: Record, changes: dict[str, Any], now: int, fx: _Effects
    ) -> Record:
        """Every status change goes through here: legality, dependents, cascades."""
        new = {**old, **changes}
        check_new_status(old, new)
        await conn.execute(sql.UPDATE_TASK, *_task_update_args(new))
        old_status, new_status = old["status"], new["status"]
        if new_status == old_status:
            return new
        if new_status == PENDING and new["unfinished_deps"] == 0:
            fx.tasks = True
        if new_status == COMPLETED:
            if any(r[0] for r in await conn.fetch(sql.DEPENDENCY_COMPLETED, old["id"])):
                fx.tasks = True
        elif new_status in (FAILED, CANCELLED):
            await self._cascade(conn, new, now)
        return new

    async def _cascade(self, conn: Conn, root: Record, now: int) -> list[Record]:
        """Cancel, transitively, the unfinished dependents of a failed or cancelled task."""
        locked: dict[str, Record] = {}
        while True:
            # Lock first, then read the edges: a dependent added meanwhile shows up in the
            # next round, so none is left waiting on a cancelled task.
            rows = await conn.fetch(sql.CASCADE_CANDIDATES, root["id"], list(locked))
            if not rows:
                break
            for row in rows:
                rec = _task(row)
                locked[rec["id"]] = rec
        if not locked:
            return []
        dependents: dict[str, list[str]] = {}
        status: dict[str, str] = {}
        for depends_on, task_id, st in await conn.fetch(sql.DEPENDENTS_OF, [root["id"], *locked]):
            dependents.setdefault(depends_on, []).append(task_id)
            status[task_id] = st
        for tid, rec in locked.items():
            status[tid] = rec["status"]
        cancelled = plan_cascade(root["id"], root["status"], dependents, status, locked, now)
        if cancelled:
            await conn.executemany(sql.UPDATE_TASK, [_task_update_args(r) for r in cancelled])
        return cancelled

    async def _fail_attempt(
        self, conn: Conn, rec: Record, error: str, now: int, fx: _Effects
    ) -> Record:
        changes = rules.failure_changes(
            rec["retry_count"], rec["max_retries"], error, now, self._policy
        )
        return await self._transition(conn, rec, changes, now, fx)

    async def _expire_leases(self, conn: Conn, now: int, fx: _Effects) -> None:
        for row in await conn.fetch(sql.EXPIRED_LEASES, now):
            rec = _task(row)
            log.info("lease of task %s held by %s expired", rec["id"], rec["assigned_to"])
            await self._fail_attempt(conn, rec, rules.lease_error(rec["assigned_to"]), now, fx)

    def _check_held_args(self, task_id: str, agent_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)

    async def _held(
        self, conn: Conn, task_id: str, agent_id: str, now: int, fx: _Effects
    ) -> Record:
        """The task, locked, if ``agent_id`` holds it (expired leases requeued first)."""
        row = await conn.fetchrow(sql.LOCK_HELD_TASK, task_id, now)
        if row is None or row[-1]:
            await self._expire_leases(conn, now, fx)
            row = await conn.fetchrow(sql.LOCK_TASK, task_id)
            if row is None:
                raise _Keep(NotFoundError("task", task_id))
            rec = _task(row)
        else:
            rec = _task(tuple(row)[:-1])
        if rec["status"] not in rules.ACTIVE or rec["assigned_to"] != agent_id:
            raise _Keep(LeaseLostError(task_id, agent_id, f"task is {rec['status']}"))
        return rec

    # --- tasks -------------------------------------------------------------------------------

    async def store_task(self, task: TaskModel) -> None:
        await self.store_tasks([task])

    async def store_tasks(self, tasks: Sequence[TaskModel]) -> None:
        recs = codec.encode_batch(tasks, codec.encode_task, "tasks", self._limits)
        if not recs:
            return
        ids = [r["id"] for r in recs]
        in_batch = set(ids)
        dep_ids = sorted(
            {d for r in recs for d in _json.loads(r["dependencies"]) if d not in in_batch}
        )

        async def run(conn: Conn, fx: _Effects) -> None:
            stored = [r[0] for r in await conn.fetch(sql.EXISTING_TASK_IDS, ids)]
            status: dict[str, str] = {}
            if dep_ids:
                status = {r[0]: r[1] for r in await conn.fetch(sql.DEPENDENCY_STATUS, dep_ids)}
            planned = plan_task_batch(recs, stored, status, self._now())
            rows = [p.record for p in planned]
            cols = _columns(rows, codec.COLUMNS["tasks"])
            cols[5] = [jsonb_text(v) for v in cols[5]]  # payload
            cols[6] = [_opt_jsonb(v) for v in cols[6]]  # result
            cols[10] = [jsonb_text(v) for v in cols[10]]  # dependencies
            await conn.execute(sql.INSERT_TASKS, *cols, [p.unfinished for p in planned])
            edges = [(d, p.record["id"]) for p in planned for d in p.dependencies]
            if edges:
                await conn.execute(sql.INSERT_EDGES, [e[0] for e in edges], [e[1] for e in edges])
            if any(p.unfinished == 0 and p.record["status"] == PENDING for p in planned):
                fx.tasks = True

        await self._write(run)

    async def get_task(self, task_id: str) -> TaskModel | None:
        codec.check_id(task_id, "task_id", self._limits)
        row = await self._fetchrow(sql.GET_TASK, task_id)
        return None if row is None else codec.decode("tasks", _task(row))

    async def update_task(self, task: TaskModel) -> None:
        rec = codec.encode_task(task, self._limits)

        async def run(conn: Conn, fx: _Effects) -> None:
            row = await conn.fetchrow(sql.LOCK_TASK, rec["id"])
            if row is None:
                raise NotFoundError("task", rec["id"])
            old = _task(row)
            changes = rules.update_changes(old, rec)
            await self._transition(conn, old, changes, self._now(), fx)

        await self._write(run)

    async def delete_task(self, task_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)

        async def run(conn: Conn, fx: _Effects) -> None:
            if await conn.fetchval(sql.HAS_DEPENDENTS, task_id):
                raise ConflictError("task", task_id, "has dependent tasks and cannot be deleted")
            await conn.execute(sql.DELETE_TASK, task_id)

        await self._write(run)

    async def get_pending_tasks(self) -> list[TaskModel]:
        rows = await self._fetch(sql.PENDING_TASKS)
        return [codec.decode("tasks", _task(r)) for r in rows]

    async def get_ready_tasks(self, limit: int | None = None) -> list[TaskModel]:
        n = None if limit is None else codec.limit_arg(limit)
        rows = await self._fetch(sql.READY_TASKS, self._now(), n)
        return [codec.decode("tasks", _task(r)) for r in rows]

    async def get_tasks_by_agent(self, agent_id: str) -> list[TaskModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        rows = await self._fetch(sql.TASKS_BY_AGENT, agent_id)
        return [codec.decode("tasks", _task(r)) for r in rows]

    def _lease(self, lease: Duration | None) -> int:
        return self._lease_us if lease is None else codec.duration_arg(lease, "lease")

    async def _in_transaction(self) -> bool:
        return (await self._gate() if self._blocked else None) is not None

    async def claim_task(self, task_id: str, agent_id: str, lease: Duration | None = None) -> bool:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)
        lease_us = self._lease(lease)
        now = self._now()
        c = rules.claim_changes(agent_id, now, lease_us)
        claim = (now, c["status"], c["assigned_to"], c["lease_expires_at"], task_id)
        if not await self._in_transaction():
            row = (await self._statement(sql.CLAIM_ONE_FAST, *claim))[0]
            if not row[0]:
                return bool(row[1])

        async def run(conn: Conn, fx: _Effects) -> bool:
            await self._expire_leases(conn, now, fx)
            return await conn.fetchval(sql.CLAIM_ONE, *claim) is not None

        return await self._write(run)

    async def claim_next_task(
        self,
        agent_id: str,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> TaskModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        types = codec.types_arg(task_types)
        lease_us = self._lease(lease)
        now = self._now()
        c = rules.claim_changes(agent_id, now, lease_us)
        claim = (now, c["status"], c["assigned_to"], c["lease_expires_at"], types)
        if not await self._in_transaction():
            row = (await self._statement(sql.CLAIM_NEXT_FAST, *claim))[0]
            if not row[0]:
                return None if row[1] is None else codec.decode("tasks", _task(tuple(row)[1:]))

        async def run(conn: Conn, fx: _Effects) -> TaskModel | None:
            await self._expire_leases(conn, now, fx)
            got = await conn.fetchrow(sql.CLAIM_NEXT, *claim)
            return None if got is None else codec.decode("tasks", _task(got))

        return await self._write(run)

    async def start_task(self, task_id: str, agent_id: str) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        now = self._now()

        async def run(conn: Conn, fx: _Effects) -> Record:
            rec = await self._held(conn, task_id, agent_id, now, fx)
            return await self._transition(conn, rec, rules.start_changes(now), now, fx)

        return _task_model(await self._write(run))

    async def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        encoded = None if result is None else codec._json_field(result, "result", self._limits)
        now = self._now()
        if not await self._in_transaction():
            c = rules.complete_changes(encoded, now)
            row = (
                await self._statement(
                    sql.COMPLETE_FAST,
                    now,
                    task_id,
                    agent_id,
                    c["status"],
                    _opt_jsonb(c["result"]),
                    c["completed_at"],
                    c["lease_expires_at"],
                    c["updated_at"],
                    self.channel,
                )
            )[0]
            if not row[0] and row[2] is not None:
                if row[1]:
                    self.listener.wake("t")
                return _task_model(_task(tuple(row)[2:]))
            # A lease ran out somewhere, or the task is not held as asked: the full path
            # requeues expired leases and says what went wrong.

        async def run(conn: Conn, fx: _Effects) -> Record:
            rec = await self._held(conn, task_id, agent_id, now, fx)
            changes = rules.complete_changes(encoded, now)
            return await self._transition(conn, rec, changes, now, fx)

        return _task_model(await self._write(run))

    async def fail_task(self, task_id: str, agent_id: str, error: str) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        codec.check_text(error, "error", self._limits, empty_ok=True)
        now = self._now()

        async def run(conn: Conn, fx: _Effects) -> Record:
            rec = await self._held(conn, task_id, agent_id, now, fx)
            return await self._fail_attempt(conn, rec, error, now, fx)

        return _task_model(await self._write(run))

    async def cancel_task(self, task_id: str, reason: str | None = None) -> list[str]:
        codec.check_id(task_id, "task_id", self._limits)
        if reason is not None:
            codec.check_text(reason, "reason", self._limits, empty_ok=True)
        now = self._now()

        async def run(conn: Conn, fx: _Effects) -> list[str]:
            await self._expire_leases(conn, now, fx)
            row = await conn.fetchrow(sql.LOCK_TASK, task_id)
            if row is None:
                raise _Keep(NotFoundError("task", task_id))
            rec = _task(row)
            if rec["status"] == CANCELLED:
                return []
            new = {**rec, **rules.cancel_changes(reason, now)}
            check_new_status(rec, new)
            await conn.execute(sql.UPDATE_TASK, *_task_update_args(new))
            cancelled = [new, *await self._cascade(conn, new, now)]
            cancelled.sort(key=lambda r: r["stored_order"])
            return [r["id"] for r in cancelled]

        return await self._write(run)

    async def heartbeat_task(
        self, task_id: str, agent_id: str, lease: Duration | None = None
    ) -> TaskModel:
        self._check_held_args(task_id, agent_id)
        lease_us = self._lease(lease)
        now = self._now()

        async def run(conn: Conn, fx: _Effects) -> Record:
            rec = await self._held(conn, task_id, agent_id, now, fx)
            changes = {"lease_expires_at": now + lease_us, "updated_at": now}
            return await self._transition(conn, rec, changes, now, fx)

        return _task_model(await self._write(run))

    async def wait_for_tasks(
        self, timeout: Duration | None = None, task_types: Sequence[str] | None = None
    ) -> bool:
        """Wait until a task is ready to claim (of these types); ``False`` after ``timeout``.

        Woken across processes when a task is stored, a dependency completes or a task is
        requeued; a task waiting out a retry backoff is noticed when its time comes.
        """
        types = codec.types_arg(task_types)
        deadline = Deadline(timeout)
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

    async def _append(self, conn: Conn, rows: Sequence[EventValues]) -> list[int]:
        """Append events on ``conn``; returns their sequences.

        Up to ``COPY_ROWS`` events go in one statement (one round trip); larger batches take
        their sequences, then ``COPY`` the rows, in one transaction.
        """
        if len(rows) >= COPY_ROWS:
            return await self._append_copy(conn, rows)
        ids, types, agents, tasks, payloads, metadata, stamps = zip(*rows, strict=True)
        last = await conn.fetchval(
            sql.APPEND_EVENTS,
            ids,
            types,
            agents,
            tasks,
            [jsonb_text(p) for p in payloads],
            [jsonb_text(m) for m in metadata],
            stamps,
            self.channel,
        )
        first = int(last) - len(rows) + 1
        return list(range(first, first + len(rows)))

    async def _append_copy(self, conn: Conn, rows: Sequence[EventValues]) -> list[int]:
        n = len(rows)
        async with conn.transaction():
            last = int(await conn.fetchval(sql.TAKE_SEQUENCES, n))
            first = last - n + 1
            records = [_copy_row(first + i, row) for i, row in enumerate(rows)]
            await conn.copy_records_to_table(
                "events", records=records, columns=sql.EVENT_COPY_COLUMNS
            )
            await conn.execute(sql.NOTIFY, self.channel, ["e"])
        return list(range(first, last + 1))

    async def store_event(self, event: EventModel) -> int:
        return (await self.store_events([event]))[0]

    async def _stream_events(self, events: Sequence[EventModel]) -> list[int]:
        """A large batch on its own: validated while COPY streams it, in one transaction.

        The rows reach the server while the next ones are checked; any refusal aborts the
        COPY and rolls everything back, so a bad batch still writes nothing. A refused id
        (``ConflictError``) is reported only after every event passed validation, the same
        order of errors as :func:`codec.encode_batch` followed by the id checks.
        """
        n = len(events)
        limits = self._limits

        async def run(conn: Conn) -> list[int]:
            async with conn.transaction():
                last = int(await conn.fetchval(sql.TAKE_SEQUENCES, n))
                first = last - n + 1

                async def rows() -> AsyncIterator[tuple[Any, ...]]:
                    seen: set[str] = set()
                    duplicate: str | None = None
                    for i, ev in enumerate(events):
                        row = codec.event_values(ev, limits)
                        if row[0] in seen and duplicate is None:
                            duplicate = row[0]
                        seen.add(row[0])
                        yield _copy_row(first + i, row)
                    if duplicate is not None:
                        raise ConflictError("event", duplicate)

                await conn.copy_records_to_table(
                    "events", records=rows(), columns=sql.EVENT_COPY_COLUMNS
                )
                await conn.execute(sql.NOTIFY, self.channel, ["e"])
            return list(range(first, last + 1))

        seqs = await self._once(run)
        self.listener.wake("e")
        return seqs

    async def store_events(self, events: Sequence[EventModel]) -> list[int]:
        if (
            not self._blocked
            and isinstance(events, Sequence)
            and not isinstance(events, (str, bytes))
            and len(events) >= COPY_ROWS
        ):
            seqs = await self._stream_events(events)
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

            async def run(conn: Conn, fx: _Effects) -> list[int]:
                fx.events = True
                return await self._append(conn, rows)

            seqs = await tx._run_write(run)
        else:
            seqs = await self._appender.append(rows)
        for ev, seq in zip(events, seqs, strict=True):
            ev.sequence = seq
        return seqs

    async def get_events_by_agent(self, agent_id: str, limit: int = 100) -> list[EventModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        n = codec.limit_arg(limit)
        rows = await self._fetch(sql.EVENTS_BY_AGENT, agent_id, n)
        return [_decode("events", sql.EVENT_COLS, r) for r in rows]

    async def get_events_by_type(self, event_type: str, limit: int = 100) -> list[EventModel]:
        codec.check_text(event_type, "event_type", self._limits)
        n = codec.limit_arg(limit)
        rows = await self._fetch(sql.EVENTS_BY_TYPE, event_type, n)
        return [_decode("events", sql.EVENT_COLS, r) for r in rows]

    async def get_events_since(self, since: TimeArg) -> list[EventModel]:
        t = codec.time_arg(since, "since")
        rows = await self._fetch(sql.EVENTS_SINCE, t)
        return [_decode("events", sql.EVENT_COLS, r) for r in rows]

    async def read_events(self, after_sequence: int = 0, limit: int = 1000) -> list[EventModel]:
        after = codec.limit_arg(after_sequence, "after_sequence")
        n = codec.limit_arg(limit)
        rows = await self._fetch(sql.READ_EVENTS, after, n)
        return [_decode("events", sql.EVENT_COLS, r) for r in rows]

    async def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[EventModel]:
        last = codec.limit_arg(after_sequence, "after_sequence")
        types = None if event_types is None else frozenset(codec.types_arg(event_types) or ())
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
        args = [rec[c] for c in sql.MESSAGE_COLS]
        args[4] = jsonb_text(args[4])
        tx = await self._gate() if self._blocked else None
        await self._statement(sql.STORE_MESSAGE, *args, self.channel)
        if tx is None:
            self.listener.wake(f"m:{rec['to_agent']}")
        else:
            tx._fx.mail.add(rec["to_agent"])

    async def get_message(self, message_id: str) -> MessageModel | None:
        codec.check_id(message_id, "message_id", self._limits)
        row = await self._fetchrow(sql.GET_MESSAGE, message_id)
        return None if row is None else _decode("messages", sql.MESSAGE_COLS, row)

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
        return [_decode("messages", sql.MESSAGE_COLS, r) for r in rows]

    async def get_unread_messages(self, agent_id: str) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        rows = await self._fetch(sql.UNREAD_MESSAGES, agent_id)
        return [_decode("messages", sql.MESSAGE_COLS, r) for r in rows]

    async def mark_message_read(self, message_id: str) -> MessageModel:
        codec.check_id(message_id, "message_id", self._limits)
        rows = await self._statement(sql.MARK_READ, message_id, self._now())
        if rows:
            return _message(rows[0])
        row = await self._fetchrow(sql.GET_MESSAGE, message_id)
        if row is None:
            raise NotFoundError("message", message_id)
        return _message(row)

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
        cols = _columns(recs, sql.METRIC_COLS)
        cols[5] = [jsonb_text(v) for v in cols[5]]
        await self._statement(sql.INSERT_METRICS, *cols)

    async def get_metrics_by_agent(
        self, agent_id: str, metric_type: str | None = None
    ) -> list[MetricModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        if metric_type is not None:
            codec.check_text(metric_type, "metric_type", self._limits)
        rows = await self._fetch(sql.METRICS_BY_AGENT, agent_id, metric_type)
        return [_decode("metrics", sql.METRIC_COLS, r) for r in rows]

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
            tx._state = "failed"
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
        return [_decode(table, columns, r) for r in rows]

    async def vacuum(self) -> None:
        """``VACUUM ANALYZE`` the swarm's tables (only ``ANALYZE`` inside a transaction)."""
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            await tx._run(lambda conn: conn.execute(sql.ANALYZE))
            return
        await self._pooled_read(lambda conn: conn.execute(sql.VACUUM))

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
        await self._pooled_read(run)

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

        async def run(conn: Conn, fx: _Effects) -> PruneResult:
            result = PruneResult()
            if ev_t is not None:
                result.events = int(await conn.fetchval(sql.PRUNE_EVENTS, ev_t))
            if me_t is not None:
                result.metrics = int(await conn.fetchval(sql.PRUNE_METRICS, me_t))
            if ms_t is not None:
                result.messages = int(await conn.fetchval(sql.PRUNE_MESSAGES, ms_t))
            return result

        return await self._write(run)


async def _keep_session(conn: Any) -> None:
    """Pool reset: nothing to undo, since no call leaves session state behind.

    asyncpg rolls back an open transaction before calling this; its default reset query
    (``RESET ALL``, ``UNLISTEN *``, …) would cost a round trip on every release.
    """


def _drop_if_broken(conn: Conn, exc: BaseException) -> None:
    """Close a connection a failure left unusable, so the pool replaces it."""
    if errors.connection_lost(exc):
        with contextlib.suppress(Exception):
            conn.terminate()


def _alive(conn: Conn) -> bool:
    """False once a pooled connection died (the pool then detaches it from its proxy)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


class PostgresTransaction(GatedTransaction):
    """A transaction of :class:`PostgresStorage`: one connection, held until it ends."""

    def __init__(self, storage: PostgresStorage, timeout_s: float) -> None:
        super().__init__(storage, state="starting")
        self._pg = storage
        self._timeout_s = timeout_s
        self._conn: Conn = None
        self._tr: Any = None
        self._lock = asyncio.Lock()
        self._fx = _Effects()
        self._timer: asyncio.TimerHandle | None = None

    async def _start(self) -> None:
        pg = self._pg
        for attempt in (0, 1):
            conn = await pg._acquire()
            try:
                tr = conn.transaction()
                await tr.start()
            except Exception as exc:
                await pg._release(conn)
                if attempt == 0 and errors.connection_lost(exc):
                    continue
                raise errors.translate(exc) from exc
            self._conn, self._tr = conn, tr
            break
        self._state = "active"
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._timed_out)

    async def _run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._lock:
            self.check_active()
            try:
                result = await fn(self._conn)
            except StorageError:
                raise
            except Exception as exc:
                raise errors.translate(exc) from exc
            self.check_active()
            return result

    async def _run_write(self, fn: Callable[[Conn, _Effects], Awaitable[T]]) -> T:
        """Run a write in a savepoint, so a refused write leaves the transaction usable."""
        async with self._lock:
            self.check_active()
            fx = _Effects()
            deferred: StorageError | None = None
            result: Any = None
            try:
                sp = self._conn.transaction()
                await sp.start()
                try:
                    try:
                        result = await fn(self._conn, fx)
                    except _Keep as keep:
                        deferred = keep.error
                    keys = fx.notes()
                    if keys:
                        await self._conn.execute(sql.NOTIFY, self._pg.channel, keys)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await sp.rollback()
                    raise
                await sp.commit()
            except StorageError:
                raise
            except Exception as exc:
                raise errors.translate(exc) from exc
            self.check_active()
            self._fx.merge(fx)
            if deferred is not None:
                raise deferred
            return result  # type: ignore[no-any-return]

    def _timed_out(self) -> None:
        if self._state == "active":
            log.warning("transaction open past its timeout; rolled back")
            self._state = "timed_out"
            self._pg._orphaned += 1
            self._pg._release_tx(self)
            task = asyncio.get_running_loop().create_task(self._discard())
            self._pg._background.add(task)
            task.add_done_callback(self._pg._background.discard)

    async def _discard(self) -> None:
        """Roll back on the server and give the connection back."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                await self._tr.rollback()
            except Exception as exc:
                log.warning("rollback failed (%s); dropping the connection", exc)
                with contextlib.suppress(Exception):
                    conn.terminate()
            finally:
                await self._pg._release(conn)

    async def _abort(self, why: str) -> None:
        """Roll back at once (the storage is closing)."""
        if self._state == "active":
            if self._timer is not None:
                self._timer.cancel()
            self._state = "rolled back"
            await self._discard()
            self._pg._release_tx(self)
            log.warning("transaction rolled back: %s", why)

    async def commit(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        async with self._lock:
            self._acknowledge_timeout()
            self.check_active()
            if self._timer is not None:
                self._timer.cancel()
            self._state = "committing"
            conn, self._conn = self._conn, None
            sent = _alive(conn)
            try:
                await self._tr.commit()
            except Exception as exc:
                self._state = "failed"
                with contextlib.suppress(Exception):
                    await self._tr.rollback()
                await self._pg._release(conn)
                self._finish()
                if not sent:
                    raise DatabaseError(
                        "the transaction's PostgreSQL connection was lost before COMMIT; "
                        "nothing was applied"
                    ) from exc
                if errors.connection_lost(exc):
                    raise DatabaseError(
                        "lost the PostgreSQL connection while committing: the transaction "
                        "may or may not have been applied"
                    ) from exc
                raise errors.translate(exc) from exc
            self._state = "committed"
            await self._pg._release(conn)
        self._finish()
        self._pg._after_commit(self._fx)

    async def rollback(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        if self._timer is not None:
            self._timer.cancel()
        self._state = "rolled back"
        await self._discard()
        self._finish()

    def _finish(self) -> None:
        if ACTIVE_TRANSACTION.get() is self:
            ACTIVE_TRANSACTION.set(None)
        self._pg._release_tx(self)


class _EventAppender:
    """Group commit for ``store_event``: concurrent appends of this process share a statement.

    Appends are serialized by the counter row anyway, so one statement in flight per process
    costs nothing and turns N round trips and commits into one. Each caller is resolved only
    after its statement committed; a conflict (an event id already stored) fails only the
    caller it belongs to.
    """

    MAX_ROWS: Final = 2000

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._pending: list[tuple[list[EventValues], asyncio.Future[list[int]]]] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, rows: list[EventValues]) -> list[int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[int]] = loop.create_future()
        self._pending.append((rows, fut))
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await fut

    async def drain(self) -> None:
        """Wait until every pending append is resolved."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._pending:
                groups: list[tuple[list[EventValues], asyncio.Future[list[int]]]] = []
                rows = 0
                while self._pending and (
                    not groups or rows + len(self._pending[0][0]) <= self.MAX_ROWS
                ):
                    group = self._pending.pop(0)
                    groups.append(group)
                    rows += len(group[0])
                await self._flush(groups)
        finally:
            self._task = None

    async def _flush(
        self, groups: list[tuple[list[EventValues], asyncio.Future[list[int]]]]
    ) -> None:
        storage = self._storage
        rows = [r for g, _ in groups for r in g]
        try:
            seqs = await storage._statement_append(rows)
        except ConflictError as exc:
            if len(groups) == 1:
                _resolve_error(groups[0][1], exc)
                return
            for one in groups:  # find whose event conflicts; the others go through
                await self._flush([one])
            return
        except BaseException as exc:
            for _, fut in groups:
                _resolve_error(fut, exc)
            if not isinstance(exc, Exception):
                raise
            return
        i = 0
        for group, fut in groups:
            if not fut.done():
                fut.set_result(seqs[i : i + len(group)])
            i += len(group)
        storage.listener.wake("e")


def _resolve_error(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        if isinstance(exc, Exception):
            fut.set_exception(exc)
        else:
            fut.cancel()
