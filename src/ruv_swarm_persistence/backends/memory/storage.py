"""``MemoryStorage``: the front over the memory engine, with its transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ... import codec, rules
from ..._time import now_us, to_us
from ...codec import Limits
from ...errors import ValidationError
from ...retention import RetentionPolicy, parse_retention
from ...storage import ACTIVE_TRANSACTION, Duration, Transaction
from ...urls import ParsedUrl
from .._gate import GatedStorage, GatedTransaction, TxState
from .._maintenance import RetentionLoop
from .._wake import Wakeups
from .engine import MemoryEngine

__all__ = ["MemoryStorage", "MemoryTransaction", "open_url"]

log = logging.getLogger(__name__)


class MemoryStorage(GatedStorage["MemoryTransaction"]):
    """Everything in one process's memory; the reference implementation of the semantics.

    Options: ``clock`` (a callable returning an aware ``datetime``; the default is the system
    clock), ``lease`` (default lease, 30 s), ``retry_policy``, ``limits`` and
    ``transaction_timeout`` (30 s). ``migrate`` is accepted for symmetry with the SQL
    backends (there is no schema); ``read_only=True`` refuses every write with a
    ``DatabaseError``, as a read-only SQL storage does. ``retention``: a
    :class:`~ruv_swarm_persistence.retention.RetentionPolicy` (or its text), applied in the
    background while the storage is open (made inside a running event loop).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        lease: Duration = 30,
        retry_policy: rules.RetryPolicy | None = None,
        limits: Limits | None = None,
        transaction_timeout: Duration = 30,
        migrate: bool = True,
        read_only: bool = False,
        retention: RetentionPolicy | str | None = None,
    ) -> None:
        for flag, value in (("migrate", migrate), ("read_only", read_only)):
            if not isinstance(value, bool):  # keywords take bools; URL text is parsed below
                raise ValidationError(f"{value!r} is not true or false", field=flag)
        self._now = now_us if clock is None else (lambda: to_us(clock()))
        self._lease_us = codec.duration_arg(lease, "lease")
        self._limits = limits or codec.DEFAULT_LIMITS
        self._tx_timeout_us = codec.duration_arg(transaction_timeout, "transaction_timeout")
        self._wake = Wakeups()
        self._engine = self._memory = MemoryEngine(
            self._now, retry_policy or rules.RetryPolicy(), self._wake, read_only=read_only
        )
        self._closed = False
        self._init_gate()
        self._retention = policy = parse_retention(retention)
        every = None if policy is None or read_only else policy.every_us / 1e6
        self._maintenance = RetentionLoop.start_for(self, every)

    @classmethod
    async def open(cls, **options: Any) -> MemoryStorage:
        """Create an empty memory storage (``init_storage("memory://")`` does the same)."""
        return cls(**options)

    async def close(self) -> None:
        """Close the storage; waiting subscribers, mail and task waiters return."""
        if self._closed:
            return
        if self._tx is not None:
            self._tx.abort("storage closed")
        self._closed = True
        self._blocked = True
        self._wake.wake_all()
        self._release_tx()
        if self._maintenance is not None:
            await self._maintenance.stop()

    # --- transactions ---------------------------------------------------------------------

    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        timeout_us = (
            self._tx_timeout_us if timeout is None else codec.duration_arg(timeout, "timeout")
        )
        tx = await self._hold(lambda: MemoryTransaction(self, timeout_us / 1e6))
        self._memory.begin()
        ACTIVE_TRANSACTION.set(tx)
        return tx

    def _finish(self, tx: MemoryTransaction, commit: bool) -> None:
        self._memory.finish(commit)
        if ACTIVE_TRANSACTION.get() is tx:
            ACTIVE_TRANSACTION.set(None)
        self._release_tx()


class MemoryTransaction(GatedTransaction):
    """A transaction of :class:`MemoryStorage`: owns the engine, undone on rollback."""

    def __init__(self, storage: MemoryStorage, timeout_s: float) -> None:
        super().__init__(storage)
        self._memory = storage
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        if self._state == TxState.ACTIVE:
            log.warning("transaction open past its timeout; rolled back")
            self._state = TxState.TIMED_OUT
            self._memory._orphaned += 1
            self._memory._finish(self, commit=False)

    def abort(self, why: str) -> None:
        """Roll back at once (used when the storage closes)."""
        if self._state == TxState.ACTIVE:
            self._timer.cancel()
            self._state = TxState.ROLLED_BACK
            self._memory._finish(self, commit=False)
            log.warning("transaction rolled back: %s", why)

    async def commit(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._timer.cancel()
        self._state = TxState.COMMITTED
        self._memory._finish(self, commit=True)

    async def rollback(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._timer.cancel()
        self._state = TxState.ROLLED_BACK
        self._memory._finish(self, commit=False)


async def open_url(parsed: ParsedUrl, options: dict[str, Any]) -> MemoryStorage:
    """Open a memory storage for ``memory://`` (URL options are not used)."""
    unknown = set(parsed.options) - {
        "lease", "transaction_timeout", "migrate", "read_only", "retention"
    }  # fmt: skip
    if unknown:
        raise ValidationError(
            f"unknown memory:// option(s): {', '.join(sorted(unknown))}", field="url"
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
        else:
            kwargs[key] = value
    return MemoryStorage(**kwargs)
