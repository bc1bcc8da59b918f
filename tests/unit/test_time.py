"""Microsecond UTC times and UUIDv7 ids."""

from __future__ import annotations

import re
import time
import types
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruv_swarm_persistence import _time
from ruv_swarm_persistence._time import EPOCH, from_us, to_us, utc_now, uuid7

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_uuid7_is_a_valid_version_7_uuid() -> None:
    for _ in range(200):
        text = uuid7()
        assert UUID7.match(text), text
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_uuid7_carries_the_creation_millisecond(
    monkeypatch: pytest.MonkeyPatch, own_clock_state: None
) -> None:
    # Forget earlier ids: a burst of them may have borrowed milliseconds from the future.
    monkeypatch.setattr(_time, "_last_ms", 0)
    before = time.time_ns() // 1_000_000
    text = uuid7()
    after = time.time_ns() // 1_000_000
    ms = int(text.replace("-", "")[:12], 16)
    assert before <= ms <= after


def test_uuid7_is_monotonic_within_the_process() -> None:
    ids = [uuid7() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


@pytest.fixture
def own_clock_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore the generator's state afterwards, so a fake future clock does not leak."""
    monkeypatch.setattr(_time, "_last_ms", _time._last_ms)
    monkeypatch.setattr(_time, "_counter", _time._counter)


def test_uuid7_stays_ordered_when_the_clock_stands_still(
    monkeypatch: pytest.MonkeyPatch, own_clock_state: None
) -> None:
    frozen = types.SimpleNamespace(time_ns=lambda: 4_102_444_800_000_000_000)  # 2100-01-01
    monkeypatch.setattr(_time, "time", frozen)
    # More ids than the 12-bit counter holds in one millisecond.
    ids = [uuid7() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(UUID7.match(i) for i in ids)


def test_uuid7_stays_ordered_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch, own_clock_state: None
) -> None:
    now = [4_133_980_800_000_000_000]  # 2101-01-01

    def time_ns() -> int:
        now[0] -= 1_000_000  # a millisecond backwards at every call
        return now[0]

    monkeypatch.setattr(_time, "time", types.SimpleNamespace(time_ns=time_ns))
    ids = [uuid7() for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_utc_now_is_aware_utc() -> None:
    now = utc_now()
    assert now.tzinfo is UTC
    assert abs(now.timestamp() - time.time()) < 3600


@pytest.mark.parametrize(
    ("when", "us"),
    [
        (EPOCH, 0),
        (datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 1),
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), -1),
        (datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC), 1_714_564_800_123_456),
        (
            datetime(2024, 5, 1, 14, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=2))),
            1_714_564_800_123_456,
        ),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), 253_402_300_799_999_999),
        (datetime(1, 1, 1, tzinfo=UTC), -62_135_596_800_000_000),
    ],
)
def test_to_us_and_from_us_are_exact(when: datetime, us: int) -> None:
    assert to_us(when) == us
    back = from_us(us)
    assert back == when
    assert back.tzinfo is UTC


@given(us=st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999))
def test_from_us_to_us_round_trip(us: int) -> None:
    assert to_us(from_us(us)) == us


@given(
    when=st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-11)), timezone.max]),
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
    )
)
def test_to_us_matches_float_free_arithmetic(when: datetime) -> None:
    delta = when - EPOCH
    assert to_us(when) == delta // timedelta(microseconds=1)
    assert from_us(to_us(when)) == when


def test_now_us_agrees_with_the_system_clock() -> None:
    before = time.time_ns() // 1000
    got = _time.now_us()
    after = time.time_ns() // 1000
    assert before <= got <= after
