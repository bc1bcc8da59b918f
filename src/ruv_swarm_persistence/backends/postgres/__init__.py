"""The PostgreSQL backend (needs ``pip install 'ruv-swarm-persistence[postgres]'``).

``init_storage("postgresql://user@host:5432/db?schema=swarm1&max_size=20")`` opens it; URL
parameters are the options of :meth:`PostgresStorage.open` (``schema``, ``min_size``,
``max_size``, ``command_timeout``, ``max_inactive_connection_lifetime``, ``acquire_timeout``,
``lock_timeout``, ``idle_in_transaction_timeout``, ``lease``, ``transaction_timeout``), plus
libpq's connection parameters such as ``sslmode`` and ``connect_timeout``, which are passed
to the server connection.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from ...urls import ParsedUrl, not_in_browser

not_in_browser("the postgresql backend", __name__)

# Imported here so a missing driver names the extra to install.
import asyncpg  # noqa: E402, F401

from .options import url_options  # noqa: E402
from .storage import PostgresStorage, PostgresTransaction  # noqa: E402

__all__ = ["PostgresStorage", "PostgresTransaction", "open_url"]


async def open_url(parsed: ParsedUrl, options: dict[str, Any]) -> PostgresStorage:
    """Open a ``postgresql://`` URL; its query parameters are options (strings parsed)."""
    kwargs, passthrough = url_options(options)
    dsn = parsed.location
    if passthrough:
        dsn += "?" + urlencode(passthrough)
    return await PostgresStorage.open(dsn, **kwargs)
