"""Small builders shared by the conformance modules: fixed times and ready-made records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ..models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MessagePriority,
    MetricModel,
)
from ..storage import Storage

__all__ = ["EMPTY", "T0", "WAIT", "agent", "at", "event", "message", "metric", "snapshot", "within"]

T = TypeVar("T")

#: A fixed instant with non-zero microseconds, so precision loss shows.
T0 = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC)

#: How long a test waits for something that should happen at once (generous on purpose:
#: the tests never assert on elapsed time, this only bounds a hang).
WAIT = 10.0


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


async def within(awaitable: Awaitable[T], timeout: float = WAIT) -> T:
    """Await with an upper bound, so a missed wake-up fails instead of hanging."""
    return await asyncio.wait_for(awaitable, timeout)


def agent(
    id: str,
    *,
    name: str | None = None,
    status: AgentStatus = AgentStatus.Active,
    created: float = 0.0,
    heartbeat: float | None = None,
    **fields: Any,
) -> AgentModel:
    """An agent with times relative to ``T0`` (``created`` seconds after it)."""
    t = at(created)
    return AgentModel(
        id=id,
        name=name if name is not None else f"agent {id}",
        agent_type="worker",
        status=status,
        heartbeat=t if heartbeat is None else at(heartbeat),
        created_at=t,
        updated_at=t,
        **fields,
    )


def event(
    id: str,
    event_type: str = "test.event",
    *,
    ts: float = 0.0,
    agent_id: str | None = None,
    task_id: str | None = None,
    payload: Any = None,
) -> EventModel:
    """An event stamped ``ts`` seconds after ``T0``."""
    return EventModel(
        id=id,
        event_type=event_type,
        agent_id=agent_id,
        task_id=task_id,
        payload={"n": id} if payload is None else payload,
        timestamp=at(ts),
    )


def message(
    id: str,
    from_agent: str,
    to_agent: str,
    *,
    ts: float = 0.0,
    priority: MessagePriority = MessagePriority.Normal,
    content: Any = None,
) -> MessageModel:
    """An unread message created ``ts`` seconds after ``T0``."""
    return MessageModel(
        id=id,
        from_agent=from_agent,
        to_agent=to_agent,
        message_type="note",
        content={"text": id} if content is None else content,
        priority=priority,
        created_at=at(ts),
    )


def metric(
    id: str,
    value: float,
    *,
    metric_type: str = "latency",
    unit: str = "ms",
    agent_id: str | None = "a1",
    ts: float = 0.0,
    tags: dict[str, str] | None = None,
) -> MetricModel:
    """A measurement taken ``ts`` seconds after ``T0``."""
    return MetricModel(
        id=id,
        metric_type=metric_type,
        value=value,
        unit=unit,
        agent_id=agent_id,
        tags=dict(tags or {}),
        timestamp=at(ts),
    )


async def snapshot(storage: Storage) -> dict[str, list[Any]]:
    """Every row a storage holds, table by table, as comparable models."""
    return {
        "agents": await storage.agents.find_all(),
        "tasks": await storage.tasks.find_all(),
        "events": await storage.read_events(0, 1_000_000),
        "messages": await storage.messages.find_all(),
        "metrics": await storage.metrics.find_all(),
    }


EMPTY: dict[str, list[Any]] = {
    "agents": [],
    "tasks": [],
    "events": [],
    "messages": [],
    "metrics": [],
}
