"""The reader pool (the crate's pool builder maps onto it: see ``SqliteStorageBuilder``).

Reads run on connections of their own, never on the writer's, so they see only committed
data and never wait for the writer (WAL). Short indexed reads run in the event loop on an
idle connection: a thread hop (~0.07 ms here) costs more than the read itself. Reads that
may return many rows run on a pool thread, so the loop stays free while SQLite finds them.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

import apsw

from ...errors import PoolError, StorageError
from .errors import translate

__all__ = ["NOT_RUN", "NotRun", "ReaderPool"]

T = TypeVar("T")


class NotRun(enum.Enum):
    """The answer of :meth:`ReaderPool.run_inline` when every connection was busy."""

    NOT_RUN = 0


NOT_RUN: Final = NotRun.NOT_RUN


class ReaderPool:
    """At most ``max_size`` read connections, ``min_idle`` of them kept open.

    A caller that finds every connection busy waits for one; after ``connection_timeout_s``
    it gets a :class:`PoolError`. Connections idle for longer than ``idle_timeout_s`` are
    closed, down to ``min_idle``.
    """

    def __init__(
        self,
        open_connection: Callable[[], apsw.Connection],
        *,
        max_size: int,
        min_idle: int,
        connection_timeout_s: float,
        idle_timeout_s: float | None,
    ) -> None:
        self._open = open_connection
        self.max_size = max_size
        self.min_idle = min(min_idle, max_size)
        self.connection_timeout_s = connection_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._idle: list[tuple[apsw.Connection, float]] = []  # (connection, idle since)
        self._size = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False
        for _ in range(self.min_idle):
            self._size += 1
            self._idle.append((self._new(), time.monotonic()))

    @property
    def size(self) -> int:
        """Connections open now (idle or in use)."""
        return self._size

    @property
    def idle(self) -> int:
        """Connections open and not in use."""
        return len(self._idle)

    def _new(self) -> apsw.Connection:
        try:
            return self._open()
        except apsw.Error as exc:
            raise translate(exc) from exc

    def try_acquire(self) -> apsw.Connection | None:
        """An idle (or new) connection at once, or ``None`` when all are in use."""
        if self._closed:
            raise StorageError("storage is closed")
        if self._idle:
            return self._idle.pop()[0]
        if self._size < self.max_size:
            self._size += 1
            try:
                return self._new()
            except BaseException:
                self._size -= 1
                raise
        return None

    async def acquire(self) -> apsw.Connection:
        """A connection, waiting up to the connection timeout for one to come back."""
        conn = self.try_acquire()
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connection_timeout_s
        while True:
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                raise PoolError(
                    f"no read connection became free within {self.connection_timeout_s:g} s "
                    f"(all {self.max_size} in use)"
                ) from None
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
            conn = self.try_acquire()
            if conn is not None:
                return conn

    def release(self, conn: apsw.Connection) -> None:
        """Give a connection back (closing it if the pool is closed)."""
        if self._closed:
            self._size -= 1
            conn.close()
            return
        now = time.monotonic()
        self._idle.append((conn, now))
        if self.idle_timeout_s is not None and len(self._idle) > self.min_idle:
            self._close_idle_since(now - self.idle_timeout_s)
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                break

    def _close_idle_since(self, cutoff: float) -> None:
        keep: list[tuple[apsw.Connection, float]] = []
        extra = len(self._idle) - self.min_idle
        for conn, since in self._idle:  # oldest first
            if extra > 0 and since < cutoff:
                conn.close()
                self._size -= 1
                extra -= 1
            else:
                keep.append((conn, since))
        self._idle = keep

    def run_inline(self, fn: Callable[[apsw.Connection], T]) -> T | NotRun:
        """Run a short read in the loop; :data:`NOT_RUN` when no connection is free."""
        conn = self._idle.pop()[0] if self._idle else self.try_acquire()
        if conn is None:
            return NOT_RUN
        try:
            return fn(conn)
        except StorageError:
            raise
        except apsw.Error as exc:
            raise translate(exc) from exc
        finally:
            self.release(conn)

    async def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run a read on a pool thread with a connection of its own."""
        conn = await self.acquire()
        try:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    min(self.max_size, (os.cpu_count() or 1) + 4),
                    thread_name_prefix="swarm-sqlite-reader",
                )
            return await asyncio.get_running_loop().run_in_executor(self._threads, fn, conn)
        except StorageError:
            raise
        except apsw.Error as exc:
            raise translate(exc) from exc
        finally:
            self.release(conn)

    def close(self) -> None:
        """Close idle connections now and the rest as they come back."""
        self._closed = True
        for conn, _ in self._idle:
            conn.close()
            self._size -= 1
        self._idle = []
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        if self._threads is not None:
            self._threads.shutdown(wait=True)
