"""``copy_storage``'s progress hook: per table, increasing counts that end at the totals."""

from __future__ import annotations

from collections import defaultdict

from ruv_swarm_persistence import AgentModel, EventModel, MetricModel, TaskModel
from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.copy import PAGE, copy_storage

COPIED = ("agents", "tasks", "messages", "metrics", "events")


async def test_copy_storage_reports_increasing_counts_ending_at_the_totals() -> None:
    src, dst = MemoryStorage(), MemoryStorage()
    await src.store_agent(AgentModel.new("a-1", "worker", ["x"], id="a-1"))
    await src.store_tasks([TaskModel.new("x", {"i": i}) for i in range(PAGE + 5)])
    await src.store_metrics([MetricModel.new("cpu", float(i), "percent") for i in range(3)])
    await src.store_events([EventModel.new("e", {"i": i}) for i in range(2 * PAGE + 7)])
    calls: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)

    report = await copy_storage(
        src, dst, progress=lambda t, done, total: calls[t].append((done, total))
    )

    assert list(calls) == list(COPIED)  # every table announced first, in the order copied
    for table, seen in calls.items():
        rows = report.tables[table].destination_rows
        done = [d for d, _ in seen]
        assert done[0] == 0, table
        assert done == sorted(done), table
        assert all(d <= total for d, total in seen), table
        assert seen[-1] == (rows, rows), table
    assert [d for d, _ in calls["events"]] == [0, PAGE, 2 * PAGE, 2 * PAGE + 7]
    assert calls["messages"] == [(0, 0)]
    await src.close()
    await dst.close()
