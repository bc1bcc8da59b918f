"""The reader pool, and the crate's pool builder mapped onto it.

Reads run on connections of their own, never on the writer's, so they see only committed
data and never wait for the writer (WAL). Short indexed reads run in the event loop on an
idle connection: a thread hop (~0.07 ms here) costs more than the read itself. Reads that
may return many rows run on a pool thread, so the loop stays free while they decode.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import apsw

from ... import codec
from ...errors import PoolError, StorageError, ValidationError
from .errors import translate

if TYPE_CHECKING:
    from .storage import SqliteStorage

__all__ = ["NOT_RUN", "NotRun", "ReaderPool", "SqliteStorageBuilder"]

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


def _seconds(value: timedelta | float, field: str, *, allow_zero: bool = False) -> float:
    return codec.duration_arg(value, field, allow_zero=allow_zero) / 1e6


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
        from .storage import SqliteStorage

        return await SqliteStorage.open(path, **self._options)


def _positive_int(n: Any, field: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValidationError("must be a positive integer", field=field)
    return int(n)
