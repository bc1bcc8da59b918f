"""Time and id helpers: microsecond UTC times and time-ordered UUIDv7 ids."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

__all__ = ["EPOCH", "from_us", "now_us", "to_us", "utc_now", "uuid7"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def now_us() -> int:
    """The current time in integer microseconds since the epoch."""
    return time.time_ns() // 1000


def to_us(value: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch as an aware UTC datetime (exact)."""
    return EPOCH + us * _US


_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A UUIDv7 string: 48-bit millisecond time, then a counter and random bits.

    Ids made in the same millisecond by this process sort in creation order (a 12-bit
    counter seeded randomly each millisecond), so B-tree inserts stay append-mostly.
    """
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    if ms > _last_ms:
        _last_ms = ms
        _counter = rand >> 69  # 11 random bits: room to count up within the millisecond
    else:
        ms = _last_ms
        _counter += 1
        if _counter > 0xFFF:
            _last_ms += 1
            ms = _last_ms
            _counter = 0
    rand_b = rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{ms:012x}7{_counter:03x}{0x8000_0000_0000_0000 | rand_b:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
