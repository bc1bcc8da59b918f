"""The reader pool: a read that fails leaves its connection fit for the next read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import apsw
import pytest

from ruv_swarm_persistence import AgentModel, SerializationError, TaskModel
from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.query import QueryBuilder

READS: dict[str, Callable[[SqliteStorage], Awaitable[object]]] = {
    "get_agent": lambda s: s.get_agent("bad"),
    "list_agents": lambda s: s.list_agents(),
    "by_status": lambda s: s.list_agents_by_status("initializing"),
    "query": lambda s: s.query(QueryBuilder(AgentModel)),
    "repository": lambda s: s.agents.find_by_id("bad"),
}


@pytest.mark.parametrize("read", list(READS))
async def test_a_read_that_cannot_decode_keeps_no_old_snapshot(
    db_path: Path, raw: Callable[..., apsw.Connection], read: str
) -> None:
    # One reader connection, so the read after the failure runs where the failure happened;
    # the exceptions are kept alive, as a caller logging or collecting them would.
    storage = await SqliteStorage.open(db_path, readers=1, min_idle_readers=1)
    try:
        await storage.store_agent(AgentModel.new("corrupt", "worker", id="bad"))
        raw().execute("UPDATE agents SET capabilities = '{' WHERE id = 'bad'")
        kept: list[SerializationError] = []
        for _ in range(3):
            with pytest.raises(SerializationError) as info:
                await READS[read](storage)
            kept.append(info.value)
        await storage.store_task(TaskModel.new("job", {}, id="after"))
        assert await storage.get_task("after") is not None
        assert [t.id for t in await storage.get_pending_tasks()] == ["after"]
        assert len(kept) == 3
    finally:
        await storage.close()
