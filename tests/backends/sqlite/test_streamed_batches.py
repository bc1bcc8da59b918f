"""Large ``store_events`` batches are inserted on the writer's thread, all or none."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruv_swarm_persistence import ConflictError, EventModel, ValidationError
from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.backends.sqlite.engine import HEAVY_ROWS

N = 2 * HEAVY_ROWS + 500  # well past the size sent off the loop


def _events(n: int) -> list[EventModel]:
    return [EventModel.new("tick", {"i": i}, agent_id=f"a{i % 7}") for i in range(n)]


async def test_a_large_batch_gets_consecutive_sequences(tmp_path: Path) -> None:
    async with await SqliteStorage.open(tmp_path / "s.db") as storage:
        await storage.store_event(EventModel.new("first"))
        events = _events(N)
        seqs = await storage.store_events(events)
        assert seqs == list(range(2, N + 2))
        assert [e.sequence for e in events] == seqs
        stored = await storage.read_events(1, N + 10)
        assert [e.id for e in stored] == [e.id for e in events]
        assert stored[-1].payload == {"i": N - 1}


@pytest.mark.parametrize("where", [0, HEAVY_ROWS + 1, N - 1])
async def test_an_invalid_event_anywhere_stores_nothing(tmp_path: Path, where: int) -> None:
    async with await SqliteStorage.open(tmp_path / "s.db") as storage:
        events = _events(N)
        events[where].payload = {"bad": float("nan")}
        with pytest.raises(ValidationError, match=r"event\.payload"):
            await storage.store_events(events)
        assert await storage.read_events() == []
        assert await storage.store_event(EventModel.new("after")) == 1


async def test_a_duplicate_id_late_in_the_batch_stores_nothing(tmp_path: Path) -> None:
    async with await SqliteStorage.open(tmp_path / "s.db") as storage:
        events = _events(N)
        events[-1].id = events[3].id
        with pytest.raises(ConflictError):
            await storage.store_events(events)
        assert await storage.read_events() == []


async def test_inside_a_transaction_a_large_batch_joins_it(tmp_path: Path) -> None:
    async with await SqliteStorage.open(tmp_path / "s.db") as storage:
        tx = await storage.begin_transaction()
        await storage.store_events(_events(N))
        await tx.rollback()
        assert await storage.read_events() == []
