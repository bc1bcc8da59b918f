"""``IndexedDBStorage``: the front over the browser engine, with its transactions.

Opening takes the database's Web Lock (one page or worker writes a database at a time: each
holds the whole swarm in memory), opens the IndexedDB database at the schema version,
creating its object stores in ``onupgradeneeded``, loads it into the engine and asks the
browser to keep the origin's storage (``navigator.storage.persist()``). A transaction runs on
the memory engine's undo log; its commit writes everything it changed in one IndexedDB
transaction and returns after that transaction's ``complete`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

from ... import codec, rules
from ..._time import now_us, to_us
from ...codec import Limits
from ...errors import DatabaseError, MigrationError, StorageError, ValidationError
from ...retention import RetentionPolicy, parse_retention
from ...storage import ACTIVE_TRANSACTION, Duration, Transaction
from ...urls import ParsedUrl
from .._gate import GatedStorage, GatedTransaction, TxState
from .._maintenance import RetentionLoop
from .._wake import Wakeups
from .engine import SCHEMA_VERSION, STORES, BrowserEngine
from .idb import Bridge, IdbError, PyodideBridge

__all__ = [
    "DURABILITIES",
    "IndexedDBStorage",
    "IndexedDBTransaction",
    "delete_database",
    "open_url",
]

log = logging.getLogger(__name__)

#: IndexedDB's transaction durability hints. ``relaxed`` (the default) counts a transaction
#: complete once the browser wrote it to the operating system, as SQLite's
#: ``synchronous=NORMAL`` does: a crash of the page or the browser loses nothing, a power cut
#: may lose the last writes. ``strict`` waits for the disk as well (``synchronous=FULL``).
DURABILITIES: Final = ("relaxed", "strict", "default")
#: Name of the Web Lock a storage holds for its database.
LOCK_PREFIX: Final = "ruv-swarm-persistence:"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 256 or "\x00" in name:
        raise ValidationError(
            "must be a non-empty database name of at most 256 characters without NUL",
            field="name",
        )
    return name


class IndexedDBStorage(GatedStorage["IndexedDBTransaction"]):
    """A swarm kept in the browser's IndexedDB, under Pyodide; open it with :meth:`open`.

    The semantics are the memory backend's — its engine holds the swarm — and every write
    returns once IndexedDB has it. Options are the memory backend's (``clock``, ``lease``,
    ``retry_policy``, ``limits``, ``transaction_timeout``, ``migrate``, ``read_only``) and
    ``durability`` (see :data:`DURABILITIES`).

    ``persisted`` says whether the browser keeps the origin's storage persistent (it will
    not evict it under storage pressure): ``None`` while unknown. Opening asks for it;
    :meth:`request_persistence` waits for the answer.
    """

    _browser: BrowserEngine

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], datetime] | None = None,
        lease: Duration = 30,
        retry_policy: rules.RetryPolicy | None = None,
        limits: Limits | None = None,
        transaction_timeout: Duration = 30,
        migrate: bool = True,
        read_only: bool = False,
        durability: str = "relaxed",
        bridge: Bridge | None = None,
        retention: RetentionPolicy | str | None = None,
    ) -> None:
        self.name = _check_name(name)
        for flag, value in (("migrate", migrate), ("read_only", read_only)):
            if not isinstance(value, bool):
                raise ValidationError(f"{value!r} is not true or false", field=flag)
        if durability not in DURABILITIES:
            raise ValidationError(f"must be one of {', '.join(DURABILITIES)}", field="durability")
        self._now = now_us if clock is None else (lambda: to_us(clock()))
        self._lease_us = codec.duration_arg(lease, "lease")
        self._limits = limits or codec.DEFAULT_LIMITS
        self._tx_timeout_us = codec.duration_arg(transaction_timeout, "transaction_timeout")
        self._policy = retry_policy or rules.RetryPolicy()
        self._migrate = migrate
        self._read_only = read_only
        self._durability = durability
        self._bridge: Bridge = bridge if bridge is not None else PyodideBridge()
        self._wake = Wakeups()
        self._closed = False
        self._opened = False
        self._unlock: Callable[[], Awaitable[None]] | None = None
        self._persist: asyncio.Task[bool | None] | None = None
        #: Whether the browser keeps this origin's storage persistent (``None``: not known).
        self.persisted: bool | None = None
        self._init_gate(blocked=True)
        self._retention = parse_retention(retention)
        self._maintenance: RetentionLoop | None = None

    @classmethod
    async def open(cls, name: str = "swarm", **options: Any) -> IndexedDBStorage:
        """Open (creating if needed) the IndexedDB database ``name`` and load the swarm.

        Raises :class:`~ruv_swarm_persistence.errors.DatabaseError` when another page or
        worker has the database open, and :class:`~ruv_swarm_persistence.errors.MigrationError`
        when a newer version of this library wrote it (or, with ``migrate=False``, when it
        needs creating or upgrading).
        """
        storage = cls(name, **options)
        await storage._open()
        return storage

    def _gate_closed(self) -> bool:
        return self._closed or not self._opened

    async def _gate(self) -> IndexedDBTransaction | None:
        if not self._opened and not self._closed:
            raise StorageError("the storage is not open: use await IndexedDBStorage.open(name)")
        return await super()._gate()

    async def _open(self) -> None:
        bridge, name = self._bridge, self.name
        try:
            self._unlock = await bridge.lock(LOCK_PREFIX + name)
        except IdbError as exc:
            raise DatabaseError(f"could not lock IndexedDB database {name!r}: {exc}") from exc
        if self._unlock is None:
            raise DatabaseError(
                f"IndexedDB database {name!r} is open in another page or worker: "
                "close it there, or open another name"
            )
        try:
            try:
                connection = await bridge.open(name, SCHEMA_VERSION, STORES, self._migrate)
            except IdbError as exc:
                raise await self._open_error(exc) from exc
            engine = BrowserEngine(
                self._now,
                self._policy,
                self._wake,
                connection,
                durability=self._durability,
                read_only=self._read_only,
            )
            try:
                await engine.load()
            except BaseException:
                connection.close()
                raise
        except BaseException:
            await self._release_lock()
            raise
        self._engine = self._browser = engine
        self._opened = True
        self._blocked = False
        policy = self._retention
        if policy is not None and not self._read_only:
            self._maintenance = RetentionLoop.start_for(self, policy.every_us / 1e6)
        await self._ask_persistence()

    async def _open_error(self, exc: IdbError) -> StorageError:
        name = self.name
        if exc.name == "VersionError":
            found = await self._bridge.version(name)
            newer = f"schema version {found}" if found else "a newer schema version"
            return MigrationError(
                f"IndexedDB database {name!r} has {newer}, written by a newer version of "
                f"ruv-swarm-persistence than this one (schema version {SCHEMA_VERSION}): "
                "open it with that version"
            )
        if exc.name == "UpgradeRefused":
            return MigrationError(
                f"IndexedDB database {name!r} needs creating or upgrading to schema version "
                f"{SCHEMA_VERSION}, and migrate=False was given"
            )
        if exc.name == "Blocked":
            return DatabaseError(
                f"IndexedDB database {name!r} is open at an older version in another page: "
                "close that page to let this one upgrade it"
            )
        return DatabaseError(f"could not open IndexedDB database {name!r}: {exc}")

    async def _ask_persistence(self) -> None:
        try:
            self.persisted = await self._bridge.persisted()
        except IdbError as exc:
            log.warning("navigator.storage.persisted() failed: %s", exc)
        if self.persisted is False:
            # Not awaited here: a browser may ask the user, and opening must not wait for them.
            self._persist = asyncio.get_running_loop().create_task(self._request_persistence())

    async def _request_persistence(self) -> bool | None:
        try:
            self.persisted = await self._bridge.persist()
        except IdbError as exc:
            log.warning("navigator.storage.persist() failed: %s", exc)
        return self.persisted

    async def request_persistence(self) -> bool | None:
        """Wait for the browser's answer to the request for persistent storage made at open
        (asking again if there was none); whether it is granted, ``None`` if unknown."""
        if self._persist is None:
            self._persist = asyncio.get_running_loop().create_task(self._request_persistence())
        return await asyncio.shield(self._persist)

    @property
    def commits(self) -> int:
        """IndexedDB transactions written so far (group commit makes it less than the writes)."""
        return self._browser.commits if self._opened else 0

    async def _release_lock(self) -> None:
        unlock, self._unlock = self._unlock, None
        if unlock is not None:
            try:
                # Returns once the lock is free: reopening the database right away works.
                await unlock()
            except IdbError as exc:
                log.warning("releasing the lock of IndexedDB database %r: %s", self.name, exc)

    async def close(self) -> None:
        """Write what is pending, close the database and release it for other pages."""
        if self._closed:
            return
        if self._tx is not None:
            self._tx.abort("storage closed")
        self._closed = True
        self._blocked = True
        if self._maintenance is not None:
            await self._maintenance.stop()
        try:
            if self._opened:
                await self._browser.drain()
                self._browser.close()
        finally:
            self._wake.wake_all()
            self._release_tx()
            await self._release_lock()
            if self._persist is not None and not self._persist.done():
                self._persist.cancel()

    # --- transactions ---------------------------------------------------------------------

    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        timeout_us = (
            self._tx_timeout_us if timeout is None else codec.duration_arg(timeout, "timeout")
        )
        tx = await self._hold(lambda: IndexedDBTransaction(self, timeout_us / 1e6))
        self._browser.begin()
        ACTIVE_TRANSACTION.set(tx)
        return tx

    def _finish(self, tx: IndexedDBTransaction, commit: bool) -> None:
        self._browser.finish(commit)
        if ACTIVE_TRANSACTION.get() is tx:
            ACTIVE_TRANSACTION.set(None)
        self._release_tx()


class IndexedDBTransaction(GatedTransaction):
    """A transaction of :class:`IndexedDBStorage`: undone in memory on rollback, written to
    IndexedDB in one IndexedDB transaction on commit."""

    def __init__(self, storage: IndexedDBStorage, timeout_s: float) -> None:
        super().__init__(storage)
        self._storage = storage
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        if self._state == TxState.ACTIVE:
            log.warning("transaction open past its timeout; rolled back")
            self._state = TxState.TIMED_OUT
            self._storage._orphaned += 1
            self._storage._finish(self, commit=False)

    def abort(self, why: str) -> None:
        """Roll back at once (used when the storage closes)."""
        if self._state == TxState.ACTIVE:
            self._timer.cancel()
            self._state = TxState.ROLLED_BACK
            self._storage._finish(self, commit=False)
            log.warning("transaction rolled back: %s", why)

    async def commit(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._timer.cancel()
        self._state = TxState.COMMITTING
        # The storage is free again at once; what this transaction changed waits, with the
        # writes of whoever comes next, for the IndexedDB transaction this call awaits.
        self._storage._finish(self, commit=True)
        try:
            await self._storage._browser.flush()
        except BaseException:
            self._state = TxState.FAILED
            raise
        self._state = TxState.COMMITTED

    async def rollback(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._timer.cancel()
        self._state = TxState.ROLLED_BACK
        self._storage._finish(self, commit=False)


async def delete_database(name: str = "swarm", *, bridge: Bridge | None = None) -> None:
    """Delete the IndexedDB database ``name`` and the swarm in it (close its storage first)."""
    bridge = bridge if bridge is not None else PyodideBridge()
    try:
        await bridge.delete(_check_name(name))
    except IdbError as exc:
        raise DatabaseError(f"could not delete IndexedDB database {name!r}: {exc}") from exc


_URL_OPTIONS: Final = {
    "lease", "transaction_timeout", "migrate", "read_only", "durability", "retention"
}  # fmt: skip


async def open_url(parsed: ParsedUrl, options: dict[str, Any]) -> IndexedDBStorage:
    """Open the storage an ``indexeddb://NAME`` URL names (query parameters are options)."""
    unknown = set(parsed.options) - _URL_OPTIONS
    if unknown:
        raise ValidationError(
            f"unknown indexeddb:// option(s): {', '.join(sorted(unknown))}", field="url"
        )
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("migrate", "read_only"):
            kwargs[key] = codec.flag_arg(value, key)
        elif key in ("lease", "transaction_timeout") and isinstance(value, str):
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise ValidationError(f"{value!r} is not a number of seconds", field=key) from None
        elif key == "durability" and isinstance(value, str):
            kwargs[key] = value.lower()
        else:
            kwargs[key] = value
    return await IndexedDBStorage.open(parsed.location, **kwargs)
