"""``LISTEN`` on a dedicated connection, waking this process's waiters by key.

Writers send ``pg_notify(channel, key)`` in the transaction of the write, so the notification
arrives only once the write is visible. Keys are ``e`` (events appended), ``t`` (a task may
have become ready) and ``m:<agent id>`` (mail for that agent). A waiter remembers the key's
generation, re-reads the database, and waits only if the generation has not moved since.

The connection is opened when the first waiter appears. When it drops, every waiter is woken
(anything may have been missed in the gap) and, until it is back, waiters fall back to polling;
once reconnected, everyone is woken again, so a subscriber resumes from its last sequence and
loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from . import sql

__all__ = ["Listener"]

log = logging.getLogger(__name__)


class Listener:
    """The process-local side of one notification channel."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection[Any]]],
        channel: str,
        *,
        poll_interval: float = 1.0,
        health_interval: float = 15.0,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self.poll_interval = poll_interval
        self.health_interval = health_interval
        self._gen: dict[str, int] = {}
        self._epoch = 0
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._conn: asyncpg.Connection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stop = asyncio.Event()
        self.connected = False
        #: Successful connections so far (the first one included).
        self.connections = 0

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the listening connection, when connected."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    def generation(self, key: str) -> int:
        """A number that changes whenever ``key`` may have changed."""
        return self._gen.get(key, 0) + self._epoch

    def wake(self, key: str) -> None:
        """Wake the waiters of ``key`` (a notification, or a local commit)."""
        self._gen[key] = self._gen.get(key, 0) + 1
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        """Wake every waiter: notifications may have been missed."""
        self._epoch += 1
        waiters, self._waiters = self._waiters, {}
        for futs in waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    def start(self) -> None:
        """Open the listening connection in the background (idempotent)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait(self, key: str, since: int, timeout: float | None) -> None:
        """Return when ``key`` moved past generation ``since``, or after ``timeout`` seconds.

        While the connection is down the wait is cut to ``poll_interval``, so callers that
        re-read after every return keep making progress.
        """
        if self._closed:
            return
        self.start()
        if self.generation(key) != since:
            return
        if not self.connected:
            timeout = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            futs = self._waiters.get(key)
            if futs is not None:
                futs.discard(fut)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self.wake(str(payload))

    async def _run(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                conn = await self._connect()
            except Exception as exc:
                log.warning("notification listener cannot connect (%s); retrying", exc)
                await self._pause(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self._closed:
                conn.terminate()
                return
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await conn.add_listener(self.channel, self._on_notify)
            except Exception as exc:
                log.warning("LISTEN failed (%s); reconnecting", exc)
                conn.terminate()
                await self._pause(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._conn = conn
            self.connected = True
            self.connections += 1
            delay = 0.05
            if self.connections > 1:
                log.info("notification listener reconnected")
            self.wake_all()
            try:
                await self._watch(conn, lost)
            finally:
                self.connected = False
                self._conn = None
                conn.terminate()
            self.wake_all()
            if not self._closed:
                log.warning("notification listener lost its connection; reconnecting")

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _watch(self, conn: asyncpg.Connection[Any], lost: asyncio.Event) -> None:
        """Return when the connection is gone or the listener closes.

        A network drop that closes nothing is found by a periodic ping.
        """
        stop = asyncio.ensure_future(self._stop.wait())
        gone = asyncio.ensure_future(lost.wait())
        try:
            while not self._closed and not lost.is_set():
                done, _ = await asyncio.wait(
                    {stop, gone}, timeout=self.health_interval, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    return
                try:
                    await conn.fetchval(sql.PING, timeout=max(1.0, self.health_interval / 3))
                except Exception:
                    return
        finally:
            stop.cancel()
            gone.cancel()

    async def close(self) -> None:
        """Stop listening and release every waiter."""
        self._closed = True
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            # Let a connection attempt finish and be closed, rather than cancelling it
            # half-made (which would leave its socket to the garbage collector).
            try:
                await asyncio.wait_for(asyncio.shield(task), 15)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        self.connected = False
        self.wake_all()
