"""A small swarm with every state the dashboard shows, stored through the public API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from ruv_swarm_persistence import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MessagePriority,
    MetricModel,
    TaskModel,
    TaskPriority,
)
from ruv_swarm_persistence.storage import Storage

#: Seconds without a heartbeat after which the dashboard under test calls an agent stale.
STALE_AFTER: Final = 30.0
#: The metric's measurements start here: 120 values, one every 0.25 s, across 30 s.
METRIC_START: Final = datetime(2026, 1, 2, 3, 4, 0, tzinfo=UTC)


async def populate(storage: Storage) -> None:
    """Agents (one stale), a task graph in every status, events, mail and a metric."""
    now = datetime.now(UTC)
    old = now - timedelta(minutes=10)
    agents = [
        AgentModel("a-active", "alpha", "coder", AgentStatus.Active, ["coding", "review"],
                   heartbeat=now),
        AgentModel("a-busy", "beta", "tester", AgentStatus.Busy, ["testing"], heartbeat=now),
        AgentModel("a-stale", "gamma", "analyst", AgentStatus.Idle, ["analysis"], heartbeat=old),
        AgentModel("a-gone", "delta", "coder", AgentStatus.Shutdown, ["coding"], heartbeat=old),
        AgentModel("a-error", "epsilon", "coder", AgentStatus.Error, [], heartbeat=old),
    ]  # fmt: skip
    for a in agents:
        await storage.store_agent(a)

    def task(tid: str, kind: str, *deps: str, retries: int = 3) -> TaskModel:
        return TaskModel.new(kind, {"n": tid}, TaskPriority.High, id=tid,
                             dependencies=list(deps), max_retries=retries)  # fmt: skip

    await storage.store_tasks(
        [
            task("t1", "build"),
            task("t2", "build", "t1"),
            task("t3", "test", "t2"),
            task("t4", "test", "t1", "t2"),
            task("t5", "research"),
            task("t6", "research", retries=0),
            task("t7", "research"),
            task("t8", "deploy", "t3"),
            task("t9", "research"),
            task("t10", "deploy", "t6"),
        ]
    )
    # t1 completed; t2 ready; t3, t4 wait; t6 failed for good (so t10 is cancelled);
    # t7 failed once and waits to retry; t8 cancelled; t9 running; t5 ready.
    assert await storage.claim_task("t1", "a-active")
    await storage.start_task("t1", "a-active")
    await storage.complete_task("t1", "a-active", {"ok": True})
    assert await storage.claim_task("t6", "a-busy")
    await storage.start_task("t6", "a-busy")
    await storage.fail_task("t6", "a-busy", "ValueError: bad input")
    assert await storage.claim_task("t7", "a-busy")
    await storage.start_task("t7", "a-busy")
    await storage.fail_task("t7", "a-busy", "TimeoutError: slow upstream")
    await storage.cancel_task("t8", "not needed")
    assert await storage.claim_task("t9", "a-busy", lease=3600)
    await storage.start_task("t9", "a-busy")

    events = [
        EventModel.new(kind, {"i": i}).with_agent(agent).with_task(f"t{i % 9 + 1}")
        for i, (kind, agent) in enumerate(
            [("task.claimed", "a-active"), ("task.completed", "a-active"),
             ("task.claimed", "a-busy"), ("task.failed", "a-busy")] * 5
        )
    ]  # fmt: skip
    events.append(EventModel.new("swarm.note", {"text": "no agent"}))
    await storage.store_events(events)

    mail = [
        ("a-busy", "a-active", MessagePriority.Low),
        ("a-busy", "a-active", MessagePriority.Urgent),
        ("a-stale", "a-active", MessagePriority.Normal),
        ("a-active", "a-busy", MessagePriority.High),
        ("a-active", "a-busy", MessagePriority.Normal),
        ("a-active", "a-stale", MessagePriority.Normal),
    ]
    stored = []
    for sender, to, priority in mail:
        m = MessageModel.new(sender, to, "note", {"from": sender}).with_priority(priority)
        await storage.store_message(m)
        stored.append(m)
    await storage.mark_message_read(stored[-1].id)  # a-stale read its only message

    metrics = []
    for i in range(120):
        at = METRIC_START + timedelta(seconds=i * 0.25)
        agent = "a-active" if i % 3 else "a-busy"
        m = MetricModel.new("latency", float((i * 37) % 101), "ms").with_agent(agent)
        m.timestamp = at
        metrics.append(m)
    await storage.store_metrics(metrics)
