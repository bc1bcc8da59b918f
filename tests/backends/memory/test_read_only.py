"""A memory storage opened read-only refuses writes, as a read-only SQL storage does."""

from __future__ import annotations

import pytest

from ruv_swarm_persistence import DatabaseError, EventModel, init_storage
from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.errors import ValidationError


async def test_read_only_refuses_writes() -> None:
    async with init_storage("memory://?read_only=true") as storage:
        with pytest.raises(DatabaseError, match="read-only"):
            await storage.store_event(EventModel.new("x", {}))
        assert await storage.read_events(0) == []


def test_flags_must_be_booleans() -> None:
    with pytest.raises(ValidationError):
        MemoryStorage(read_only="yes")  # type: ignore[arg-type]
