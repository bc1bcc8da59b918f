"""Waiting for something to change, done once for every backend.

A waiter (``subscribe``, ``wait_for_messages``, ``wait_for_tasks``, ``wait_for_task``) takes
the generation of its key, reads the database, and waits only if the generation has not moved
since: a change committed between its read and its wait is never slept through. Keys:
:data:`EVENTS` (events appended), :data:`TASKS` (a task may have become ready),
:data:`FINISHED` (a task reached a final state, or was deleted) and :func:`mail` of an agent
(mail for that agent) — the keys PostgreSQL's notifications carry. A backend calls
:meth:`Wakeups.wake` after a commit, :meth:`Wakeups.wake_all` when it may have missed changes
(another process's commit, a lost notification connection, closing), and reads
:meth:`Wakeups.waiting` to know whether anyone would care.

:class:`Deadline` turns a caller's ``timeout`` into the seconds left for each wait.
"""

from __future__ import annotations

import asyncio
from typing import Final

from .. import codec
from ..storage import Duration

__all__ = ["EVENTS", "FINISHED", "TASKS", "Deadline", "Wakeups", "mail"]

#: Events were appended.
EVENTS: Final = "e"
#: A task may have become ready to claim.
TASKS: Final = "t"
#: A task became completed, failed or cancelled (or was deleted). One key for every task:
#: a key per task would leave a generation behind for each task ever finished.
FINISHED: Final = "f"


def mail(agent_id: str) -> str:
    """The key of mail for ``agent_id``."""
    return "m:" + agent_id


class Wakeups:
    """Waiters by key, and a generation per key that moves whenever the key may have changed."""

    __slots__ = ("_epoch", "_gen", "_waiters")

    def __init__(self) -> None:
        self._gen: dict[str, int] = {}
        self._epoch = 0
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def generation(self, key: str) -> int:
        """A number that changes whenever ``key`` may have changed."""
        return self._gen.get(key, 0) + self._epoch

    def waiting(self) -> bool:
        """Whether anyone waits for anything."""
        return bool(self._waiters)

    def wake(self, key: str) -> None:
        """``key`` changed: move its generation and wake its waiters."""
        gen = self._gen
        gen[key] = gen.get(key, 0) + 1
        if key in self._waiters:
            for fut in self._waiters.pop(key):
                if not fut.done():
                    fut.set_result(None)

    def wake_all(self) -> None:
        """Anything may have changed: move every generation and wake every waiter."""
        self._epoch += 1
        waiters, self._waiters = self._waiters, {}
        for futs in waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, key: str, generation: int, timeout: float | None = None) -> None:
        """Return once ``key`` moves past ``generation`` (at once if it has), or after
        ``timeout`` seconds; the caller then reads again."""
        if self.generation(key) != generation:
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.setdefault(key, []).append(fut)
        # A timer settles the future rather than asyncio.wait_for, which (Python 3.11) may
        # swallow a cancellation that arrives just after a wake-up: the waiter would then
        # wait again, up to its whole timeout, instead of being cancelled.
        timer = None if timeout is None else loop.call_later(max(timeout, 0), _settle, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            futs = self._waiters.get(key)
            if futs is not None and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiters[key]


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Deadline:
    """A caller's ``timeout`` (a duration, or ``None`` for no limit) on the loop's clock."""

    __slots__ = ("_at", "_loop")

    def __init__(self, timeout: Duration | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._at = (
            None
            if timeout is None
            else self._loop.time()
            + codec.duration_arg(timeout, "timeout", allow_zero=True, bounded=False) / 1e6
        )

    def remaining(self) -> float | None:
        """Seconds left (``<= 0`` once passed), or ``None`` when there is no limit."""
        return None if self._at is None else self._at - self._loop.time()

    def expired(self) -> bool:
        """Whether the time is up."""
        left = self.remaining()
        return left is not None and left <= 0

    def wait_before(self, due_in_us: int | None) -> float | None:
        """Seconds to wait: what is left, but no longer than ``due_in_us`` from now.

        Nothing announces the end of a retry backoff, so a wait for ready tasks wakes when
        the storage's clock says the next one is due (after 1 ms at the least).
        """
        remaining = self.remaining()
        if due_in_us is None:
            return remaining
        due_s = max(due_in_us / 1e6, 0.001)
        return due_s if remaining is None else min(remaining, due_s)
