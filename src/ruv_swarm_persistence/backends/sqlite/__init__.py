"""The SQLite backend: the embedded default (``apsw``, WAL, group commit, a reader pool)."""

from __future__ import annotations

from typing import Any

from ...urls import ParsedUrl, not_in_browser

not_in_browser("the sqlite backend", __name__)

from .storage import SqliteStorage, SqliteStorageBuilder, SqliteTransaction  # noqa: E402

__all__ = ["SqliteStorage", "SqliteStorageBuilder", "SqliteTransaction", "open_url"]


async def open_url(parsed: ParsedUrl, options: dict[str, Any]) -> SqliteStorage:
    """Open the SQLite storage a ``sqlite:///…`` URL or a file path names.

    Query parameters and keyword options are the options of :meth:`SqliteStorage.open`;
    URL values are text and parsed here (``?synchronous=full&busy_timeout=10000``).
    """
    return await SqliteStorage.open(parsed.location, **options)
