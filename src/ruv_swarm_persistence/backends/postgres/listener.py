"""``LISTEN`` on a dedicated connection, waking the storage's waiters by key.

Writers send ``pg_notify(channel, key)`` in the transaction of the write, so the notification
arrives only once the write is visible. Keys are those of :mod:`.._wake`: ``e`` (events
appended), ``t`` (a task may have become ready), ``f`` (a task became final or was deleted)
and ``m:<agent id>`` (mail for that agent);
each notification wakes that key of the front's :class:`~.._wake.Wakeups`, whose waiters then
read again.

The connection is opened when the first waiter appears (:meth:`Listener.start`). When it
drops, every waiter is woken (anything may have been missed in the gap) and, until it is back,
every waiter is woken again each ``poll_interval`` so that it polls; once reconnected,
everyone is woken again, so a subscriber resumes from its last sequence and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .._wake import Wakeups
from . import sql

__all__ = ["Listener"]

log = logging.getLogger(__name__)


class Listener:
    """The process-local side of one notification channel: it wakes ``wakeups``."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection[Any]]],
        channel: str,
        wakeups: Wakeups,
        *,
        poll_interval: float = 1.0,
        health_interval: float = 15.0,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self.poll_interval = poll_interval
        self.health_interval = health_interval
        self._wakeups = wakeups
        self._conn: asyncpg.Connection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
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

    def wake(self, key: str) -> None:
        """Wake the waiters of ``key`` (a notification)."""
        self._wakeups.wake(key)

    def wake_all(self) -> None:
        """Wake every waiter: notifications may have been missed."""
        self._wakeups.wake_all()

    def start(self) -> None:
        """Listen in the background, and poll while not listening (idempotent)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run())
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll())

    async def _poll(self) -> None:
        """While anyone waits and the connection is down, wake everyone each interval."""
        while not self._closed and self._wakeups.waiting():
            await self._pause(self.poll_interval)
            if not self._closed and not self.connected:
                self.wake_all()

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
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        self.connected = False
        self.wake_all()
