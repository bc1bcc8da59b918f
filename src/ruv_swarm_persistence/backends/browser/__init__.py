"""The browser backend: the swarm in IndexedDB, for Python running in a page (Pyodide).

``IndexedDBStorage`` (``init_storage("indexeddb://NAME")``, and ``init_storage()`` under
Pyodide) keeps the swarm in the memory engine and writes every committed change through to
IndexedDB before the call returns (:mod:`.engine`); :mod:`.idb` is the bridge to the
browser's IndexedDB.
"""

from __future__ import annotations

from typing import Any

from ...urls import ParsedUrl
from .engine import SCHEMA_VERSION, BrowserEngine
from .storage import IndexedDBStorage, IndexedDBTransaction, delete_database
from .storage import open_url as _open_url

__all__ = [
    "SCHEMA_VERSION",
    "BrowserEngine",
    "IndexedDBStorage",
    "IndexedDBTransaction",
    "delete_database",
    "open_url",
]


async def open_url(parsed: ParsedUrl, options: dict[str, Any]) -> IndexedDBStorage:
    """Open the storage an ``indexeddb://NAME`` URL names; query parameters are options
    (``?durability=strict&lease=60``)."""
    return await _open_url(parsed, options)
