"""``SqliteStorage``: the embedded default backend, on ``apsw``.

The public methods are the front's (:mod:`..front`); the operations under them are the
engine's (:mod:`.engine`): one writer connection commits every coroutine's writes in batches
(:mod:`.writer`), reads use a pool of read connections (:mod:`.readers`), the SQL lives in
:mod:`.sql` and what each write does in :mod:`.ops`. This module opens and closes the file,
begins and ends transactions, migrates, and adds the maintenance only SQLite has
(``integrity_check``, ``backup``). The file is in WAL mode, so readers never wait for the
writer and several processes can share it: writes take the lock with ``BEGIN IMMEDIATE`` and
wait for each other up to the busy timeout.

Semantics are the memory backend's, checked by the same conformance suite. As there, a
transaction owns the storage until it ends: other tasks' calls (reads too) wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Generator
from datetime import timedelta
from types import TracebackType
from typing import Any, Final

import apsw

from ... import codec
from ..._time import from_us, now_us, to_us
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
from ...storage import ACTIVE_TRANSACTION, Duration, Transaction
from .._gate import GatedStorage, GatedTransaction, TxState
from .._maintenance import RetentionLoop
from .._wake import Wakeups
from . import functions, sql
from .engine import SqliteEngine
from .errors import translate
from .ops import SqliteOps, scalar
from .options import Options
from .readers import ReaderPool
from .writer import Checkpointer, GroupCommitWriter, WriteContext

__all__ = ["SqliteStorage", "SqliteStorageBuilder", "SqliteTransaction"]

log = logging.getLogger(__name__)

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


def _close_last(conn: apsw.Connection) -> None:
    """Close the last connection, even when SQLite's checkpoint at close fails.

    Closing copies the write-ahead log into the database file; on a full disk or an I/O
    error that copy fails, but every commit is still in the log, which the next open
    replays. The storage is closed either way, so the failure is logged, not raised.
    """
    try:
        conn.close()
    except apsw.Error as exc:
        log.warning("closing the database: %s; the write-ahead log keeps every commit", exc)
        conn.close(force=True)


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
    * ``retention`` — what each table keeps, applied in the background while open
      (:mod:`ruv_swarm_persistence.retention`; ``?retention=events:30d,tasks:7d``).
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
        self._opts = opts = Options(dict(options))
        clock = opts.clock
        self._now = now_us if clock is None else (lambda: to_us(clock()))
        self._limits = opts.limits
        self._lease_us = opts.lease_us
        self._wake = Wakeups()
        self._engine = self._sqlite = SqliteEngine(
            self._now,
            SqliteOps(self._now, opts.retry_policy),
            self._wake,
            lambda: self._connect(role="reader"),
        )
        self._writer: GroupCommitWriter | None = None
        self._pool: ReaderPool | None = None
        self._checkpointer: Checkpointer | None = None
        self._closed = False
        self._started = False
        self._init_gate(blocked=True)  # until opened
        self._retention = opts.retention
        self._maintenance: RetentionLoop | None = None

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
            create_private(self.path)
            conn = apsw.Connection(
                self.path,
                flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE,
                statementcachesize=cache,
            )
        try:
            conn.set_busy_timeout(opts.busy_timeout_ms)
            functions.register(conn)
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
            on_commit=self._sqlite.committed,
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
        self._sqlite.attach(self._writer, self._pool)
        self._started = True
        self._blocked = False
        if opts.retention is not None and not opts.read_only:
            self._maintenance = RetentionLoop.start_for(self, opts.retention.every_us / 1e6)

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

    # --- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what is queued, roll back an open transaction, release every resource."""
        if self._closed:
            return
        if self._tx is not None:
            self._tx.abort("storage closed")
        self._closed = True
        self._blocked = True
        if self._maintenance is not None:
            await self._maintenance.stop()
        self._wake.wake_all()
        await self._shutdown()
        self._release_tx()

    async def _shutdown(self) -> None:
        self._closed = True
        await self._sqlite.close()
        writer = self._writer
        if writer is not None:
            await writer.drain()
            writer.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._pool is not None:
            self._pool.close()
        if writer is not None:
            writer.conn.set_wal_hook(None)
            _close_last(writer.conn)
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
            tx._state = TxState.ROLLED_BACK
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
            self._sqlite.committed(tx.ctx)

    # --- maintenance only SQLite has --------------------------------------------------------

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

        tx = await self._gate() if self._blocked else None
        return await self._sqlite.read(tx, check, inline=False)

    async def backup(self, dest: str | os.PathLike[str]) -> None:
        """Copy the database to ``dest`` while it stays in use (a consistent snapshot)."""
        target = os.fspath(dest)
        if target == self.path:
            raise ValidationError("cannot back up a database onto itself", field="dest")

        def copy(conn: apsw.Connection) -> None:
            create_private(target)
            out = apsw.Connection(target)
            try:
                with out.backup("main", conn, "main") as b:
                    # One step: a single read snapshot of the source, writers carry on.
                    b.step(-1)
            finally:
                out.close()

        tx = await self._gate() if self._blocked else None
        await self._sqlite.read(tx, copy, inline=False)


class SqliteTransaction(GatedTransaction):
    """A transaction of :class:`SqliteStorage`: holds the writer, rolled back on timeout."""

    def __init__(self, storage: SqliteStorage) -> None:
        super().__init__(storage, state=TxState.STARTING)
        self._sqlite = storage
        self.ctx: WriteContext | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _begin(self, ctx: WriteContext, timeout_s: float) -> None:
        self.ctx = ctx
        self._state = TxState.ACTIVE
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out)

    def _end(self, state: TxState, *, commit: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._state = state
        writer = self._sqlite._writer
        try:
            if writer is not None:
                writer.release(commit=commit)
        except StorageError as exc:
            self._state = TxState.ROLLED_BACK
            self._sqlite._finish(self, commit=False)
            raise TransactionError(f"commit failed: {exc}") from exc
        self._sqlite._finish(self, commit=commit)

    def check_alive(self, conn: apsw.Connection, cause: BaseException | None) -> None:
        """After an operation: if SQLite rolled the whole transaction back, end it here too.

        An I/O error or a full disk can make SQLite abandon the transaction; the statements
        that follow would otherwise run one by one outside any transaction.
        """
        if conn.in_transaction or self._state != TxState.ACTIVE:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._state = TxState.ROLLED_BACK
        writer = self._sqlite._writer
        if writer is not None:
            writer.release(commit=False)
        self._sqlite._finish(self, commit=False)
        raise TransactionError(
            f"the database rolled the transaction back: {cause or 'unknown cause'}"
        ) from cause

    def _timed_out(self) -> None:
        if self._state == TxState.ACTIVE:
            log.warning("transaction open past its timeout; rolled back")
            self._sqlite._orphaned += 1
            self._end(TxState.TIMED_OUT, commit=False)

    def abort(self, why: str) -> None:
        """Roll back at once (used when the storage closes)."""
        if self._state == TxState.ACTIVE:
            self._end(TxState.ROLLED_BACK, commit=False)
            log.warning("transaction rolled back: %s", why)

    async def commit(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._end(TxState.COMMITTED, commit=True)

    async def rollback(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._end(TxState.ROLLED_BACK, commit=False)


class SqliteStorageBuilder:
    """The crate's pool builder; each setting maps onto the reader pool::

        storage = await (
            SqliteStorage.builder()
            .max_connections(32)
            .min_idle_connections(4)
            .connection_timeout(timedelta(seconds=60))
            .idle_timeout(timedelta(minutes=10))
            .build("swarm.db")
        )

    ``max_connections`` bounds the read connections (the writer has its own),
    ``min_idle_connections`` are opened at once and kept, a read that finds every connection
    busy for ``connection_timeout`` raises :class:`PoolError`, and connections idle longer
    than ``idle_timeout`` are closed down to the minimum.
    """

    def __init__(self) -> None:
        self._options: dict[str, Any] = {}

    def max_connections(self, n: int) -> SqliteStorageBuilder:
        """The most read connections open at once."""
        self._options["readers"] = _positive_int(n, "max_connections")
        return self

    def min_idle_connections(self, n: int) -> SqliteStorageBuilder:
        """Read connections opened at start and kept open while idle."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError("must be a non-negative integer", field="min_idle_connections")
        self._options["min_idle_readers"] = n
        return self

    def connection_timeout(self, timeout: timedelta | float) -> SqliteStorageBuilder:
        """How long a read waits for a free connection before :class:`PoolError`."""
        self._options["connection_timeout"] = _seconds(timeout, "connection_timeout")
        return self

    def idle_timeout(self, timeout: timedelta | float) -> SqliteStorageBuilder:
        """How long a connection above the minimum may stay idle before it is closed."""
        self._options["idle_timeout"] = _seconds(timeout, "idle_timeout")
        return self

    def option(self, name: str, value: Any) -> SqliteStorageBuilder:
        """Any other option of :meth:`SqliteStorage.open` (``busy_timeout``, ``clock``, …)."""
        self._options[name] = value
        return self

    async def build(self, path: str | os.PathLike[str]) -> SqliteStorage:
        """Open the storage at ``path`` with these settings."""
        return await SqliteStorage.open(path, **self._options)


def create_private(path: str) -> None:
    """Create ``path`` empty and readable by its owner only, unless it exists.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's permissions, so a swarm's
    data (payloads, results, messages) never becomes readable by other users of the machine
    through the default umask. An empty file is an empty database to SQLite.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return  # it exists (kept as it is), or SQLite will report why it cannot be made
    os.close(fd)


def _seconds(value: timedelta | float, field: str) -> float:
    return codec.duration_arg(value, field) / 1e6


def _positive_int(n: Any, field: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValidationError("must be a positive integer", field=field)
    return int(n)


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("background checkpoint failed: %s", fut.exception())
