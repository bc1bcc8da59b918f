"""``SqliteStorage``: the embedded default backend, on ``apsw``.

One writer connection commits every coroutine's writes in batches (:mod:`.writer`); reads
use a pool of read connections (:mod:`.readers`); the SQL lives in :mod:`.sql` and what each
write does in :mod:`.ops`. The file is in WAL mode, so readers never wait for the writer and
several processes can share it: writes take the lock with ``BEGIN IMMEDIATE`` and wait for
each other up to the busy timeout.

Semantics are the memory backend's, checked by the same conformance suite. As there, a
transaction owns the storage until it ends: other tasks' calls (reads too) wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, TypeVar

import apsw

from ... import codec, rules
from ..._time import from_us, now_us, to_us
from ...aggregate import (
    MetricRow,
    aggregate,
    crate_metric,
    crate_order,
    grouping_args,
    window_args,
)
from ...codec import EventValues, Limits
from ...errors import (
    DatabaseError,
    MigrationError,
    NotASwarmDatabaseError,
    StorageError,
    TransactionError,
    ValidationError,
)
from ...migrations import (
    AppliedMigration,
    Migration,
    MigrationRunner,
    bundled_migrations,
    check_applied,
)
from ...models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
)
from ...query import QueryBuilder
from ...storage import (
    ACTIVE_TRANSACTION,
    Duration,
    MetricAggregate,
    PruneResult,
    TimeArg,
    Transaction,
)
from .._gate import GatedStorage, GatedTransaction
from .._wake import EVENTS, TASKS, Deadline, Wakeups, mail
from . import sql
from .errors import decode_row, translate
from .ops import METRIC_VALUES, SqliteOps, scalar
from .readers import NOT_RUN, NotRun, ReaderPool, SqliteStorageBuilder
from .writer import Checkpointer, GroupCommitWriter, WriteContext

__all__ = ["SqliteStorage", "SqliteTransaction"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a waiting subscriber, mail or task waiter looks for other processes' commits.
WATCH_INTERVAL_S: Final = 0.05
#: Reads expected to return at most this many rows run in the loop, without a thread hop.
INLINE_ROWS: Final = 100
#: Operations writing more rows than this run on the writer's thread, off the loop.
HEAVY_ROWS: Final = 1000
#: Events validated per hand-over when a large batch is streamed to the writer's thread.
STREAM_CHUNK: Final = 1000
#: Rows a subscriber reads per step (in the loop).
SUBSCRIBE_PAGE: Final = 100

_SYNCHRONOUS: Final = {"normal": "NORMAL", "full": "FULL"}
_OPTION_NAMES: Final = frozenset(
    {
        "readers", "min_idle_readers", "connection_timeout", "idle_timeout", "synchronous",
        "busy_timeout", "max_batch", "lease", "clock", "retry_policy", "limits",
        "transaction_timeout", "migrate", "read_only",
    }
)  # fmt: skip


class _Options:
    """Every option of :meth:`SqliteStorage.open`, checked; URL strings are parsed."""

    __slots__ = (
        "busy_timeout_ms",
        "clock",
        "connection_timeout_s",
        "idle_timeout_s",
        "lease_us",
        "limits",
        "max_batch",
        "migrate",
        "min_idle_readers",
        "read_only",
        "readers",
        "retry_policy",
        "synchronous",
        "transaction_timeout_us",
    )

    def __init__(self, options: dict[str, Any]) -> None:
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise ValidationError(
                f"unknown option(s) {', '.join(sorted(unknown))}; known: "
                + ", ".join(sorted(_OPTION_NAMES)),
                field="options",
            )
        o = options
        self.readers = _int(o.get("readers", 4), "readers", minimum=1)
        self.min_idle_readers = _int(o.get("min_idle_readers", 1), "min_idle_readers", minimum=0)
        self.connection_timeout_s = _seconds(o.get("connection_timeout", 30), "connection_timeout")
        idle = o.get("idle_timeout", 600)
        self.idle_timeout_s = None if idle is None else _seconds(idle, "idle_timeout")
        sync = o.get("synchronous", "normal")
        if not isinstance(sync, str) or sync.lower() not in _SYNCHRONOUS:
            raise ValidationError(f"{sync!r} is not 'normal' or 'full'", field="synchronous")
        self.synchronous = _SYNCHRONOUS[sync.lower()]
        self.busy_timeout_ms = _int(o.get("busy_timeout", 5000), "busy_timeout", minimum=0)
        self.max_batch = _int(o.get("max_batch", 512), "max_batch", minimum=1)
        self.read_only = _flag(o.get("read_only", False), "read_only")
        # A read-only storage never migrates: migrating writes.
        self.migrate = _flag(o.get("migrate", True), "migrate") and not self.read_only
        self.lease_us = codec.duration_arg(_number(o.get("lease", 30), "lease"), "lease")
        self.transaction_timeout_us = codec.duration_arg(
            _number(o.get("transaction_timeout", 30), "transaction_timeout"),
            "transaction_timeout",
        )
        clock = o.get("clock")
        if clock is not None and not callable(clock):
            raise ValidationError("must be a callable returning a datetime", field="clock")
        self.clock: Callable[[], datetime] | None = clock
        policy = o.get("retry_policy")
        policy = rules.RetryPolicy() if policy is None else policy
        if not isinstance(policy, rules.RetryPolicy):
            raise ValidationError("must be a RetryPolicy", field="retry_policy")
        self.retry_policy = policy
        limits = o.get("limits")
        limits = codec.DEFAULT_LIMITS if limits is None else limits
        if not isinstance(limits, Limits):
            raise ValidationError("must be a Limits", field="limits")
        self.limits = limits


def _number(value: Any, field: str) -> Any:
    """A URL option's text as a number (other values pass through to their own check)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not a number", field=field) from None
    return value


_FLAGS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _flag(value: Any, field: str) -> bool:
    """A boolean option; URL text ``true``/``false`` (also ``1``/``0``, ``yes``/``no``)."""
    if isinstance(value, str) and value.lower() in _FLAGS:
        return _FLAGS[value.lower()]
    if not isinstance(value, bool):
        raise ValidationError(f"{value!r} is not true or false", field=field)
    return value


def _int(value: Any, field: str, *, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not an integer", field=field) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"must be an integer of at least {minimum}", field=field)
    return value


def _seconds(value: Any, field: str) -> float:
    return codec.duration_arg(_number(value, field), field) / 1e6


_SQLITE_HEADER: Final = b"SQLite format 3\x00"


def _check_database_file(path: str) -> None:
    """Refuse, before SQLite touches it, a file a read-only storage cannot be opened on."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        raise DatabaseError(f"no database at {path}") from None
    except IsADirectoryError:
        raise DatabaseError(f"{path} is a directory, not a database") from None
    except OSError as exc:
        raise DatabaseError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not head:
        raise NotASwarmDatabaseError(f"{path} is an empty file, not a swarm database", empty=True)
    if head != _SQLITE_HEADER:
        raise NotASwarmDatabaseError(f"{path} is not a SQLite database", empty=False)


def _open_existing(path: str, cache: int) -> apsw.Connection:
    """A connection to an existing file that will only read.

    Read-write without create, so that closing the last connection tidies the WAL files
    as SQLite does; ``query_only`` then refuses every write. A file the process may not
    write is opened read-only instead.
    """
    try:
        return apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE, statementcachesize=cache)
    except (apsw.CantOpenError, apsw.ReadOnlyError, apsw.PermissionsError):
        return apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY, statementcachesize=cache)


def _models(table: str, columns: tuple[str, ...], rows: Any) -> list[Any]:
    return [decode_row(table, columns, row) for row in rows]


def _one(conn: apsw.Connection, statement: str, params: Any, table: str) -> Any:
    row = conn.execute(statement, params).fetchone()
    return None if row is None else decode_row(table, codec.COLUMNS[table], row)


def _all(conn: apsw.Connection, statement: str, params: Any, table: str) -> list[Any]:
    return _models(table, codec.COLUMNS[table], conn.execute(statement, params))


class _Opening:
    """What :meth:`SqliteStorage.open` returns: await it, or use it with ``async with``."""

    __slots__ = ("_options", "_path", "_storage")

    def __init__(self, path: str | os.PathLike[str], options: dict[str, Any]) -> None:
        self._path = path
        self._options = options
        self._storage: SqliteStorage | None = None

    async def _open(self) -> SqliteStorage:
        storage = SqliteStorage(self._path, **self._options)
        await storage._start()
        return storage

    def __await__(self) -> Generator[Any, None, SqliteStorage]:
        return self._open().__await__()

    async def __aenter__(self) -> SqliteStorage:
        self._storage = await self._open()
        return self._storage

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._storage is not None:
            await self._storage.close()


class SqliteStorage(GatedStorage["SqliteTransaction"]):
    """A swarm's storage in one SQLite file, shareable by several processes.

    Open with ``await SqliteStorage.open("swarm.db", **options)`` (or ``async with
    SqliteStorage.open(...) as storage``, or ``init_storage("sqlite:///swarm.db")``); a new
    file is created and migrated. Options (keyword arguments, or URL query parameters):

    * ``readers`` — most read connections (4); ``min_idle_readers`` kept open (1);
      ``connection_timeout`` — seconds a read waits for a connection before ``PoolError``
      (30); ``idle_timeout`` — seconds before an idle extra connection closes (600).
    * ``synchronous`` — ``"normal"`` (default: a commit survives a process crash) or
      ``"full"`` (also an OS crash or power loss).
    * ``busy_timeout`` — milliseconds to wait for another process's write lock (5000).
    * ``max_batch`` — most operations committed in one transaction (512).
    * ``migrate`` — ``False`` opens without applying the library's migrations (True).
    * ``read_only`` — open an existing swarm database only to read it (False): nothing is
      created, migrated or written, the journal mode is left as found, and a file that is
      empty, not SQLite or not a swarm database is refused with a ``DatabaseError``; a
      write raises ``DatabaseError``.
    * the standard options: ``clock``, ``lease`` (30 s), ``retry_policy``, ``limits``,
      ``transaction_timeout`` (30 s).
    """

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        text = os.fspath(path)
        if not isinstance(text, str) or not text or text == ":memory:" or text.startswith("file:"):
            raise ValidationError(
                "needs a file path (use memory:// for a storage in memory)", field="path"
            )
        self.path = text
        self._opts = opts = _Options(dict(options))
        clock = opts.clock
        self._now: Callable[[], int] = now_us if clock is None else (lambda: to_us(clock()))
        self._limits = opts.limits
        self._lease_us = opts.lease_us
        self._ops = SqliteOps(self._now, opts.retry_policy)
        # Bound once: the writer coalesces consecutive rows of the same bulk (by identity).
        self._event_rows = self._ops.event_rows
        self._metric_rows = self._ops.metric_rows
        self._writer: GroupCommitWriter | None = None
        self._pool: ReaderPool | None = None
        self._checkpointer: Checkpointer | None = None
        self._closed = False
        self._started = False
        self._init_gate(blocked=True)  # until opened
        self._wake = Wakeups()
        self._watcher: asyncio.Task[None] | None = None
        self._watch_conn: apsw.Connection | None = None
        self._seen_version: int | None = None

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], **options: Any) -> _Opening:
        """Open (creating and migrating) the storage at ``path``; see the class for options."""
        return _Opening(path, options)

    @classmethod
    def builder(cls) -> SqliteStorageBuilder:
        """The crate's pool builder: ``SqliteStorage.builder().max_connections(32)…``."""
        return SqliteStorageBuilder()

    def _connect(self, *, role: str) -> apsw.Connection:
        """A configured connection: ``writer``, ``reader`` or ``checkpointer``."""
        opts = self._opts
        cache = 256 if role == "writer" else 128
        if opts.read_only:
            conn = _open_existing(self.path, cache)
        else:
            conn = apsw.Connection(
                self.path,
                flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE,
                statementcachesize=cache,
            )
        try:
            conn.set_busy_timeout(opts.busy_timeout_ms)
            pragmas: tuple[str, ...] = sql.CONNECTION_PRAGMAS
            if opts.read_only:
                # No journal-mode switch, no auto_vacuum, no writes at all: the file is
                # left as it was found, whatever it turns out to be.
                pragmas += sql.READER_PRAGMAS
            elif role == "writer":
                pragmas += sql.NEW_DATABASE_PRAGMAS
            for pragma in pragmas:
                conn.execute(pragma).fetchall()
            if opts.read_only:
                return conn
            if role == "writer":
                mode = scalar(conn, sql.JOURNAL_WAL)
                if str(mode).lower() != "wal":
                    raise StorageError(f"{self.path}: cannot use WAL mode (journal mode {mode})")
                pragmas = (f"PRAGMA synchronous = {opts.synchronous}", *sql.WRITER_PRAGMAS)
            elif role == "reader":
                pragmas = sql.READER_PRAGMAS
            else:
                pragmas = sql.CHECKPOINTER_PRAGMAS
            for pragma in pragmas:
                conn.execute(pragma).fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._opts.read_only:
            _check_database_file(self.path)
        try:
            conn = await asyncio.to_thread(self._connect, role="writer")
        except apsw.Error as exc:
            raise translate(exc) from exc
        opts = self._opts
        self._writer = GroupCommitWriter(
            conn,
            max_batch=opts.max_batch,
            busy_timeout_ms=opts.busy_timeout_ms,
            on_commit=self._committed,
        )

        def catch_up() -> None:
            # Called from the checkpointer's thread; the loop may be gone if nobody closed us.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._catch_up)

        try:
            if opts.read_only:
                await self._check_swarm_schema()
            elif opts.migrate:
                await MigrationRunner(self).migrate()
            self._pool = ReaderPool(
                lambda: self._connect(role="reader"),
                max_size=opts.readers,
                min_idle=opts.min_idle_readers,
                connection_timeout_s=opts.connection_timeout_s,
                idle_timeout_s=opts.idle_timeout_s,
            )
            if not opts.read_only:
                self._checkpointer = Checkpointer(
                    lambda: self._connect(role="checkpointer"),
                    catch_up=catch_up,
                )
                conn.set_wal_hook(self._checkpointer.wal_hook)
        except BaseException:
            await self._shutdown()
            raise
        self._started = True
        self._blocked = False

    def _catch_up(self) -> None:
        """Checkpoint between two batches when a busy writer outruns the background one."""
        if self._closed or self._writer is None:
            return

        def run(conn: apsw.Connection) -> None:
            with contextlib.suppress(apsw.BusyError):  # the background one is at it
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)

        self._writer.submit_alone(run).add_done_callback(_log_failure)

    # --- gate: closed storage, transactions owned by other tasks ------------------------------

    def _gate_closed(self) -> bool:
        return self._closed or not self._started

    async def _gate(self) -> SqliteTransaction | None:
        """Wait while another task's transaction holds the storage; the one this call joins."""
        tx = await super()._gate()
        if tx is not None and tx.ctx is None:
            raise TransactionError("the transaction has not started yet")
        return tx

    @property
    def _w(self) -> GroupCommitWriter:
        writer = self._writer
        if writer is None:
            raise StorageError("storage is closed")
        return writer

    def _in_tx(
        self,
        tx: SqliteTransaction,
        op: Callable[[WriteContext], T],
        *,
        row_kind: str | None = None,
        row_id: str | None = None,
    ) -> T:
        """Run an operation inside the transaction ``tx`` holds (in the loop)."""
        writer = self._w
        assert tx.ctx is not None
        try:
            result: T = writer.run_held(tx.ctx, op, row_kind=row_kind, row_id=row_id)
        except StorageError as exc:
            tx.check_alive(writer.conn, exc)
            raise
        tx.check_alive(writer.conn, None)
        return result

    async def _write(
        self,
        op: Callable[[WriteContext], T],
        *,
        row_kind: str | None = None,
        row_id: str | None = None,
        heavy: bool = False,
    ) -> T:
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return self._in_tx(tx, op, row_kind=row_kind, row_id=row_id)
        result: T = await self._w.submit(op, row_kind=row_kind, row_id=row_id, heavy=heavy)
        return result

    async def _read(self, fn: Callable[[apsw.Connection], T], *, inline: bool) -> T:
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return self._in_tx(tx, lambda ctx: fn(ctx.conn))
        pool = self._pool
        if pool is None:
            raise StorageError("storage is closed")
        if inline:
            got = pool.run_inline(fn)
            if got is not NOT_RUN:
                return got
        return await pool.run(fn)

    def _try_now(self, fn: Callable[[apsw.Connection], T]) -> T | NotRun:
        """A short indexed read run at once in the loop, if nothing stands in the way.

        A plain call, not a coroutine: point reads are the hot path of readers.
        """
        pool = self._pool
        if self._blocked or pool is None:
            return NOT_RUN
        return pool.run_inline(fn)

    # --- notifications ----------------------------------------------------------------------

    def _committed(self, ctx: WriteContext) -> None:
        if ctx.events:
            self._wake.wake(EVENTS)
        for agent_id in ctx.mail:
            self._wake.wake(mail(agent_id))
        if ctx.tasks:
            self._wake.wake(TASKS)

    def _watch(self) -> None:
        """Look for other processes' commits while anyone waits (cheap, and only then)."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_other_processes())

    def _note_other_commits(self) -> None:
        """Wake everyone if the file changed since last looked at; remember how it is now.

        A waiter calls this before it reads, so that a commit made by another process
        between its read and its wait changes the version it will be compared with (a
        baseline taken only when the watcher starts would already include that commit, and
        the waiter would sleep through it).
        """
        if self._closed:
            return
        if self._watch_conn is None:
            self._watch_conn = self._connect(role="reader")
        now = scalar(self._watch_conn, sql.DATA_VERSION)
        if self._seen_version is not None and now != self._seen_version:
            self._wake.wake_all()
        self._seen_version = now

    async def _watch_other_processes(self) -> None:
        while self._wake.waiting() and not self._closed:
            await asyncio.sleep(WATCH_INTERVAL_S)
            self._note_other_commits()

    # --- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what is queued, roll back an open transaction, release every resource."""
        if self._closed:
            return
        if self._tx is not None:
            self._tx.abort("storage closed")
        self._closed = True
        self._blocked = True
        self._wake.wake_all()
        await self._shutdown()
        self._release_tx()

    async def _shutdown(self) -> None:
        self._closed = True
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        writer = self._writer
        if writer is not None:
            await writer.drain()
            writer.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._pool is not None:
            self._pool.close()
        if self._watch_conn is not None:
            self._watch_conn.close()
            self._watch_conn = None
        if writer is not None:
            writer.conn.set_wal_hook(None)
            writer.conn.close()
            self._writer = None

    # --- migrations (MigrationTarget) -------------------------------------------------------

    async def _check_swarm_schema(self) -> None:
        """Refuse a database this library did not make (a read-only storage cannot fix it).

        A swarm database has the library's ``schema_migrations`` table, possibly with no
        migration applied (after ``rollback_to(0)``).
        """

        def inspect(conn: apsw.Connection) -> tuple[list[str], list[str]]:
            tables = [name for (name,) in conn.execute(sql.TABLE_NAMES)]
            columns = [row[1] for row in conn.execute(sql.MIGRATIONS_COLUMNS)]
            return tables, columns

        found, columns = await self._w.submit_alone(inspect)
        if not found:
            raise NotASwarmDatabaseError(
                f"{self.path} is an empty database, not a swarm database", empty=True
            )
        if sorted(columns) != sorted(sql.MIGRATIONS_COLUMN_NAMES):
            raise NotASwarmDatabaseError(
                f"{self.path} is not a swarm database (its tables: {', '.join(found[:5])}"
                + (", …)" if len(found) > 5 else ")"),
                empty=False,
            )
        check_applied(await self.applied_migrations(), bundled_migrations(self.dialect))

    async def applied_migrations(self) -> list[AppliedMigration]:
        """Rows of ``schema_migrations`` by version (none before the table exists)."""

        def read(conn: apsw.Connection) -> list[AppliedMigration]:
            if conn.execute(sql.MIGRATIONS_TABLE_EXISTS).fetchone() is None:
                return []
            return [
                AppliedMigration(version, name, checksum, from_us(applied_at))
                for version, name, checksum, applied_at in conn.execute(sql.APPLIED_MIGRATIONS)
            ]

        result: list[AppliedMigration] = await self._w.submit_alone(read)
        return result

    async def apply_migration(self, migration: Migration, recorded_name: str) -> bool:
        """Run a migration and record it in one ``BEGIN IMMEDIATE`` transaction.

        ``False`` when the version is already recorded (another process was first).
        """

        def apply(conn: apsw.Connection) -> bool:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(sql.CREATE_MIGRATIONS)
                if conn.execute(sql.MIGRATION_RECORDED, (migration.version,)).fetchone():
                    conn.execute("ROLLBACK")
                    return False
                conn.execute(migration.up)
                conn.execute(
                    sql.RECORD_MIGRATION,
                    (migration.version, recorded_name, migration.checksum, self._now()),
                )
                conn.execute("COMMIT")
            except apsw.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise MigrationError(
                    f"migration {migration.version} ({recorded_name}) failed: {exc}"
                ) from exc
            log.info("applied migration %s (%s)", migration.version, recorded_name)
            return True

        result: bool = await self._w.submit_alone(apply)
        return result

    async def revert_migration(self, migration: Migration, recorded_name: str) -> None:
        """Run a migration's ``down`` SQL and forget it, in one transaction."""
        if migration.down is None:
            raise MigrationError(f"migration {migration.version} has no down SQL")
        down = migration.down

        def revert(conn: apsw.Connection) -> None:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(down)
                conn.execute(sql.FORGET_MIGRATION, (migration.version,))
                conn.execute("COMMIT")
            except apsw.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise MigrationError(
                    f"rolling back migration {migration.version} ({recorded_name}) failed: {exc}"
                ) from exc

        await self._w.submit_alone(revert)

    # --- agents -----------------------------------------------------------------------------

    async def store_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        await self._write(
            lambda ctx: SqliteOps.insert_agent(ctx, rec), row_kind="agent", row_id=rec["id"]
        )

    async def get_agent(self, agent_id: str) -> AgentModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        args = (agent_id,)

        def read(conn: apsw.Connection) -> AgentModel | None:
            return _one(conn, sql.GET_AGENT, args, "agents")  # type: ignore[no-any-return]

        got = self._try_now(read)
        return await self._read(read, inline=True) if got is NOT_RUN else got

    async def update_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        await self._write(lambda ctx: SqliteOps.update_agent(ctx, rec))

    async def delete_agent(self, agent_id: str) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        await self._write(lambda ctx: self._ops.delete_agent(ctx, agent_id))

    async def list_agents(self) -> list[AgentModel]:
        return await self._read(
            lambda conn: _all(conn, sql.LIST_AGENTS, (), "agents"), inline=False
        )

    async def list_agents_by_status(self, status: AgentStatus | str) -> list[AgentModel]:
        value = (codec._enum(AgentStatus, status, "status").value,)
        return await self._read(
            lambda conn: _all(conn, sql.AGENTS_BY_STATUS, value, "agents"), inline=False
        )

    async def heartbeat(self, agent_id: str, at: TimeArg | None = None) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        stamp = codec.opt_time_arg(at, "at")
        await self._write(lambda ctx: self._ops.heartbeat(ctx, agent_id, stamp))

    async def find_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        cutoff = (codec.cutoff_arg(older_than, "older_than", self._now()),)
        return await self._read(
            lambda conn: _all(conn, sql.STALE_AGENTS, cutoff, "agents"), inline=False
        )

    async def reap_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        now = self._now()
        cutoff = codec.cutoff_arg(older_than, "older_than", now)
        recs = await self._write(lambda ctx: self._ops.reap_stale_agents(ctx, cutoff, now))
        return [codec.decode("agents", r) for r in recs]

    # --- tasks ------------------------------------------------------------------------------

    async def store_task(self, task: TaskModel) -> None:
        await self.store_tasks([task])

    async def store_tasks(self, tasks: Sequence[TaskModel]) -> None:
        recs = codec.encode_batch(tasks, codec.encode_task, "tasks", self._limits)

        def store(ctx: WriteContext) -> None:
            if recs:
                self._ops.store_tasks(ctx, recs)

        await self._write(store, heavy=len(recs) > HEAVY_ROWS)

    async def get_task(self, task_id: str) -> TaskModel | None:
        codec.check_id(task_id, "task_id", self._limits)
        args = (task_id,)

        def read(conn: apsw.Connection) -> TaskModel | None:
            return _one(conn, sql.GET_TASK, args, "tasks")  # type: ignore[no-any-return]

        got = self._try_now(read)
        return await self._read(read, inline=True) if got is NOT_RUN else got

    async def update_task(self, task: TaskModel) -> None:
        rec = codec.encode_task(task, self._limits)
        await self._write(lambda ctx: self._ops.update_task(ctx, rec))

    async def delete_task(self, task_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        await self._write(lambda ctx: self._ops.delete_task(ctx, task_id))

    async def get_pending_tasks(self) -> list[TaskModel]:
        return await self._read(
            lambda conn: _all(conn, sql.PENDING_TASKS, (), "tasks"), inline=False
        )

    async def get_ready_tasks(self, limit: int | None = None) -> list[TaskModel]:
        n = None if limit is None else codec.limit_arg(limit)
        now = self._now()
        params: tuple[int, ...]
        if n is None:
            statement, params = sql.READY_TASKS, (now,)
        else:
            statement, params = sql.READY_TASKS_LIMIT, (now, n)
        return await self._read(
            lambda conn: _all(conn, statement, params, "tasks"),
            inline=n is not None and n <= INLINE_ROWS,
        )

    async def get_tasks_by_agent(self, agent_id: str) -> list[TaskModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        args = (agent_id,)
        return await self._read(
            lambda conn: _all(conn, sql.TASKS_BY_AGENT, args, "tasks"), inline=False
        )

    def _lease(self, lease: Duration | None) -> int:
        return self._lease_us if lease is None else codec.duration_arg(lease, "lease")

    async def claim_task(self, task_id: str, agent_id: str, lease: Duration | None = None) -> bool:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)
        lease_us = self._lease(lease)
        return await self._write(lambda ctx: self._ops.claim_task(ctx, task_id, agent_id, lease_us))

    async def claim_next_task(
        self,
        agent_id: str,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> TaskModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        types = codec.types_arg(task_types)
        lease_us = self._lease(lease)
        row = await self._write(
            lambda ctx: self._ops.claim_next_task(ctx, agent_id, types, lease_us)
        )
        return None if row is None else decode_row("tasks", sql.PUBLIC_TASK_COLUMNS, row)

    def _check_held(self, task_id: str, agent_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)

    async def start_task(self, task_id: str, agent_id: str) -> TaskModel:
        self._check_held(task_id, agent_id)
        rec = await self._write(lambda ctx: self._ops.start_task(ctx, task_id, agent_id))
        return codec.decode("tasks", rec)  # type: ignore[no-any-return]

    async def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        encoded = None if result is None else codec._json_field(result, "result", self._limits)
        self._check_held(task_id, agent_id)
        rec = await self._write(
            lambda ctx: self._ops.complete_task(ctx, task_id, agent_id, encoded)
        )
        return codec.decode("tasks", rec)  # type: ignore[no-any-return]

    async def fail_task(self, task_id: str, agent_id: str, error: str) -> TaskModel:
        codec.check_text(error, "error", self._limits, empty_ok=True)
        self._check_held(task_id, agent_id)
        rec = await self._write(lambda ctx: self._ops.fail_task(ctx, task_id, agent_id, error))
        return codec.decode("tasks", rec)  # type: ignore[no-any-return]

    async def cancel_task(self, task_id: str, reason: str | None = None) -> list[str]:
        codec.check_id(task_id, "task_id", self._limits)
        if reason is not None:
            codec.check_text(reason, "reason", self._limits, empty_ok=True)
        return await self._write(lambda ctx: self._ops.cancel_task(ctx, task_id, reason))

    async def heartbeat_task(
        self, task_id: str, agent_id: str, lease: Duration | None = None
    ) -> TaskModel:
        lease_us = self._lease(lease)
        self._check_held(task_id, agent_id)
        rec = await self._write(
            lambda ctx: self._ops.heartbeat_task(ctx, task_id, agent_id, lease_us)
        )
        return codec.decode("tasks", rec)  # type: ignore[no-any-return]

    async def wait_for_tasks(
        self, timeout: Duration | None = None, task_types: Sequence[str] | None = None
    ) -> bool:
        types = codec.types_arg(task_types)
        deadline = Deadline(timeout)
        type_args: tuple[str, ...] = () if types is None else (json.dumps(types),)
        any_ready = sql.ANY_READY if types is None else sql.ANY_READY_OF_TYPES
        next_due = sql.NEXT_RUN_AFTER if types is None else sql.NEXT_RUN_AFTER_OF_TYPES

        def due(conn: apsw.Connection) -> int | None:
            """0 if a task is ready now, else when the next backoff ends (or None)."""
            now = self._now()
            if conn.execute(any_ready, (now, *type_args)).fetchone() is not None:
                return 0
            first: int | None = scalar(conn, next_due, (now, *type_args))
            return None if first is None else max(first - now, 1)

        while True:
            self._note_other_commits()
            gen = self._wake.generation(TASKS)
            due_us = await self._read(due, inline=True)
            if due_us == 0:
                return True
            if self._closed or deadline.expired():
                return False
            self._watch()
            await self._wake.wait(TASKS, gen, deadline.wait_before(due_us))
            if self._closed:
                return False

    # --- events -----------------------------------------------------------------------------

    async def store_event(self, event: EventModel) -> int:
        row = codec.event_values(event, self._limits)
        if self._blocked:
            tx = await self._gate()
            if tx is not None:
                seqs = self._in_tx(tx, lambda ctx: self._ops.store_events(ctx, [row]))
                event.sequence = seqs[0]
                return seqs[0]
        seq: int = await self._w.submit_row(self._event_rows, row)
        event.sequence = seq
        return seq

    async def store_events(self, events: Sequence[EventModel]) -> list[int]:
        if (
            isinstance(events, Sequence)
            and not isinstance(events, (str, bytes))
            and len(events) > HEAVY_ROWS
            and (await self._gate() if self._blocked else None) is None
        ):
            seqs = await self._store_events_streamed(events)
            for ev, seq in zip(events, seqs, strict=True):
                ev.sequence = seq
            return seqs
        rows = codec.encode_batch(events, codec.event_values, "events", self._limits)

        def store(ctx: WriteContext) -> list[int]:
            return self._ops.store_events(ctx, rows) if rows else []

        seqs = await self._write(store, heavy=len(rows) > HEAVY_ROWS)
        for ev, seq in zip(events, seqs, strict=True):
            ev.sequence = seq
        return seqs

    async def _store_events_streamed(self, events: Sequence[EventModel]) -> list[int]:
        """A large batch outside a transaction: validated in the loop, chunk by chunk, while
        the writer's thread inserts the chunks already validated, in one transaction.

        The two overlap little (apsw releases the GIL around each row's ``sqlite3_step``, so
        the inserting thread waits for the validating one row by row), but the loop never
        holds still for the whole batch and the insert starts with the first chunk.
        """
        handoff: queue.SimpleQueue[list[EventValues] | BaseException | None] = queue.SimpleQueue()

        def next_chunk() -> list[EventValues] | None:
            item = handoff.get()
            if isinstance(item, BaseException):
                raise item
            return item

        # heavy: the writer runs it on its own thread, never in the loop (it blocks on the queue).
        write = asyncio.ensure_future(
            self._write(lambda ctx: self._ops.store_event_chunks(ctx, next_chunk), heavy=True)
        )
        try:
            for start in range(0, len(events), STREAM_CHUNK):
                chunk = events[start : start + STREAM_CHUNK]
                handoff.put([codec.event_values(ev, self._limits) for ev in chunk])
                await asyncio.sleep(0)  # the writer starts, and the loop stays responsive
        except BaseException as exc:
            handoff.put(exc)
            with contextlib.suppress(BaseException):
                await write
            raise
        handoff.put(None)
        return await write

    async def get_events_by_agent(self, agent_id: str, limit: int = 100) -> list[EventModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        args = (agent_id, codec.limit_arg(limit))
        return await self._read(
            lambda conn: _all(conn, sql.EVENTS_BY_AGENT, args, "events"),
            inline=args[1] <= INLINE_ROWS,
        )

    async def get_events_by_type(self, event_type: str, limit: int = 100) -> list[EventModel]:
        codec.check_text(event_type, "event_type", self._limits)
        args = (event_type, codec.limit_arg(limit))
        return await self._read(
            lambda conn: _all(conn, sql.EVENTS_BY_TYPE, args, "events"),
            inline=args[1] <= INLINE_ROWS,
        )

    async def get_events_since(self, since: TimeArg) -> list[EventModel]:
        args = (codec.time_arg(since, "since"),)
        return await self._read(
            lambda conn: _all(conn, sql.EVENTS_SINCE, args, "events"), inline=False
        )

    async def read_events(self, after_sequence: int = 0, limit: int = 1000) -> list[EventModel]:
        args = (codec.limit_arg(after_sequence, "after_sequence"), codec.limit_arg(limit))
        return await self._read(
            lambda conn: _all(conn, sql.READ_EVENTS, args, "events"),
            inline=args[1] <= INLINE_ROWS,
        )

    async def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[EventModel]:
        last = codec.limit_arg(after_sequence, "after_sequence")
        types = None if event_types is None else frozenset(codec.types_arg(event_types) or ())
        while not self._closed:
            self._note_other_commits()
            gen = self._wake.generation(EVENTS)
            batch = await self.read_events(last, SUBSCRIBE_PAGE)
            for ev in batch:
                last = ev.sequence or last
                if types is None or ev.event_type in types:
                    yield ev
            if len(batch) == SUBSCRIBE_PAGE or self._closed:
                continue
            self._watch()
            await self._wake.wait(EVENTS, gen)

    # --- messages ---------------------------------------------------------------------------

    async def store_message(self, message: MessageModel) -> None:
        rec = codec.encode_message(message, self._limits)
        await self._write(
            lambda ctx: SqliteOps.insert_message(ctx, rec), row_kind="message", row_id=rec["id"]
        )

    async def get_message(self, message_id: str) -> MessageModel | None:
        codec.check_id(message_id, "message_id", self._limits)
        args = (message_id,)

        def read(conn: apsw.Connection) -> MessageModel | None:
            return _one(conn, sql.GET_MESSAGE, args, "messages")  # type: ignore[no-any-return]

        got = self._try_now(read)
        return await self._read(read, inline=True) if got is NOT_RUN else got

    async def delete_message(self, message_id: str) -> None:
        codec.check_id(message_id, "message_id", self._limits)
        await self._write(lambda ctx: SqliteOps.delete_message(ctx, message_id))

    async def get_messages_between(
        self, agent_a: str, agent_b: str, limit: int = 100
    ) -> list[MessageModel]:
        codec.check_id(agent_a, "agent_a", self._limits)
        codec.check_id(agent_b, "agent_b", self._limits)
        args = (agent_a, agent_b, codec.limit_arg(limit))
        return await self._read(
            lambda conn: _all(conn, sql.MESSAGES_BETWEEN, args, "messages"),
            inline=args[2] <= INLINE_ROWS,
        )

    async def get_unread_messages(self, agent_id: str) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        args = (agent_id,)
        # A mailbox is short, and waiting workers poll it: read it in the loop.
        return await self._read(
            lambda conn: _all(conn, sql.UNREAD_MESSAGES, args, "messages"), inline=True
        )

    async def mark_message_read(self, message_id: str) -> MessageModel:
        codec.check_id(message_id, "message_id", self._limits)
        row = await self._write(lambda ctx: self._ops.mark_message_read(ctx, message_id))
        return decode_row("messages", sql.MESSAGE_COLUMNS, row)  # type: ignore[no-any-return]

    async def wait_for_messages(
        self, agent_id: str, timeout: Duration | None = None
    ) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        deadline = Deadline(timeout)
        key = mail(agent_id)
        while True:
            self._note_other_commits()
            gen = self._wake.generation(key)
            unread = await self.get_unread_messages(agent_id)
            if unread or self._closed:
                return unread
            if deadline.expired():
                return []
            self._watch()
            await self._wake.wait(key, gen, deadline.remaining())
            if self._closed:
                # Woken by close(): return like a timeout instead of failing the next read.
                return []

    # --- metrics ----------------------------------------------------------------------------

    async def store_metric(self, metric: MetricModel) -> None:
        row = METRIC_VALUES(codec.encode_metric(metric, self._limits))
        if self._blocked:
            tx = await self._gate()
            if tx is not None:
                self._in_tx(tx, lambda ctx: self._ops.store_metrics(ctx, [row]))
                return
        await self._w.submit_row(self._metric_rows, row)

    async def store_metrics(self, metrics: Sequence[MetricModel]) -> None:
        recs = codec.encode_batch(metrics, codec.encode_metric, "metrics", self._limits)
        rows = [METRIC_VALUES(rec) for rec in recs]

        def store(ctx: WriteContext) -> None:
            if rows:
                self._ops.store_metrics(ctx, rows)

        await self._write(store, heavy=len(rows) > HEAVY_ROWS)

    async def get_metrics_by_agent(
        self, agent_id: str, metric_type: str | None = None
    ) -> list[MetricModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        params: tuple[str, ...]
        if metric_type is None:
            statement, params = sql.METRICS_BY_AGENT, (agent_id,)
        else:
            codec.check_text(metric_type, "metric_type", self._limits)
            statement, params = sql.METRICS_BY_AGENT_AND_TYPE, (agent_id, metric_type)
        return await self._read(lambda conn: _all(conn, statement, params, "metrics"), inline=False)

    async def get_aggregated_metrics(
        self, metric_type: str, start: TimeArg, end: TimeArg
    ) -> list[MetricModel]:
        args = window_args(metric_type, start, end, self._limits)

        def read(conn: apsw.Connection) -> list[MetricModel]:
            groups: list[tuple[Any, ...]] = conn.execute(sql.AGGREGATE_BY_AGENT, args).fetchall()
            groups.sort(key=lambda g: crate_order(g[0], g[1]))
            return [crate_metric(metric_type, *g) for g in groups]

        return await self._read(read, inline=False)

    async def aggregate_metrics(
        self,
        metric_type: str,
        start: TimeArg,
        end: TimeArg,
        group_by: Sequence[str] = ("agent_id",),
        bucket: Duration | None = None,
    ) -> list[MetricAggregate]:
        args = window_args(metric_type, start, end, self._limits)
        groups, bucket_us = grouping_args(group_by, bucket)

        def read(conn: apsw.Connection) -> list[MetricAggregate]:
            rows = [MetricRow(*row) for row in conn.execute(sql.METRIC_ROWS, args)]
            return aggregate(metric_type, rows, groups, bucket_us)

        return await self._read(read, inline=False)

    # --- transactions -----------------------------------------------------------------------

    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        timeout_us = (
            self._opts.transaction_timeout_us
            if timeout is None
            else codec.duration_arg(timeout, "timeout")
        )
        tx = await self._hold(lambda: SqliteTransaction(self))
        try:
            await self._w.hold()
        except BaseException:
            tx._state = "rolled back"
            self._release_tx()
            raise
        tx._begin(WriteContext(self._w.conn), timeout_us / 1e6)
        ACTIVE_TRANSACTION.set(tx)
        return tx

    def _finish(self, tx: SqliteTransaction, *, commit: bool) -> None:
        if ACTIVE_TRANSACTION.get() is tx:
            ACTIVE_TRANSACTION.set(None)
        self._release_tx()
        if commit and tx.ctx is not None:
            self._committed(tx.ctx)

    # --- queries and maintenance ------------------------------------------------------------

    async def query(self, builder: QueryBuilder[Any]) -> list[Any]:
        if not isinstance(builder, QueryBuilder):
            raise ValidationError("expected a QueryBuilder", field="builder")
        statement, params = builder.build("sqlite")
        table = builder.table
        limit = builder.limit_value
        return await self._read(
            lambda conn: _all(conn, statement, params, table),
            inline=limit is not None and limit <= INLINE_ROWS,
        )

    async def vacuum(self) -> None:
        """Rebuild the file without free pages (waits for queued writes first)."""
        if await self._joined():
            return  # VACUUM cannot run inside a transaction; nothing to reclaim from it
        await self._w.submit_alone(lambda conn: conn.execute("VACUUM"))

    async def checkpoint(self) -> None:
        """Copy the whole write-ahead log into the database file and truncate it."""
        if await self._joined():
            return

        def run(conn: apsw.Connection) -> None:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)

        await self._w.submit_alone(run)

    async def _joined(self) -> bool:
        return (await self._gate() if self._blocked else None) is not None

    async def get_storage_size(self) -> int:
        """Bytes of the database (free pages included; the log not yet copied too)."""
        size: int = await self._read(lambda conn: scalar(conn, sql.STORAGE_SIZE), inline=True)
        return size

    async def integrity_check(self) -> list[str]:
        """Problems found in the file: SQLite's own check, foreign keys, dependency counts.

        An empty list means the database is sound.
        """

        def check(conn: apsw.Connection) -> list[str]:
            problems = [r[0] for r in conn.execute(sql.INTEGRITY_CHECK) if r[0] != "ok"]
            for table, rowid, parent, _fk in conn.execute(sql.FOREIGN_KEY_CHECK):
                problems.append(f"{table} row {rowid}: no {parent} row it refers to")
            for task_id, stored, actual in conn.execute(sql.DEPENDENCY_COUNT_CHECK):
                problems.append(
                    f"task {task_id!r} counts {stored} unfinished dependencies, "
                    f"its dependencies say {actual}"
                )
            return problems

        return await self._read(check, inline=False)

    async def backup(self, dest: str | os.PathLike[str]) -> None:
        """Copy the database to ``dest`` while it stays in use (a consistent snapshot)."""
        target = os.fspath(dest)
        if target == self.path:
            raise ValidationError("cannot back up a database onto itself", field="dest")

        def copy(conn: apsw.Connection) -> None:
            out = apsw.Connection(target)
            try:
                with out.backup("main", conn, "main") as b:
                    # One step: a single read snapshot of the source, writers carry on.
                    b.step(-1)
            finally:
                out.close()

        await self._read(copy, inline=False)

    async def prune(
        self,
        events_before: TimeArg | None = None,
        metrics_before: TimeArg | None = None,
        read_messages_before: TimeArg | None = None,
    ) -> PruneResult:
        """Delete old history, then give the freed pages back to the file system."""
        ev_t = codec.opt_time_arg(events_before, "events_before")
        me_t = codec.opt_time_arg(metrics_before, "metrics_before")
        ms_t = codec.opt_time_arg(read_messages_before, "read_messages_before")
        tx = await self._gate() if self._blocked else None
        if tx is not None:
            return self._in_tx(tx, lambda ctx: SqliteOps.prune(ctx.conn, ev_t, me_t, ms_t))

        def run(conn: apsw.Connection) -> PruneResult:
            conn.execute("BEGIN IMMEDIATE")
            result = SqliteOps.prune(conn, ev_t, me_t, ms_t)
            conn.execute("COMMIT")
            if result.events or result.metrics or result.messages:
                # Each step frees one page: read it to the end.
                conn.execute("PRAGMA incremental_vacuum").fetchall()
            return result

        pruned: PruneResult = await self._w.submit_alone(run)
        return pruned


class SqliteTransaction(GatedTransaction):
    """A transaction of :class:`SqliteStorage`: holds the writer, rolled back on timeout."""

    def __init__(self, storage: SqliteStorage) -> None:
        super().__init__(storage, state="starting")
        self._sqlite = storage
        self.ctx: WriteContext | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _begin(self, ctx: WriteContext, timeout_s: float) -> None:
        self.ctx = ctx
        self._state = "active"
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out)

    def _end(self, state: str, *, commit: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._state = state
        writer = self._sqlite._writer
        try:
            if writer is not None:
                writer.release(commit=commit)
        except StorageError as exc:
            self._state = "rolled back"
            self._sqlite._finish(self, commit=False)
            raise TransactionError(f"commit failed: {exc}") from exc
        self._sqlite._finish(self, commit=commit)

    def check_alive(self, conn: apsw.Connection, cause: BaseException | None) -> None:
        """After an operation: if SQLite rolled the whole transaction back, end it here too.

        An I/O error or a full disk can make SQLite abandon the transaction; the statements
        that follow would otherwise run one by one outside any transaction.
        """
        if conn.in_transaction or self._state != "active":
            return
        if self._timer is not None:
            self._timer.cancel()
        self._state = "rolled back"
        writer = self._sqlite._writer
        if writer is not None:
            writer.release(commit=False)
        self._sqlite._finish(self, commit=False)
        raise TransactionError(
            f"the database rolled the transaction back: {cause or 'unknown cause'}"
        ) from cause

    def _timed_out(self) -> None:
        if self._state == "active":
            log.warning("transaction open past its timeout; rolled back")
            self._sqlite._orphaned += 1
            self._end("timed_out", commit=False)

    def abort(self, why: str) -> None:
        """Roll back at once (used when the storage closes)."""
        if self._state == "active":
            self._end("rolled back", commit=False)
            log.warning("transaction rolled back: %s", why)

    async def commit(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._end("committed", commit=True)

    async def rollback(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._end("rolled back", commit=False)


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("background checkpoint failed: %s", fut.exception())
