"""Strict JSON: what goes in comes back out unchanged, or the call is refused.

NaN and infinities, non-string keys, tuples, cycles, objects that are not JSON types and
integers outside the 64-bit range are a :class:`ValidationError` naming the field. ``orjson``
is used when installed; the standard library gives the same accept/reject decisions otherwise.

One rewrite is made, on purpose: a negative zero is stored as ``0.0`` (equal to it). PostgreSQL's
``jsonb`` has no negative zero, so keeping it on the other backends would make them disagree.

Without orjson (Pyodide, say) every value is walked in Python before ``json`` encodes it,
except the most common payload, a flat object of scalars (:func:`_flat_scalars`), which one
cheap pass over its items admits; its strings are checked by the UTF-8 encoding that measures
the text. A property test holds both paths to the same decisions and text.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable
from typing import Any, Final

from .errors import ValidationError

_orjson: Any
try:  # pragma: no cover - depends on the platform
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

__all__ = ["MAX_DEPTH", "dumps", "loads", "HAVE_ORJSON"]

HAVE_ORJSON = _orjson is not None
#: Datetimes are not JSON: orjson is told not to format them (they are refused as any other
#: type), which also keeps it from calling the time zone, whose failure crashed it (3.13).
_OPTIONS: Final = _orjson.OPT_PASSTHROUGH_DATETIME if _orjson is not None else 0
MAX_DEPTH = 254
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _make_encoder() -> Callable[[Any], str]:
    """Compact JSON text, non-ASCII kept, NaN refused: ``json.dumps`` with those options.

    ``json.dumps`` builds a new encoder at every call given options; this one is built once.
    Where the C accelerator exists it is called directly, without the cycle check (the
    callers have ruled cycles out), which is what ``JSONEncoder.encode`` would end up doing.
    """
    options = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False}
    encoder = json.JSONEncoder(**options)  # type: ignore[arg-type]
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or quote is None:  # pragma: no cover - CPython and Pyodide have _json
        return encoder.encode
    chunks = make(None, encoder.default, quote, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_encode: Final = _make_encoder()


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


def _flat_scalars(value: Any) -> bool:
    """True when ``value`` is a dict of ``str`` keys to exact ``str``, ``bool``, ``None``,
    finite ``float`` and 64-bit ``int`` values: strict JSON but for lone surrogates, which
    the caller finds by encoding the text. Anything else goes to :func:`_check`."""
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if type(key) is not str:
            return False
        t = type(item)
        if t is str or t is bool or item is None:
            continue
        if t is int:
            if _INT_MIN <= item <= _INT_MAX:
                continue
            return False
        if t is not float or item - item != 0.0:  # NaN and ±inf give NaN
            return False
    return True


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
            raw = _orjson.dumps(value, option=_OPTIONS)
        except (TypeError, _orjson.JSONEncodeError):
            raise _explain(value, field) from None
        if b"-0.0" in raw:  # also matches -0.05 or a string: then nothing changes
            raw = _orjson.dumps(_positive_zeros(value), option=_OPTIONS)
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
            raise _too_big(len(raw), max_bytes, field)
        text: str = raw.decode()
        return text
    if not _flat_scalars(value):
        return _dumps_checked(value, field, max_bytes)
    text = _encode(value)
    if "-0.0" in text:  # also matches -0.05 or a string: then nothing changes
        text = _encode(_positive_zeros(value))
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError:  # a lone surrogate in a key or a string
            raise _explain(value, field) from None
    if size > max_bytes:
        raise _too_big(size, max_bytes, field)
    return text


def _dumps_checked(value: Any, field: str, max_bytes: int) -> str:
    """:func:`dumps` without orjson for any value: walked whole by :func:`_check` first."""
    _check(value, field, 0, set())
    text = _encode(value)
    if "-0.0" in text:
        text = _encode(_positive_zeros(value))
    size = len(text.encode())
    if size > max_bytes:
        raise _too_big(size, max_bytes, field)
    return text


def _too_big(size: int, max_bytes: int, field: str) -> ValidationError:
    return ValidationError(
        f"encodes to {size} bytes, more than the limit of {max_bytes}", field=field
    )


def loads(text: str | bytes) -> Any:
    """Decode JSON text written by :func:`dumps`."""
    if _orjson is not None:
        return _orjson.loads(text)
    return json.loads(text)
