"""The error tree of ruv-swarm-persistence.

Every error the library raises derives from :class:`StorageError`::

    StorageError
     ├── ValidationError      bad input; nothing was written
     ├── NotFoundError        update/mark of an id that does not exist
     ├── ConflictError        store of an id that already exists
     ├── LeaseLostError       a worker acted on a task it no longer holds
     ├── TransactionError     commit/rollback misuse, or a transaction timed out
     ├── MigrationError       schema versions disagree, an applied migration was edited
     ├── DatabaseError        the database itself failed (driver errors are the __cause__)
     │    └── NotASwarmDatabaseError   opened read-only, found no swarm database there
     ├── SerializationError   a stored row could not be decoded
     └── PoolError            no connection could be had in time

A driver exception never reaches the caller unwrapped: it is translated at one boundary per
backend and kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConflictError",
    "DatabaseError",
    "LeaseLostError",
    "MigrationError",
    "NotASwarmDatabaseError",
    "NotFoundError",
    "PoolError",
    "SerializationError",
    "StorageError",
    "TransactionError",
    "ValidationError",
]


class StorageError(Exception):
    """Base of every error raised by the library."""


class ValidationError(StorageError, ValueError):
    """Input broke a rule; ``field`` names the offending field (when there is one)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.message,), {"field": self.field}))


class NotFoundError(StorageError, LookupError):
    """The record named by ``kind`` and ``id`` does not exist."""

    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind} {id!r} not found")
        self.kind = kind
        self.id = id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.id))


class ConflictError(StorageError):
    """A record with this id already exists (or, per ``detail``, another conflict)."""

    def __init__(self, kind: str, id: str, detail: str = "already exists") -> None:
        super().__init__(f"{kind} {id!r} {detail}")
        self.kind = kind
        self.id = id
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.id, self.detail))


class LeaseLostError(StorageError):
    """The agent no longer holds the task (lease expired, task requeued or reassigned)."""

    def __init__(self, task_id: str, agent_id: str, detail: str = "") -> None:
        msg = f"agent {agent_id!r} does not hold task {task_id!r}"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.task_id = task_id
        self.agent_id = agent_id
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.agent_id, self.detail))


class TransactionError(StorageError):
    """A transaction was misused, failed to commit, or was rolled back after its timeout."""


class MigrationError(StorageError):
    """The schema could not be migrated, or an applied migration no longer matches."""


class DatabaseError(StorageError):
    """The database failed; the driver's exception is ``__cause__``."""


class NotASwarmDatabaseError(DatabaseError):
    """A read-only open found no swarm database: a foreign file or schema, or nothing yet.

    ``empty`` is true when there is nothing at all (an empty file, a database without
    tables): a database another process is about to create looks like this.
    """

    def __init__(self, message: str, *, empty: bool) -> None:
        super().__init__(message)
        self.empty = empty


class SerializationError(StorageError):
    """A stored row could not be decoded; names the table and id."""

    def __init__(self, table: str, id: str, detail: str) -> None:
        super().__init__(f"cannot decode {table} row {id!r}: {detail}")
        self.table = table
        self.id = id
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.table, self.id, self.detail))


class PoolError(StorageError):
    """No connection became available within the connection timeout."""


def _rebuild(cls: type[ValidationError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Unpickle an error whose constructor takes keyword arguments."""
    return cls(*args, **kwargs)
