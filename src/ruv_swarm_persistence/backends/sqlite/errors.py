"""The one place where ``apsw`` errors become errors of the library's tree.

Every call into the driver that can fail is wrapped by the writer, the reader pool or the
maintenance code, and each of them hands the driver's exception to :func:`translate`. The
driver's exception is kept as ``__cause__``.
"""

from __future__ import annotations

import sys

import apsw

from ...errors import ConflictError, DatabaseError, StorageError

__all__ = ["translate"]


def translate(
    exc: BaseException, *, kind: str | None = None, row_id: str | None = None
) -> StorageError:
    """The library error for a driver exception (a ``StorageError`` passes through).

    A uniqueness violation while writing a row of ``kind`` with id ``row_id`` is a
    :class:`ConflictError`; a busy or locked database (reported only once the busy timeout
    has run out) and every other driver error is a :class:`DatabaseError`.
    """
    if isinstance(exc, StorageError):
        return exc
    err: StorageError
    text = str(exc)
    if (
        isinstance(exc, apsw.ConstraintError)
        and kind is not None
        and row_id is not None
        and ("UNIQUE" in text or "PRIMARY KEY" in text)
    ):
        err = ConflictError(kind, row_id)
    elif isinstance(exc, apsw.ReadOnlyError):
        err = DatabaseError(f"the storage was opened read-only: {text}")
    elif isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        err = DatabaseError(f"the database stayed locked past the busy timeout: {text}")
    elif isinstance(exc, apsw.IOError) and "sqlite3" in sys.modules:
        # POSIX file locks belong to the process: when another SQLite library here (the
        # standard sqlite3 module) closes its connection to the file, ours are gone too.
        err = DatabaseError(
            f"IOError: {text}. If this process opened the database with another SQLite "
            "library (the sqlite3 module) and closed it, that released this storage's file "
            "locks: close the storage and open it again, and look at a live database from "
            "another process or through the storage's API"
        )
    else:
        err = DatabaseError(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    err.__cause__ = exc
    return err
