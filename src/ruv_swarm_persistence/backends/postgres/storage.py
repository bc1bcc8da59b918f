"""``PostgresStorage``: the Storage API on PostgreSQL through an asyncpg pool.

The public methods are the front's (:mod:`..front`), which checks every argument, takes
the transaction gate and decodes records; the operations under them are the engine's
(:mod:`.engine`). This module opens and closes the pool, begins transactions and migrates;
the rest is apart: :mod:`.options` checks the options, :mod:`.runner` runs work on the pool
under a named retry policy, :mod:`.ops` says what each operation does on a connection,
:mod:`.sql` holds the statements, :mod:`.transaction` the held transaction,
:mod:`.appender` the group commit of ``store_event``, and :mod:`.listener` the
notifications.

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
  the front's waiters (``subscribe``, ``wait_for_messages``, ``wait_for_tasks``) in every
  process (see :mod:`.listener`); local commits wake this process's at once.
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
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ... import codec, rules
from ..._time import now_us, to_us
from ...codec import Limits
from ...errors import (
    DatabaseError,
    MigrationError,
    NotASwarmDatabaseError,
    StorageError,
)
from ...migrations import (
    AppliedMigration,
    Migration,
    MigrationRunner,
    bundled_migrations,
    check_applied,
)
from ...retention import RetentionPolicy, parse_retention
from ...storage import ACTIVE_TRANSACTION, Duration, Transaction
from .._gate import GatedStorage, TxState
from .._maintenance import RetentionLoop
from .._wake import Wakeups
from . import ops
from .engine import PostgresEngine
from .listener import Listener
from .ops import COPY_ROWS, MIGRATION_LOCK_KEY, Effects, PostgresOps, jsonb_text
from .options import (
    IDLE_MARGIN_S,
    PoolOptions,
    application_name,
    channel_for,
    check_dsn,
    check_flags,
    check_schema,
    check_standard,
    connect_options,
    pool_options,
    setting_ms,
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


class PostgresStorage(GatedStorage["PostgresTransaction"]):
    """A swarm stored in PostgreSQL; many processes on many machines may share it.

    Open with ``await PostgresStorage.open(dsn, **options)`` or
    ``await init_storage("postgresql://user@host/db?schema=swarm1")``. Options: ``schema``
    (created if missing; several swarms can share a database), the pool's ``min_size``,
    ``max_size``, ``command_timeout``, ``max_inactive_connection_lifetime`` and
    ``acquire_timeout`` (seconds to wait for a free connection before :class:`PoolError`);
    the server-side limits ``lock_timeout`` (seconds a statement waits for a lock before
    failing; off by default) and ``idle_in_transaction_timeout`` (seconds a session may sit
    idle inside a transaction before the server ends it and frees its locks: a process
    frozen mid-transaction cannot block the others for ever; by default the transaction
    timeout plus 10 s, 0 turns it off); and the standard ``clock``, ``lease``,
    ``retry_policy``, ``limits`` and ``transaction_timeout``. ``migrate=False`` opens without
    applying migrations, and ``read_only=True`` opens an existing swarm schema only to read it
    (nothing is created or migrated, every transaction is read-only, a schema that is not a
    swarm's is refused with a ``DatabaseError``, and a write raises ``DatabaseError``). Times
    are stored as integer microseconds, so they round-trip exactly; JSON fields are ``jsonb``
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
        retention: RetentionPolicy | str | None = None,
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
        self._limits = limits or codec.DEFAULT_LIMITS
        self._tx_timeout_us = codec.duration_arg(transaction_timeout, "transaction_timeout")
        self.channel = channel_for(schema)
        self._wake = Wakeups()
        self.listener = Listener(self._listen_connection, self.channel, self._wake)
        self._engine = self._postgres = PostgresEngine(
            self._runner,
            PostgresOps(self._now, self._policy),
            self._now,
            channel=self.channel,
            schema=schema,
            listener=self.listener,
            wake=self._wake,
        )
        self._closed = False
        self._init_gate()
        self._background: set[asyncio.Task[None]] = set()
        self._retention = parse_retention(retention)
        self._maintenance: RetentionLoop | None = None

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
        lock_timeout: float | None = None,
        idle_in_transaction_timeout: float | None = None,
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
            lock_timeout=lock_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
            transaction_timeout_s=codec.duration_arg(
                options.get("transaction_timeout", 30), "transaction_timeout"
            )
            / 1e6,
        )
        check_standard(options)
        if "retention" in options:  # checked before any connection is made
            options["retention"] = parse_retention(options["retention"])
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
        policy = storage._retention
        if policy is not None and not read_only:
            storage._maintenance = RetentionLoop.start_for(storage, policy.every_us / 1e6)
        return storage

    async def _listen_connection(self) -> asyncpg.Connection[Any]:
        settings = dict(self._connect_options["server_settings"])
        settings["application_name"] = application_name(self.schema, "listener")
        return await asyncpg.connect(self._dsn, server_settings=settings, timeout=10)

    async def close(self) -> None:
        """Finish pending appends, roll back an open transaction, close every connection."""
        if self._closed:
            return
        if self._maintenance is not None:
            await self._maintenance.stop()
        await self._postgres.appender.drain()
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

    # --- the gate --------------------------------------------------------------------------

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

    def _after_commit(self, fx: Effects) -> None:
        """A transaction committed: wake this process's waiters (see the engine)."""
        self._postgres.after_commit(fx)

    # --- transactions --------------------------------------------------------------------------

    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        timeout_us = (
            self._tx_timeout_us if timeout is None else codec.duration_arg(timeout, "timeout")
        )
        tx = await self._hold(lambda: PostgresTransaction(self, timeout_us / 1e6))
        idle = self.pool_options.idle_in_transaction_timeout
        longer = bool(idle) and timeout_us > self._tx_timeout_us
        try:
            # A transaction given more time than the default may idle for longer too.
            await tx._start(setting_ms(timeout_us / 1e6 + IDLE_MARGIN_S) if longer else None)
        except BaseException:
            tx._state = TxState.FAILED
            self._release_tx(tx)
            raise
        ACTIVE_TRANSACTION.set(tx)
        return tx


async def _keep_session(conn: Any) -> None:
    """Pool reset: nothing to undo, since no call leaves session state behind.

    asyncpg rolls back an open transaction before calling this; its default reset query
    (``RESET ALL``, ``UNLISTEN *``, …) would cost a round trip on every release.
    """
