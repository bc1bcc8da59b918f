"""The PostgreSQL backend's options: checked once, before anything connects.

:meth:`PostgresStorage.open <.storage.PostgresStorage.open>` takes them as keyword arguments;
:func:`url_options` reads the same ones from a ``postgresql://`` URL's query, where every
value is text, and sets libpq's connection parameters apart for the server connection.
Refusals are :class:`ValidationError` naming the option.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from ...codec import flag_arg
from ...errors import ValidationError
from . import sql

__all__ = [
    "STANDARD_OPTIONS",
    "PoolOptions",
    "application_name",
    "channel_for",
    "check_dsn",
    "check_flags",
    "check_schema",
    "check_standard",
    "connect_options",
    "pool_options",
    "setting_ms",
    "url_options",
]


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Connection pool settings (keyword arguments or URL parameters)."""

    min_size: int = 1
    max_size: int = 10
    command_timeout: float | None = None
    max_inactive_connection_lifetime: float = 300.0
    acquire_timeout: float = 30.0
    #: The server's ``lock_timeout`` (seconds; ``None``: wait for locks as long as it takes).
    lock_timeout: float | None = None
    #: The server's ``idle_in_transaction_session_timeout`` (seconds; 0: off). ``None`` until
    #: :func:`pool_options` derives it from the transaction timeout.
    idle_in_transaction_timeout: float | None = None


#: How much longer than its own timeout a transaction may sit idle before the server ends
#: its session: the storage rolls it back at its timeout, so only a client that stopped
#: running (frozen, suspended, stuck) reaches this, and its locks are then freed.
IDLE_MARGIN_S: Final = 10.0
#: The longest time a server setting in milliseconds can hold (a 32-bit count of them).
MAX_SETTING_S: Final = 2_147_483


#: Options every backend takes, handed to the storage's constructor as they are.
STANDARD_OPTIONS: Final = frozenset(
    {"clock", "lease", "retry_policy", "limits", "transaction_timeout", "retention"}
)


def check_schema(schema: Any) -> str:
    """A schema name: a non-empty string of at most 63 bytes without NUL, not ``pg_…``."""
    if not isinstance(schema, str) or not schema:
        raise ValidationError("must be a non-empty string", field="schema")
    if "\x00" in schema or len(schema.encode()) > 63:
        raise ValidationError("must be at most 63 bytes without NUL", field="schema")
    if schema.startswith("pg_"):
        raise ValidationError("the prefix pg_ is reserved for system schemas", field="schema")
    return schema


def application_name(schema: str, role: str = "pool") -> str:
    """How this storage's connections show in ``pg_stat_activity`` (at most 63 bytes)."""
    return f"ruv-swarm {role} {schema}".encode()[:63].decode(errors="ignore")


def channel_for(schema: str) -> str:
    """The notification channel of a schema (short enough for any schema name)."""
    return "ruv_swarm_" + hashlib.sha1(schema.encode()).hexdigest()[:16]


def check_flags(*, migrate: Any, read_only: Any) -> None:
    """``migrate`` and ``read_only`` are booleans."""
    for flag, value in (("migrate", migrate), ("read_only", read_only)):
        if not isinstance(value, bool):  # keywords take bools; URL text is parsed below
            raise ValidationError(f"{value!r} is not true or false", field=flag)


def pool_options(
    *,
    min_size: Any,
    max_size: Any,
    command_timeout: Any,
    max_inactive_connection_lifetime: Any,
    acquire_timeout: Any,
    lock_timeout: Any = None,
    idle_in_transaction_timeout: Any = None,
    transaction_timeout_s: float = 30.0,
) -> PoolOptions:
    """The pool's settings, checked in this order; numbers may be given as text.

    ``idle_in_transaction_timeout`` defaults to ``transaction_timeout_s`` plus
    :data:`IDLE_MARGIN_S`.
    """
    options = PoolOptions(
        min_size=_int_option(min_size, "min_size", minimum=0),
        max_size=_int_option(max_size, "max_size", minimum=1),
        command_timeout=(
            None if command_timeout is None else _float_option(command_timeout, "command_timeout")
        ),
        max_inactive_connection_lifetime=_float_option(
            max_inactive_connection_lifetime, "max_inactive_connection_lifetime", zero=True
        ),
        acquire_timeout=_float_option(acquire_timeout, "acquire_timeout"),
        lock_timeout=(
            None if lock_timeout is None else _float_option(lock_timeout, "lock_timeout")
        ),
        idle_in_transaction_timeout=(
            transaction_timeout_s + IDLE_MARGIN_S
            if idle_in_transaction_timeout is None
            else _float_option(
                idle_in_transaction_timeout, "idle_in_transaction_timeout", zero=True
            )
        ),
    )
    if options.min_size > options.max_size:
        raise ValidationError("must not exceed max_size", field="min_size")
    for name in ("lock_timeout", "idle_in_transaction_timeout"):
        value = getattr(options, name)
        if value is not None and value > MAX_SETTING_S:
            raise ValidationError(f"must be at most {MAX_SETTING_S:,} seconds", field=name)
    return options


def check_standard(options: dict[str, Any]) -> None:
    """Refuse keyword options that are neither this backend's nor the standard ones."""
    unknown = set(options) - STANDARD_OPTIONS
    if unknown:
        raise ValidationError(f"unknown option(s): {', '.join(sorted(unknown))}", field="options")


def check_dsn(dsn: Any) -> str:
    """The server's address: a non-empty string (asyncpg reads the rest)."""
    if not isinstance(dsn, str) or not dsn:
        raise ValidationError("must be a postgresql:// URL", field="dsn")
    return dsn


def connect_options(schema: str, pool: PoolOptions, *, read_only: bool) -> dict[str, Any]:
    """What every connection of the storage is opened with (the listener's too)."""
    settings = {
        "search_path": sql.quote_ident(schema),
        "application_name": application_name(schema),
    }
    if read_only:
        settings["default_transaction_read_only"] = "on"
    if pool.lock_timeout is not None:
        settings["lock_timeout"] = setting_ms(pool.lock_timeout)
    if pool.idle_in_transaction_timeout is not None:
        settings["idle_in_transaction_session_timeout"] = setting_ms(
            pool.idle_in_transaction_timeout
        )
    return {"server_settings": settings, "command_timeout": pool.command_timeout}


#: The longest time setting the server takes (a 32-bit count of milliseconds, ~24.8 days).
MAX_SETTING_MS: Final = 2**31 - 1


def setting_ms(seconds: float) -> str:
    """Seconds as a server setting in whole milliseconds (at least 1 unless 0, which is off).

    Longer than the server takes is its longest: the limit then applies a little earlier
    than asked, rather than the setting being refused (which failed the call).
    """
    return f"{min(max(1, round(seconds * 1000)), MAX_SETTING_MS) if seconds else 0}ms"


def _int_option(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not an integer", field=name) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"must be an integer of at least {minimum}", field=name)
    return value


def _float_option(value: Any, name: str, *, zero: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not a number of seconds", field=name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("must be a number of seconds", field=name)
    if not (value > 0 or (zero and value == 0)) or value != value or value == float("inf"):
        raise ValidationError("must be a positive number of seconds", field=name)
    return float(value)


# --- options in a URL ------------------------------------------------------------------------

#: Options that are numbers of seconds or counts when they come from a URL.
_NUMERIC: Final = {
    "min_size": int,
    "max_size": int,
    "command_timeout": float,
    "max_inactive_connection_lifetime": float,
    "acquire_timeout": float,
    "lock_timeout": float,
    "idle_in_transaction_timeout": float,
    "lease": float,
    "transaction_timeout": float,
}
_OWN: Final = {
    *_NUMERIC, "schema", "clock", "retry_policy", "limits", "migrate", "read_only", "retention"
}  # fmt: skip
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


def url_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A URL's query parameters as keyword options of ``open``, and libpq's parameters.

    Text is parsed where an option is a number or a flag (``command_timeout=none`` turns
    the timeout off); an unknown parameter is refused, naming the known ones.
    """
    kwargs: dict[str, Any] = {}
    passthrough: dict[str, str] = {}
    unknown = []
    for key, value in options.items():
        if key in _LIBPQ:
            passthrough[key] = str(value)
        elif key not in _OWN:
            unknown.append(key)
        elif key in ("migrate", "read_only"):
            kwargs[key] = flag_arg(value, key)
        elif key in _NUMERIC and isinstance(value, str):
            if value.lower() == "none" and key in ("command_timeout", "lock_timeout"):
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
    return kwargs, passthrough
