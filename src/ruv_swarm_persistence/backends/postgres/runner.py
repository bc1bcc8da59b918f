"""Running work on the pool: one retry loop, with a named policy for each kind of work.

Whether a failed call may run again depends on one question: could it have changed the
database? Each attempt records how far it got (:class:`Phase`), and the work's
:class:`Policy` answers from that and the failure (classified in :mod:`.errors`):

``READ``
    Work that changes nothing (reads, ``BEGIN``, maintenance that is safe to repeat). A
    lost connection is retried once, on a fresh connection, wherever it happened.
``WRITE``
    Work in a transaction of its own, committed by the runner. It is retried while it
    certainly did not commit: the connection was lost before ``COMMIT`` was sent (once), or
    the server rolled it back after a deadlock or serialization failure (up to
    ``ROLLBACK_RETRIES`` times, after a short pause). A connection lost during ``COMMIT``
    leaves the outcome unknown: :class:`DatabaseError` "may or may not have been applied".
``SELF_COMMITTING``
    One statement outside a transaction, its own commit. It is retried once only when
    nothing was sent (connecting failed, or the driver refused the call before sending);
    once sent it is never retried, and a lost connection is reported as "may or may not
    have been applied".

A timeout (no answer within ``command_timeout``) is never retried and never taken for a lost
connection: the server may still be at work. It is reported as a timeout, and where the
outcome is unknown (during ``COMMIT``, or once a self-committing statement was sent) it says
the write may or may not have been applied.

Everything else is translated once (:func:`.errors.translate`) with the driver's exception as
``__cause__``. A connection a failure left unusable is terminated, so the pool replaces it.

A lost connection also retires every other pooled one (:meth:`Runner.expire`): sessions die
together (the server restarted, or an administrator ended them), and a killed session looks
alive to the driver until it reads the end of the socket, so the pool would hand it out
again. A retry therefore runs on a connection made after the failure, not on the next
corpse, and one retry is enough after every pooled connection was killed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import asyncpg

from ...errors import DatabaseError, PoolError, StorageError
from . import errors
from .options import PoolOptions

__all__ = [
    "READ",
    "ROLLBACK_RETRIES",
    "SELF_COMMITTING",
    "WRITE",
    "Attempt",
    "Conn",
    "Phase",
    "Policy",
    "Runner",
    "alive",
    "drop_if_broken",
    "in_doubt",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: A pooled asyncpg connection (typed loosely: asyncpg's proxies mirror ``Connection``).
Conn = Any

#: How often a write rolled back by the server (deadlock, serialization failure) is retried.
ROLLBACK_RETRIES: Final = 5


class Phase(enum.Enum):
    """How far an attempt got: what a failure there may have left on the server."""

    #: Nothing reached the server: getting a connection, or a call the driver refused.
    CONNECTING = "connecting"
    #: Statements were sent (inside a transaction, or each its own commit).
    SENT = "sent"
    #: ``COMMIT`` was sent: whether it took effect is known only from its answer.
    COMMITTING = "committing"


@dataclass(frozen=True, slots=True)
class Policy:
    """When a failed attempt runs again, and which failures leave the outcome unknown."""

    name: str
    #: Phases whose lost connection (or server-side rollback) certainly changed nothing.
    retry_in: frozenset[Phase]
    #: A lost connection is retried only if fewer retries (of either kind) came before it:
    #: with 1, only the first attempt's.
    lost_retries: int = 1
    #: Retries of a transaction the server rolled back (deadlock, serialization failure).
    rollback_retries: int = 0
    #: Seconds to pause before retry ``n`` (times ``n``).
    pause_s: float = 0.0
    #: Phases after which a lost connection or a timeout leaves the outcome unknown.
    in_doubt: frozenset[Phase] = frozenset()

    def verdict(self, exc: Exception, attempt: Attempt) -> StorageError | None:
        """``None`` to run again; otherwise the error to raise (from ``exc``)."""
        phase = attempt.phase
        if phase in self.retry_in:
            if errors.rolled_back(exc) and attempt.number < self.rollback_retries:
                return None
            if errors.connection_lost(exc) and attempt.number < self.lost_retries:
                return None
        if phase in self.in_doubt:
            doubt = in_doubt(exc, phase, "the write")
            if doubt is not None:
                return doubt
        return errors.translate(exc)


def in_doubt(exc: BaseException, phase: Phase, what: str) -> DatabaseError | None:
    """The error for a failure that leaves ``what`` perhaps applied; ``None`` if it cannot."""
    if errors.timed_out(exc):
        return DatabaseError(
            f"PostgreSQL did not answer within command_timeout {_WHERE[phase]}: {what} may "
            "or may not have been applied"
        )
    if errors.connection_lost(exc):
        return DatabaseError(
            f"lost the PostgreSQL connection {_WHERE[phase]}: {what} may or may not have "
            "been applied"
        )
    return None


_WHERE: Final = {
    Phase.CONNECTING: "while connecting",
    Phase.SENT: "during a write",
    Phase.COMMITTING: "while committing",
}

#: Changes nothing: a lost connection is retried once, whatever the phase.
READ: Final = Policy("read", retry_in=frozenset({Phase.CONNECTING, Phase.SENT}))
#: A transaction of its own: retried until ``COMMIT`` is sent, in doubt after.
WRITE: Final = Policy(
    "write",
    retry_in=frozenset({Phase.CONNECTING, Phase.SENT}),
    rollback_retries=ROLLBACK_RETRIES,
    pause_s=0.001,
    in_doubt=frozenset({Phase.COMMITTING}),
)
#: Its own commit: retried only if nothing was sent, in doubt once sent.
SELF_COMMITTING: Final = Policy(
    "self-committing statement",
    retry_in=frozenset({Phase.CONNECTING}),
    in_doubt=frozenset({Phase.SENT}),
)


@dataclass(slots=True)
class Attempt:
    """One run of a piece of work: its number (0 first) and how far it got."""

    number: int = 0
    phase: Phase = field(default=Phase.CONNECTING)


class Runner:
    """The storage's pool, and the one loop that runs work on it under a policy."""

    def __init__(self, pool: asyncpg.Pool[Any], options: PoolOptions) -> None:
        self.pool = pool
        self.options = options
        #: Times the pool's connections were retired after a lost one.
        self.expirations = 0

    async def acquire(self) -> Conn:
        """A pooled connection; :class:`PoolError` if none is free within acquire_timeout."""
        try:
            return await self.pool.acquire(timeout=self.options.acquire_timeout)
        except TimeoutError as exc:
            raise PoolError(
                f"no PostgreSQL connection became free within "
                f"{self.options.acquire_timeout} s (max_size={self.options.max_size})"
            ) from exc

    async def release(self, conn: Conn) -> None:
        """Give a connection back; one the pool already took back (it died) is let go."""
        try:
            await self.pool.release(conn)
        except asyncpg.InterfaceError as exc:
            log.debug("connection not released: %s", exc)

    async def expire(self, seen: int) -> None:
        """Retire the pooled connections after a lost one handed out at expiration ``seen``.

        A connection handed out after a later expiration was made after it; only a failure
        of such a connection is news (so concurrent failures retire the pool once).
        """
        if seen == self.expirations:
            self.expirations += 1
            await self.pool.expire_connections()

    async def run(
        self,
        policy: Policy,
        fn: Callable[[Conn, Attempt], Awaitable[T]],
        *,
        keep: bool = False,
    ) -> T:
        """Run ``fn`` on a pooled connection, again on a fresh one when ``policy`` allows.

        ``fn`` is called anew for every attempt (so it takes the time, and builds what it
        writes, each time) and moves ``attempt.phase`` on as it goes (``SENT`` is set before
        it is called). The connection goes back to the pool afterwards; with ``keep`` it
        stays with the caller when ``fn`` succeeds (a transaction holding it).
        """
        attempt = Attempt()
        while True:
            attempt.phase = Phase.CONNECTING
            seen = self.expirations
            try:
                conn = await self.acquire()
                seen = self.expirations
                ok = False
                try:
                    attempt.phase = Phase.SENT
                    result = await fn(conn, attempt)
                    ok = True
                    return result
                except BaseException as exc:
                    drop_if_broken(conn, exc)
                    if attempt.phase is Phase.SENT and errors.not_sent(exc):
                        attempt.phase = Phase.CONNECTING
                    raise
                finally:
                    if not (keep and ok):
                        await self.release(conn)
            except StorageError:
                raise
            except Exception as exc:
                if errors.connection_lost(exc):
                    await self.expire(seen)
                error = policy.verdict(exc, attempt)
                if error is not None:
                    raise error from exc
                attempt.number += 1
                log.log(
                    logging.INFO if errors.rolled_back(exc) else logging.WARNING,
                    "%s retried after %s: %s (%s)",
                    policy.name,
                    type(exc).__name__,
                    exc,
                    attempt.phase.value,
                )
                if policy.pause_s:
                    await asyncio.sleep(policy.pause_s * attempt.number)

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` under ``READ``."""
        return await self.run(READ, lambda conn, _attempt: fn(conn))

    async def self_committing(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` (statements that commit by themselves) under ``SELF_COMMITTING``."""
        return await self.run(SELF_COMMITTING, lambda conn, _attempt: fn(conn))

    async def write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` in a transaction of its own under ``WRITE``, and commit it."""

        async def attempt_once(conn: Conn, attempt: Attempt) -> T:
            tr = conn.transaction()
            await tr.start()
            try:
                result = await fn(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    await tr.rollback()
                raise
            attempt.phase = Phase.COMMITTING
            await tr.commit()
            return result

        return await self.run(WRITE, attempt_once)

    async def begin(self) -> tuple[Conn, Any]:
        """A connection with a transaction started on it, for the caller to end (``READ``)."""

        async def start(conn: Conn, _attempt: Attempt) -> tuple[Conn, Any]:
            tr = conn.transaction()
            await tr.start()
            return conn, tr

        return await self.run(READ, start, keep=True)


def drop_if_broken(conn: Conn, exc: BaseException) -> None:
    """Close a connection a failure left unusable, so the pool replaces it.

    A connection whose statement timed out is kept: asyncpg cancels the statement on the
    server and the pool waits for that before handing the connection out again.
    """
    if errors.connection_lost(exc):
        with contextlib.suppress(Exception):
            conn.terminate()


def alive(conn: Conn) -> bool:
    """False once a pooled connection died (the pool then detaches it from its proxy)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False
