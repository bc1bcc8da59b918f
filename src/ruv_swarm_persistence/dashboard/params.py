"""Query parameters of the JSON API, parsed strictly: a bad value is a 400, never a 500."""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime

from starlette.requests import Request

__all__ = ["BadRequest", "choices", "float_param", "int_param", "text_param", "time_param"]

#: The longest text a parameter may carry (ids are at most 256 characters).
MAX_TEXT = 1024


class BadRequest(Exception):
    """A malformed request: answered 400 with the message."""


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"{name}: give it once")
    return values[0] if values else None


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer in ``[low, high]``."""
    raw = _one(request, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise BadRequest(f"{name}: expects an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}")
    return value


def float_param(
    request: Request, name: str, default: float | None, low: float, high: float
) -> float | None:
    """A finite number in ``[low, high]``."""
    raw = _one(request, name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name}: expects a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"{name}: must be a number between {low:g} and {high:g}")
    return value


#: Times the API accepts: from 1970 to 9999, as epoch seconds.
_MAX_EPOCH = 253_402_300_799.0


def time_param(request: Request, name: str) -> datetime | None:
    """A time: epoch seconds, or ISO 8601 (without an offset: UTC)."""
    raw = _one(request, name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise BadRequest(f"{name}: expects epoch seconds or ISO 8601") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if not math.isfinite(value) or not 0 <= value <= _MAX_EPOCH:
        raise BadRequest(f"{name}: epoch seconds between 0 and {_MAX_EPOCH:.0f}")
    return datetime.fromtimestamp(value, UTC)


def text_param(request: Request, name: str) -> str | None:
    """A non-empty text of at most :data:`MAX_TEXT` characters, or None when absent."""
    raw = _one(request, name)
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_TEXT or "\x00" in raw:
        raise BadRequest(f"{name}: at most {MAX_TEXT} characters, no NUL")
    return raw


def choices(request: Request, name: str, allowed: Collection[str] | None = None) -> list[str]:
    """Every value given for ``name`` (repeatable), each one of ``allowed`` if given."""
    values = [v for v in request.query_params.getlist(name) if v != ""]
    for v in values:
        if len(v) > MAX_TEXT or "\x00" in v:
            raise BadRequest(f"{name}: at most {MAX_TEXT} characters, no NUL")
        if allowed is not None and v not in allowed:
            raise BadRequest(f"{name}: {v[:40]!r} is not one of {', '.join(sorted(allowed))}")
    return values
