"""``PostgresTransaction``: one connection held from ``BEGIN`` to ``COMMIT`` or ``ROLLBACK``.

While it is open the storage's gate makes other tasks' calls wait; calls of the task that
began it run here, each write in a savepoint so that a refused write leaves the transaction
usable. Notifications are sent with each write (the server delivers them at commit); this
process's waiters are woken after the commit. A transaction left open past its timeout is
rolled back in the background, and its owner is told at its next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ...errors import DatabaseError, StorageError
from ...storage import ACTIVE_TRANSACTION
from .._gate import GatedStorage, GatedTransaction, TxState
from . import errors
from .ops import Effects, Op, perform
from .runner import Conn, Phase, Runner, alive, in_doubt

__all__ = ["PostgresTransaction"]


class _Owner(Protocol):
    """What a transaction needs of its storage (declared here: the storage imports us)."""

    _runner: Runner
    channel: str
    _orphaned: int
    _background: set[asyncio.Task[None]]

    def _release_tx(self, tx: Any = None) -> None: ...
    def _after_commit(self, fx: Effects) -> None: ...


log = logging.getLogger(__name__)

#: ``SET LOCAL idle_in_transaction_session_timeout`` with a bound value.
_SET_IDLE_TIMEOUT = "SELECT set_config('idle_in_transaction_session_timeout', $1, true)"

T = TypeVar("T")


class PostgresTransaction(GatedTransaction):
    """A transaction of ``PostgresStorage``: one connection, held until it ends."""

    def __init__(self, storage: GatedStorage[Any], timeout_s: float) -> None:
        super().__init__(storage, state=TxState.STARTING)
        self._pg: _Owner = storage  # type: ignore[assignment]  # a PostgresStorage
        self._timeout_s = timeout_s
        self._conn: Conn = None
        self._tr: Any = None
        self._lock = asyncio.Lock()
        self._fx = Effects()
        self._timer: asyncio.TimerHandle | None = None

    async def _start(self, idle_timeout: str | None = None) -> None:
        """Begin; ``idle_timeout`` overrides the session's idle-in-transaction limit."""
        self._conn, self._tr = await self._pg._runner.begin()
        if idle_timeout is not None:
            try:
                await self._conn.execute(_SET_IDLE_TIMEOUT, idle_timeout)
            except BaseException:
                await self._discard()
                raise
        self._state = TxState.ACTIVE
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

    async def _run_write(self, op: Op[T]) -> T:
        """Run a write in a savepoint, so a refused write leaves the transaction usable."""
        async with self._lock:
            self.check_active()
            try:
                sp = self._conn.transaction()
                await sp.start()
                try:
                    result, deferred, fx = await perform(self._conn, op, self._pg.channel)
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
            return result  # type: ignore[return-value]

    def _note_mail(self, agent_id: str) -> None:
        """Mail for ``agent_id`` was stored by a statement that notified by itself."""
        self._fx.mail.add(agent_id)

    def _timed_out(self) -> None:
        if self._state == TxState.ACTIVE:
            log.warning("transaction open past its timeout; rolled back")
            self._state = TxState.TIMED_OUT
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
                await self._pg._runner.release(conn)

    async def _abort(self, why: str) -> None:
        """Roll back at once (the storage is closing)."""
        if self._state == TxState.ACTIVE:
            if self._timer is not None:
                self._timer.cancel()
            self._state = TxState.ROLLED_BACK
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
            self._state = TxState.COMMITTING
            conn, self._conn = self._conn, None
            sent = alive(conn)
            try:
                await self._tr.commit()
            except Exception as exc:
                self._state = TxState.FAILED
                with contextlib.suppress(Exception):
                    await self._tr.rollback()
                await self._pg._runner.release(conn)
                self._finish()
                if not sent:
                    raise DatabaseError(
                        "the transaction's PostgreSQL connection was lost before COMMIT; "
                        "nothing was applied"
                    ) from exc
                doubt = in_doubt(exc, Phase.COMMITTING, "the transaction")
                raise (doubt or errors.translate(exc)) from exc
            self._state = TxState.COMMITTED
            await self._pg._runner.release(conn)
        self._finish()
        self._pg._after_commit(self._fx)

    async def rollback(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        if self._timer is not None:
            self._timer.cancel()
        self._state = TxState.ROLLED_BACK
        await self._discard()
        self._finish()

    def _finish(self) -> None:
        if ACTIVE_TRANSACTION.get() is self:
            ACTIVE_TRANSACTION.set(None)
        self._pg._release_tx(self)
