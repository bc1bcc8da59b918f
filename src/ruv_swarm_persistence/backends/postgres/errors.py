"""The one boundary where asyncpg's exceptions become the library's errors.

Every database call of the PostgreSQL backend passes its failures through :func:`translate`;
the driver's exception is kept as ``__cause__``. :func:`connection_lost`, :func:`timed_out`
and :func:`rolled_back` classify failures for the retry policies of :mod:`.runner`.
"""

from __future__ import annotations

import re

import asyncpg
from asyncpg import exceptions as pg

from ...errors import (
    ConflictError,
    DatabaseError,
    StorageError,
    TransactionError,
)

__all__ = ["connection_lost", "not_sent", "rolled_back", "timed_out", "translate"]

#: Failures that mean the connection (or the server) went away.
_LOST = (
    pg.PostgresConnectionError,  # 08xxx, including "connection does not exist"
    pg.AdminShutdownError,  # pg_terminate_backend, server shutdown
    pg.CrashShutdownError,
    pg.CannotConnectNowError,  # server starting or shutting down
    pg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # "connection is closed", "connection was closed in the middle"
    # The protocol was left mid-message (a server's FATAL notice read while idle): the next
    # call is refused before anything is sent.
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
)

#: Failures after which the server rolled the whole transaction back.
_ROLLED_BACK = (pg.DeadlockDetectedError, pg.SerializationError)

_KEY = re.compile(r"Key \((?:[^)]*)\)=\((.*)\) already exists\.", re.DOTALL)
_TABLE_KIND = {
    "agents": "agent",
    "tasks": "task",
    "events": "event",
    "messages": "message",
    "metrics": "metric",
}


def connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` says the connection or server went away.

    A timeout is not (though ``TimeoutError`` is an ``OSError``): see :func:`timed_out`.
    """
    if isinstance(exc, TimeoutError):
        return False
    if isinstance(exc, pg.PostgresError) and not isinstance(exc, _LOST):
        return False
    return isinstance(exc, _LOST)


def timed_out(exc: BaseException) -> bool:
    """True when the server did not answer within ``command_timeout``.

    The connection is still there and asyncpg asks the server to cancel the statement, but
    the server may have done the work (or committed) before the cancel arrived.
    """
    return isinstance(exc, TimeoutError)


def not_sent(exc: BaseException) -> bool:
    """True when the call was refused by the driver before anything reached the server."""
    return isinstance(exc, asyncpg.InternalClientError) and "cannot switch to state" in str(exc)


def rolled_back(exc: BaseException) -> bool:
    """True when the server aborted the transaction for a retryable reason (deadlock)."""
    return isinstance(exc, _ROLLED_BACK)


def translate(exc: BaseException) -> StorageError:
    """The library's error for a driver failure (the caller raises it ``from exc``)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, pg.UniqueViolationError):
        kind = _TABLE_KIND.get(exc.table_name or "", exc.table_name or "record")
        m = _KEY.search(exc.detail or "")
        return ConflictError(kind, m.group(1) if m else "?")
    if isinstance(exc, pg.ForeignKeyViolationError) and exc.table_name == "task_dependencies":
        m = re.search(r"\(id\)=\((.*)\)", exc.detail or "")
        return ConflictError(
            "task", m.group(1) if m else "?", "has dependent tasks and cannot be deleted"
        )
    if isinstance(exc, pg.InFailedSQLTransactionError):
        return TransactionError(
            "the transaction failed on the server and must be rolled back: " + str(exc)
        )
    if isinstance(exc, pg.ReadOnlySQLTransactionError):
        return DatabaseError(f"the storage was opened read-only: {exc}")
    if isinstance(exc, TimeoutError):
        return DatabaseError("PostgreSQL did not answer within command_timeout")
    if connection_lost(exc):
        return DatabaseError(f"lost the PostgreSQL connection: {type(exc).__name__}: {exc}")
    return DatabaseError(f"PostgreSQL: {type(exc).__name__}: {exc}")
