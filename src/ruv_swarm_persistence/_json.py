"""Strict JSON: what goes in comes back out unchanged, or the call is refused.

NaN and infinities, non-string keys, tuples, cycles, objects that are not JSON types and
integers outside the 64-bit range are a :class:`ValidationError` naming the field. ``orjson``
is used when installed; the standard library gives the same accept/reject decisions otherwise.

One rewrite is made, on purpose: a negative zero is stored as ``0.0`` (equal to it). PostgreSQL's
``jsonb`` has no negative zero, so keeping it on the other backends would make them disagree.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from .errors import ValidationError

_orjson: Any
try:  # pragma: no cover - depends on the platform
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

__all__ = ["MAX_DEPTH", "dumps", "loads", "HAVE_ORJSON"]

HAVE_ORJSON = _orjson is not None
MAX_DEPTH = 254
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _check_str(value: str, field: str) -> None:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValidationError(
                "contains a lone surrogate (not valid Unicode)", field=field
            ) from None


def _check(value: Any, field: str, depth: int, seen: set[int]) -> None:
    """Walk ``value`` and raise on the first thing that is not strict JSON.

    ``depth`` counts the arrays and objects around ``value``; at most ``MAX_DEPTH`` nest.
    """
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_str(value, field)
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError("integer outside the 64-bit range", field=field)
        return
    if isinstance(value, float):
        if type(value) is not float:
            # orjson refuses float subclasses; refuse them on both paths alike.
            raise ValidationError(f"{type(value).__name__} is not a plain float", field=field)
        if not math.isfinite(value):
            raise ValidationError(f"{value!r} is not valid JSON (NaN/Infinity)", field=field)
        return
    if type(value) is list or isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise _too_deep(field)
        if id(value) in seen:
            raise ValidationError("contains a cycle", field=field)
        seen.add(id(value))
        for item in value:
            _check(item, field, depth + 1, seen)
        seen.discard(id(value))
        return
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise _too_deep(field)
        if id(value) in seen:
            raise ValidationError("contains a cycle", field=field)
        seen.add(id(value))
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"object key {key!r} is not a string", field=field)
            _check_str(key, field)
            _check(item, field, depth + 1, seen)
        seen.discard(id(value))
        return
    raise ValidationError(f"{type(value).__name__} is not a JSON type", field=field)


def _too_deep(field: str) -> ValidationError:
    return ValidationError(f"nests arrays/objects deeper than {MAX_DEPTH} levels", field=field)


def _explain(value: Any, field: str) -> ValidationError:
    """Find the precise reason a value was refused (slow path, errors only)."""
    try:
        _check(value, field, 0, set())
    except ValidationError as exc:
        return exc
    return ValidationError("is not strict JSON", field=field)


_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _flat(value: Any) -> bool:
    """True when orjson provably encodes ``value`` without any rewrite.

    That is a scalar, or a dict or list whose items are scalars or lists of scalars, all of
    exact types (no subclasses) with finite floats. Most payloads are like this; for them the
    costlier decode-and-compare is skipped. Keys are checked by orjson itself.
    """
    t = type(value)
    if t in _SCALARS:
        return True
    if t is float:
        return bool(value - value == 0.0)  # NaN and ±inf give NaN
    if t is dict:
        items: Any = value.values()
    elif t is list:
        items = value
    else:
        return False
    for v in items:
        t = type(v)
        if t in _SCALARS or (t is float and v - v == 0.0):
            continue
        if t is not list:
            return False
        for x in v:
            tx = type(x)
            if tx in _SCALARS or (tx is float and x - x == 0.0):
                continue
            return False
    return True


def _positive_zeros(value: Any) -> Any:
    """``value`` with every ``-0.0`` replaced by ``0.0`` (containers copied, others kept)."""
    if type(value) is float:
        return value + 0.0  # -0.0 + 0.0 is 0.0; any other float is unchanged
    if type(value) is list or isinstance(value, list):
        return [_positive_zeros(v) for v in value]
    if isinstance(value, dict):
        return {k: _positive_zeros(v) for k, v in value.items()}
    return value


def dumps(value: Any, field: str, max_bytes: int) -> str:
    """Encode ``value`` as compact JSON text, refusing anything that would not round-trip.

    A negative zero is written as ``0.0``, as every backend can store it.
    """
    if _orjson is not None:
        try:
            raw = _orjson.dumps(value)
        except (TypeError, _orjson.JSONEncodeError):
            raise _explain(value, field) from None
        if b"-0.0" in raw:  # also matches -0.05 or a string: then nothing changes
            raw = _orjson.dumps(_positive_zeros(value))
        if not _flat(value):
            # orjson writes NaN as null and serialises tuples, datetimes, UUIDs and enums;
            # a round trip that changes the value exposes every such rewrite.
            if _orjson.loads(raw) != value:
                raise _explain(value, field)
            # orjson's own nesting limit differs between arrays and objects; enforce ours
            # where the text has enough brackets to possibly reach it (an exact pre-filter).
            if raw.count(b"[") + raw.count(b"{") >= MAX_DEPTH:
                _check(value, field, 0, set())
        if len(raw) > max_bytes:
            raise ValidationError(
                f"encodes to {len(raw)} bytes, more than the limit of {max_bytes}",
                field=field,
            )
        text: str = raw.decode()
        return text
    _check(value, field, 0, set())
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if "-0.0" in text:
        text = json.dumps(
            _positive_zeros(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    size = len(text.encode())
    if size > max_bytes:
        raise ValidationError(
            f"encodes to {size} bytes, more than the limit of {max_bytes}", field=field
        )
    return text


def loads(text: str | bytes) -> Any:
    """Decode JSON text written by :func:`dumps`."""
    if _orjson is not None:
        return _orjson.loads(text)
    return json.loads(text)
