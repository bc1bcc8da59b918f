"""The PostgreSQL backend (needs ``pip install 'ruv-swarm-persistence[postgres]'``).

``init_storage("postgresql://user@host:5432/db?schema=swarm1&max_size=20")`` opens it; URL
parameters are the options of :meth:`PostgresStorage.open` (``schema``, ``min_size``,
``max_size``, ``command_timeout``, ``max_inactive_connection_lifetime``, ``acquire_timeout``,
``lease``, ``transaction_timeout``), plus libpq's connection parameters such as ``sslmode``
and ``connect_timeout``, which are passed to the server connection.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

import asyncpg  # noqa: F401 - imported here so a missing driver names the extra to install

from ...errors import ValidationError
from ...urls import ParsedUrl
from .storage import PostgresStorage, PostgresTransaction

__all__ = ["PostgresStorage", "PostgresTransaction", "open_url"]

#: Options that are numbers of seconds or counts when they come from a URL.
_NUMERIC: Final = {
    "min_size": int,
    "max_size": int,
    "command_timeout": float,
    "max_inactive_connection_lifetime": float,
    "acquire_timeout": float,
    "lease": float,
    "transaction_timeout": float,
}
_BOOLEAN: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_OWN: Final = {*_NUMERIC, "schema", "clock", "retry_policy", "limits", "migrate", "read_only"}
#: libpq connection parameters handed to the server connection untouched.
_LIBPQ: Final = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcrl",
        "connect_timeout",
        "application_name",
        "target_session_attrs",
        "passfile",
        "krbsrvname",
        "gsslib",
    }
)


async def open_url(parsed: ParsedUrl, options: dict[str, Any]) -> PostgresStorage:
    """Open a ``postgresql://`` URL; its query parameters are options (strings parsed)."""
    kwargs: dict[str, Any] = {}
    passthrough: dict[str, str] = {}
    unknown = []
    for key, value in options.items():
        if key in _LIBPQ:
            passthrough[key] = str(value)
        elif key not in _OWN:
            unknown.append(key)
        elif key in ("migrate", "read_only") and isinstance(value, str):
            if value.lower() not in _BOOLEAN:
                raise ValidationError(f"{value!r} is not true or false", field=key)
            kwargs[key] = _BOOLEAN[value.lower()]
        elif key in _NUMERIC and isinstance(value, str):
            if value.lower() == "none" and key == "command_timeout":
                kwargs[key] = None
                continue
            try:
                kwargs[key] = _NUMERIC[key](value)
            except ValueError:
                raise ValidationError(f"{value!r} is not a number", field=key) from None
        else:
            kwargs[key] = value
    if unknown:
        known = ", ".join(sorted(_OWN - {"clock", "retry_policy", "limits"}))
        raise ValidationError(
            f"unknown postgresql:// option(s): {', '.join(sorted(unknown))} (known: {known}, "
            "and libpq connection parameters such as sslmode)",
            field="url",
        )
    dsn = parsed.location
    if passthrough:
        dsn += "?" + urlencode(passthrough)
    return await PostgresStorage.open(dsn, **kwargs)
