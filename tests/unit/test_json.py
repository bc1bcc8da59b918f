"""Strict JSON: the same accept/reject decisions and values with and without orjson."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruv_swarm_persistence import _json
from ruv_swarm_persistence.errors import ValidationError
from ruv_swarm_persistence.models import TaskPriority

BIG = 1 << 20


@pytest.fixture(params=["orjson", "stdlib"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with orjson (when installed) and with the standard library."""
    if request.param == "stdlib":
        monkeypatch.setattr(_json, "_orjson", None)
    elif _json._orjson is None:  # pragma: no cover - orjson is in the default install
        pytest.fail("orjson is not installed; install it to compare both encoders")
    return str(request.param)


def _nest(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def _nest_objects(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def _cycle() -> Any:
    v: list[Any] = []
    v.append(v)
    return v


def _dict_cycle() -> Any:
    v: dict[str, Any] = {}
    v["a"] = [v]
    return v


ACCEPTED: dict[str, Callable[[], Any]] = {
    "null": lambda: None,
    "true": lambda: True,
    "zero": lambda: 0,
    "u64 max": lambda: 2**64 - 1,
    "i64 min": lambda: -(2**63),
    "float": lambda: 1.5,
    "negative zero": lambda: -0.0,
    "huge float": lambda: 1.7976931348623157e308,
    "tiny float": lambda: 5e-324,
    "empty string": lambda: "",
    "unicode": lambda: "ünïcødé ✓ \U0001f600 \u2028",
    "nul in a string": lambda: "a\x00b",
    "empty containers": lambda: [[], {}],
    "nested": lambda: {"a": [1, {"b": None, "c": [True, 2.5, "x"]}]},
    "254 arrays": lambda: _nest(254),
    "253 arrays around an empty one": lambda: _nest(253, leaf=[]),
    "254 objects": lambda: _nest_objects(254),
    "int enum": lambda: {"p": TaskPriority.High},
    "int subclass in a flat dict": lambda: {"n": _Count(3)},
    "many keys": lambda: {str(i): i for i in range(2000)},
}


class _Colour(enum.Enum):
    RED = "red"


class _Count(int):
    """An int subclass that is not an enum: its type is not exactly int."""


class _Ratio(float):
    """A float subclass."""


REJECTED: dict[str, Callable[[], Any]] = {
    "nan": lambda: float("nan"),
    "inf": lambda: float("inf"),
    "-inf": lambda: float("-inf"),
    "nan in a list": lambda: [1, float("nan")],
    "int key": lambda: {1: "x"},
    "bool key": lambda: {True: "x"},
    "none key": lambda: {None: "x"},
    "tuple": lambda: (1, 2),
    "tuple inside": lambda: {"a": (1,)},
    "set": lambda: {1},
    "frozenset": lambda: frozenset(),
    "list cycle": _cycle,
    "dict cycle": _dict_cycle,
    "datetime": lambda: datetime(2024, 1, 1, tzinfo=UTC),
    "bytes": lambda: b"x",
    "decimal": lambda: Decimal("1.5"),
    "complex": lambda: 1j,
    "object": object,
    "int above u64": lambda: 2**64,
    "int below i64": lambda: -(2**63) - 1,
    "255 arrays": lambda: _nest(255),
    "254 arrays around an empty one": lambda: _nest(254, leaf=[]),
    "255 objects": lambda: _nest_objects(255),
    "lone surrogate": lambda: "\ud800",
    "lone surrogate key": lambda: {"\udfff": 1},
    # Flat dicts take a fast path that skips the round trip: each rewrite must still be seen.
    "nan in a flat dict": lambda: {"a": 1, "b": float("nan")},
    "inf in a flat dict": lambda: {"b": float("inf")},
    "uuid in a flat dict": lambda: {"id": uuid.UUID(int=1)},
    "plain enum in a flat dict": lambda: {"s": _Colour.RED},
    "date in a flat dict": lambda: {"d": date(2024, 1, 1)},
    "float subclass in a flat dict": lambda: {"x": _Ratio(0.5)},
    "big int in a flat dict": lambda: {"n": 2**64},
    "nan in a list in a dict": lambda: {"xs": [1.0, float("nan")]},
    "tuple in a list in a dict": lambda: {"xs": [(1, 2)]},
    "uuid in a list": lambda: [uuid.UUID(int=2)],
    "enum in a list in a dict": lambda: {"xs": ["a", _Colour.RED]},
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_values_round_trip(encoder: str, case: str) -> None:
    value = ACCEPTED[case]()
    text = _json.dumps(value, "f", BIG)
    assert isinstance(text, str)
    assert _json.loads(text) == value
    assert json.loads(text) == value


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_values_name_the_field(encoder: str, case: str) -> None:
    with pytest.raises(ValidationError) as info:
        _json.dumps(REJECTED[case](), "task.payload", BIG)
    assert info.value.field == "task.payload"
    assert str(info.value).startswith("task.payload: ")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("nan", "NaN"),
        ("int key", "not a string"),
        ("tuple", "tuple"),
        ("list cycle", "cycle"),
        ("int above u64", "64-bit"),
        ("255 arrays", "254"),
        ("lone surrogate", "surrogate"),
    ],
)
def test_rejection_says_why(encoder: str, case: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        _json.dumps(REJECTED[case](), "f", BIG)


def test_both_encoders_write_interchangeable_text(monkeypatch: pytest.MonkeyPatch) -> None:
    value = {"a": [1, 2.5, "ü", None, {"b": False}], "c": -(2**63)}
    fast = _json.dumps(value, "f", BIG)
    monkeypatch.setattr(_json, "_orjson", None)
    slow = _json.dumps(value, "f", BIG)
    assert _json.loads(fast) == _json.loads(slow) == value
    assert len(fast.encode()) == len(slow.encode())


@pytest.mark.parametrize("limit", [10, 64, 1000])
def test_size_limit_counts_utf8_bytes(encoder: str, limit: int) -> None:
    # ["…"] is four bytes around the string; "é" is two bytes.
    room = limit - 4
    assert _json.dumps(["x" * room], "f", limit)
    with pytest.raises(ValidationError, match=f"limit of {limit}"):
        _json.dumps(["x" * (room + 1)], "f", limit)
    if room % 2 == 0:
        assert _json.dumps(["é" * (room // 2)], "f", limit)
        with pytest.raises(ValidationError, match="bytes"):
            _json.dumps(["é" * (room // 2) + "x"], "f", limit)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats()
    | st.text(max_size=10)
)
_anything = st.recursive(
    _scalars | st.tuples(st.integers()) | st.binary(max_size=2),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(value=_anything)
def test_decisions_agree_on_arbitrary_values(value: Any) -> None:
    def decide() -> tuple[bool, Any]:
        try:
            return True, _json.loads(_json.dumps(value, "f", BIG))
        except ValidationError:
            return False, None

    fast = decide()
    saved = _json._orjson
    _json._orjson = None
    try:
        slow = decide()
    finally:
        _json._orjson = saved
    assert fast == slow
    if fast[0]:
        assert fast[1] == value


# --- without orjson: the fast path for flat objects against the full walk ------------------------

_tricky_text = st.text(st.sampled_from('aZ\x00é✓\U0001f600\ud800\udfff\u2028"'), max_size=5)
_flat_items = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**65)
    | st.sampled_from([2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.floats()
    | st.text(max_size=8)
    | _tricky_text
)
# Mostly flat objects of scalars; now and then something the fast path must leave alone.
_odd_items = st.sampled_from(
    [[1], (1,), {"a": 1}, _Count(3), _Ratio(0.5), TaskPriority.High, _Colour.RED, b"x"]
)
_flat_objects = st.dictionaries(
    st.text(max_size=6) | _tricky_text,
    _flat_items,
    max_size=6,
) | st.dictionaries(
    st.text(max_size=3) | _tricky_text | st.integers() | st.none(),
    _flat_items | _odd_items,
    max_size=4,
)


def _outcome(encode: Callable[[], str]) -> tuple[str, str]:
    try:
        return "accepted", encode()
    except ValidationError as exc:
        return "rejected", f"{exc.field}|{exc}"


@given(value=_flat_objects, limit=st.sampled_from([BIG, 8, 20, 40]))
def test_flat_fast_path_agrees_with_the_full_walk(value: Any, limit: int) -> None:
    saved = _json._orjson
    _json._orjson = None
    try:
        fast = _outcome(lambda: _json.dumps(value, "f", limit))
        full = _outcome(lambda: _json._dumps_checked(value, "f", limit))
    finally:
        _json._orjson = saved
    assert fast == full
    if fast[0] == "accepted":
        assert json.loads(fast[1]) == value
        plain = _json._positive_zeros(value)
        assert fast[1] == json.dumps(plain, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [
        {"i": 7, "agent": "worker-7", "ok": True, "none": None, "ratio": 0.5, "big": 2**64 - 1},
        {"ünï": "cødé ✓ \U0001f600", "min": -(2**63)},
        {},
    ],
)
def test_flat_objects_skip_the_walk(monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    def walk(*args: Any) -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(_json, "_orjson", None)
    monkeypatch.setattr(_json, "_check", walk)
    assert json.loads(_json.dumps(value, "f", BIG)) == value


@pytest.mark.parametrize(
    "value",
    [{"xs": [1]}, {"p": TaskPriority.High}, {"r": _Ratio(0.5)}, {1: "x"}, {"n": 2**64}, [1]],
    ids=["list", "enum", "float subclass", "int key", "big int", "not a dict"],
)
def test_anything_else_is_walked(monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    def walk(*args: Any) -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(_json, "_orjson", None)
    monkeypatch.setattr(_json, "_check", walk)
    with pytest.raises(AssertionError, match="walked"):
        _json.dumps(value, "f", BIG)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"s": "\ud800"}, "surrogate"),
        ({"\udfff": 1}, "surrogate"),
        ({"x": float("nan")}, "NaN"),
        ({"x": float("-inf")}, "NaN"),
        ({"n": -(2**63) - 1}, "64-bit"),
        ({None: 1}, "not a string"),
    ],
)
def test_flat_objects_are_refused_for_the_same_reasons(
    monkeypatch: pytest.MonkeyPatch, value: Any, reason: str
) -> None:
    monkeypatch.setattr(_json, "_orjson", None)
    with pytest.raises(ValidationError, match=reason) as info:
        _json.dumps(value, "event.payload", BIG)
    assert info.value.field == "event.payload"
