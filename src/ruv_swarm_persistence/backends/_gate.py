"""The transaction gate every backend shares: one transaction at a time, others wait.

A storage runs at most one transaction. While it is open, calls from other tasks wait
for it to end; calls from the task that began it (or through the transaction object) join
it. A transaction rolled back by its timeout stays "orphaned" until its owner is told, so
the owner's later calls fail instead of quietly running outside any transaction.

:class:`GatedStorage` holds that state and the waiting; :class:`GatedTransaction` holds the
transaction's side of it (its state and the reporting of a timeout). Both are the one
:class:`~.front.Front`: a transaction is the storage's API over the same engine, whose gate
returns the transaction itself. Backends keep what is their own — how a transaction starts
and ends — and call in here for the rest.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Generic, TypeVar

from ..errors import StorageError, TransactionError
from ..models import EventModel
from ..storage import ACTIVE_TRANSACTION, Transaction

# Deadline lives with the waiting it bounds; imported from here by older modules.
from ._wake import Deadline
from .front import Front

__all__ = ["Deadline", "GatedStorage", "GatedTransaction", "TxState"]

TxT = TypeVar("TxT", bound="GatedTransaction")


class GatedStorage(Front, Generic[TxT]):
    """A storage that lets one transaction (of type ``TxT``) hold it at a time.

    A subclass calls :meth:`_init_gate` in its constructor, sets ``_closed``, takes the
    storage with :meth:`_hold` in ``begin_transaction`` and gives it back with
    :meth:`_release_tx`. Its operations test ``_blocked`` first and call :meth:`_gate` only
    when it is set, so the common case (no transaction anywhere) costs one attribute read.
    """

    _closed: bool

    def _init_gate(self, *, blocked: bool = False) -> None:
        """Set up the gate's state; ``blocked`` for a storage that is not yet open."""
        self._tx: TxT | None = None
        # Slow path needed: closed, a transaction holds the storage, or a timed-out
        # transaction's owner has not yet been told (its calls must fail, not autocommit).
        self._blocked = blocked
        self._orphaned = 0
        self._tx_waiters: list[asyncio.Future[None]] = []
        self._handoff = False  # calls were just woken by a transaction ending

    def _gate_closed(self) -> bool:
        """Whether the storage refuses calls (a backend may add "not opened yet")."""
        return self._closed

    def _check_timed_out(self, current: Transaction | None) -> None:
        """Raise if ``current``, this storage's transaction, timed out unreported."""
        if (
            isinstance(current, GatedTransaction)
            and current._owner is self
            and current._state == TxState.TIMED_OUT
        ):
            # Without this, calls after the timeout would silently run outside it.
            current.check_active()

    async def _wait_for_tx(self) -> None:
        """Wait until the transaction holding the storage ends."""
        fut = asyncio.get_running_loop().create_future()
        self._tx_waiters.append(fut)
        await fut

    async def _gate(self) -> TxT | None:
        """Wait while another task's transaction holds the storage; the one this call joins."""
        while True:
            if self._gate_closed():
                raise StorageError("storage is closed")
            tx = self._tx
            current = ACTIVE_TRANSACTION.get()
            self._check_timed_out(current)
            if tx is None:
                return None
            if current is tx:
                tx.check_active()
                return tx
            await self._wait_for_tx()

    async def _hold(self, make: Callable[[], TxT]) -> TxT:
        """Wait for the storage to be free, then let the transaction ``make()`` hold it.

        Refuses a nested transaction and a closed storage. The caller starts the
        transaction and, if that fails, gives the storage back with :meth:`_release_tx`.
        """
        current = ACTIVE_TRANSACTION.get()
        if current is not None and current.is_active and getattr(current, "storage", None) is self:
            raise TransactionError("a transaction is already open; transactions do not nest")
        while True:
            if self._gate_closed():
                raise StorageError("storage is closed")
            if self._tx is None:
                if not self._handoff:
                    break
                # Calls woken by the last release go first; without this a task running
                # transactions back to back would take the storage again before they run.
                self._handoff = False
                await asyncio.sleep(0)
                continue
            await self._wait_for_tx()
        # No await from the check above to here: nothing else can take the storage between.
        tx = make()
        self._tx = tx
        self._blocked = True
        return tx

    def _release_tx(self, tx: TxT | None = None) -> None:
        """Give the storage back from ``tx`` (``None``: whichever holds it) and wake waiters."""
        if tx is None or self._tx is tx:
            self._tx = None
        self._blocked = self._gate_closed() or self._tx is not None or self._orphaned > 0
        self._handoff = self._wake_tx_waiters()

    def _wake_tx_waiters(self) -> bool:
        """Wake every call waiting for the storage; whether there were any."""
        waiters, self._tx_waiters = self._tx_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        return bool(waiters)


class TxState(enum.StrEnum):
    """Where a transaction is in its life (the text is what error messages show)."""

    #: Made, not yet holding a connection or the writer.
    STARTING = "starting"
    #: Open: calls run in it.
    ACTIVE = "active"
    #: COMMIT sent, its outcome not yet known.
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled back"
    #: The database refused it; it must be rolled back.
    FAILED = "failed"
    #: Rolled back by its timeout; its owner has not been told yet (its calls must fail).
    TIMED_OUT = "timed_out"
    #: Rolled back by its timeout, and its owner told.
    TIMEOUT_REPORTED = "timed out (reported)"


class GatedTransaction(Front, Transaction):
    """The transaction side of :class:`GatedStorage`: its state and timeout reporting.

    Its API is the storage's front over the same engine; every call runs inside it. ``_state``
    (a :class:`TxState`) is ``ACTIVE`` while open; ``TIMED_OUT`` after the timeout rolled it
    back and until its owner is told (the storage counts it in ``_orphaned`` meanwhile); any
    other state says how it ended (or that it has not started yet).
    """

    def __init__(self, storage: GatedStorage[Any], state: TxState = TxState.ACTIVE) -> None:
        #: The storage this transaction belongs to.
        self.storage = storage
        self._owner = storage
        self._state: TxState = state
        self._engine = storage._engine
        self._wake = storage._wake
        self._limits = storage._limits
        self._lease_us = storage._lease_us
        self._now = storage._now
        self._blocked = True  # every call asks the gate, which checks the state

    async def _gate(self) -> GatedTransaction:
        # A finished transaction must not quietly run its calls outside any transaction.
        self.check_active()
        if self._owner._gate_closed():
            raise StorageError("storage is closed")
        return self

    def _gate_closed(self) -> bool:
        return self._owner._gate_closed()

    async def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncGenerator[EventModel, None]:
        raise TransactionError("subscribe() on the storage, not inside a transaction")
        yield  # pragma: no cover - makes this an async generator

    @property
    def is_active(self) -> bool:
        return self._state == TxState.ACTIVE

    def check_active(self) -> None:
        """Raise :class:`TransactionError` unless the transaction is open."""
        if self._state == TxState.TIMED_OUT:
            raise TransactionError("transaction was rolled back after its timeout")
        if self._state != TxState.ACTIVE:
            raise TransactionError(f"transaction already {self._state}")

    def _acknowledge_timeout(self) -> None:
        """If the timeout rolled this back, tell the owner (raise) and unblock the storage."""
        if self._state == TxState.TIMED_OUT:
            owner = self._owner
            self._state = TxState.TIMEOUT_REPORTED
            owner._orphaned -= 1
            owner._blocked = owner._gate_closed() or owner._tx is not None or owner._orphaned > 0
            if ACTIVE_TRANSACTION.get() is self:
                ACTIVE_TRANSACTION.set(None)
            raise TransactionError("transaction was rolled back after its timeout")

    async def settle_inactive(self, failed: bool) -> None:
        try:
            self._acknowledge_timeout()
        except TransactionError:
            if not failed:
                raise
