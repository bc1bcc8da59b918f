"""The options of :meth:`SqliteStorage.open <.storage.SqliteStorage.open>`, checked once.

Keyword arguments and URL query parameters arrive here alike; URL values are text and are
parsed (``?synchronous=full&busy_timeout=10000&read_only=true``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from ... import codec, rules
from ...codec import Limits
from ...errors import ValidationError
from ...retention import parse_retention

__all__ = ["Options"]

_SYNCHRONOUS: Final = {"normal": "NORMAL", "full": "FULL"}
_OPTION_NAMES: Final = frozenset(
    {
        "readers", "min_idle_readers", "connection_timeout", "idle_timeout", "synchronous",
        "busy_timeout", "max_batch", "lease", "clock", "retry_policy", "limits",
        "transaction_timeout", "migrate", "read_only", "retention",
    }
)  # fmt: skip


class Options:
    """Every option of :meth:`SqliteStorage.open`, checked; URL strings are parsed."""

    __slots__ = (
        "busy_timeout_ms",
        "clock",
        "connection_timeout_s",
        "idle_timeout_s",
        "lease_us",
        "limits",
        "max_batch",
        "migrate",
        "min_idle_readers",
        "read_only",
        "readers",
        "retention",
        "retry_policy",
        "synchronous",
        "transaction_timeout_us",
    )

    def __init__(self, options: dict[str, Any]) -> None:
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise ValidationError(
                f"unknown option(s) {', '.join(sorted(unknown))}; known: "
                + ", ".join(sorted(_OPTION_NAMES)),
                field="options",
            )
        o = options
        self.readers = _int(o.get("readers", 4), "readers", minimum=1)
        self.min_idle_readers = _int(o.get("min_idle_readers", 1), "min_idle_readers", minimum=0)
        self.connection_timeout_s = _seconds(o.get("connection_timeout", 30), "connection_timeout")
        idle = o.get("idle_timeout", 600)
        self.idle_timeout_s = None if idle is None else _seconds(idle, "idle_timeout")
        sync = o.get("synchronous", "normal")
        if not isinstance(sync, str) or sync.lower() not in _SYNCHRONOUS:
            raise ValidationError(f"{sync!r} is not 'normal' or 'full'", field="synchronous")
        self.synchronous = _SYNCHRONOUS[sync.lower()]
        self.busy_timeout_ms = _int(o.get("busy_timeout", 5000), "busy_timeout", minimum=0)
        self.max_batch = _int(o.get("max_batch", 512), "max_batch", minimum=1)
        self.read_only = codec.flag_arg(o.get("read_only", False), "read_only")
        # A read-only storage never migrates: migrating writes.
        self.migrate = codec.flag_arg(o.get("migrate", True), "migrate") and not self.read_only
        self.lease_us = codec.duration_arg(_number(o.get("lease", 30), "lease"), "lease")
        self.transaction_timeout_us = codec.duration_arg(
            _number(o.get("transaction_timeout", 30), "transaction_timeout"),
            "transaction_timeout",
        )
        clock = o.get("clock")
        if clock is not None and not callable(clock):
            raise ValidationError("must be a callable returning a datetime", field="clock")
        self.clock: Callable[[], datetime] | None = clock
        policy = o.get("retry_policy")
        policy = rules.RetryPolicy() if policy is None else policy
        if not isinstance(policy, rules.RetryPolicy):
            raise ValidationError("must be a RetryPolicy", field="retry_policy")
        self.retry_policy = policy
        limits = o.get("limits")
        limits = codec.DEFAULT_LIMITS if limits is None else limits
        if not isinstance(limits, Limits):
            raise ValidationError("must be a Limits", field="limits")
        self.limits = limits
        self.retention = parse_retention(o.get("retention"))


def _number(value: Any, field: str) -> Any:
    """A URL option's text as a number (other values pass through to their own check)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not a number", field=field) from None
    return value


def _int(value: Any, field: str, *, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not an integer", field=field) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"must be an integer of at least {minimum}", field=field)
    return value


def _seconds(value: Any, field: str) -> float:
    return codec.duration_arg(_number(value, field), field) / 1e6
