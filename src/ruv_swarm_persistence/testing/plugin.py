"""Fixtures of the conformance suite (``clock``, ``storage``).

The runner provides ``storage_factory``; see :mod:`ruv_swarm_persistence.testing`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ..storage import Storage
from . import FakeClock

__all__ = ["StorageFactory", "clock", "storage"]

StorageFactory = Callable[..., Awaitable[Storage]]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock the storage under test reads; tests advance it explicitly."""
    return FakeClock()


@pytest.fixture
async def storage(storage_factory: StorageFactory, clock: FakeClock) -> Storage:
    """A fresh, empty storage driven by the fake ``clock`` (the factory closes it)."""
    return await storage_factory(clock=clock)


def options(**kw: Any) -> dict[str, Any]:
    """Spell out factory options (helps readers see what a test changes)."""
    return kw
