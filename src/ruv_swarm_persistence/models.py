"""The five records of a swarm: agents, tasks, events, messages and metrics.

Plain dataclasses with the constructors and helpers of the original crate. Nothing is checked
here: every write is validated once, at the storage boundary (``codec``), on every backend.
Times are aware UTC datetimes with microsecond resolution; ids are time-ordered UUIDv7 strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from ._time import utc_now, uuid7

__all__ = [
    "AgentModel",
    "AgentStatus",
    "EventModel",
    "MessageModel",
    "MessagePriority",
    "MetricModel",
    "TaskModel",
    "TaskPriority",
    "TaskStatus",
]


class AgentStatus(StrEnum):
    """Lifecycle state of an agent."""

    Initializing = "initializing"
    Active = "active"
    Idle = "idle"
    Busy = "busy"
    Paused = "paused"
    Error = "error"
    Shutdown = "shutdown"


class TaskStatus(StrEnum):
    """State of a task: ``pending → assigned → running → completed | failed | cancelled``."""

    Pending = "pending"
    Assigned = "assigned"
    Running = "running"
    Completed = "completed"
    Failed = "failed"
    Cancelled = "cancelled"


class TaskPriority(IntEnum):
    """Task priority; higher is claimed first."""

    Low = 0
    Medium = 1
    High = 2
    Critical = 3


class MessagePriority(IntEnum):
    """Message priority; ``get_unread_messages`` returns urgent mail first."""

    Low = 0
    Normal = 1
    High = 2
    Urgent = 3


@dataclass(slots=True)
class AgentModel:
    """A registered agent with its capabilities and liveness heartbeat."""

    id: str
    name: str
    agent_type: str
    status: AgentStatus = AgentStatus.Initializing
    capabilities: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    heartbeat: datetime = field(default_factory=utc_now)
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)

    @classmethod
    def new(
        cls,
        name: str,
        agent_type: str,
        capabilities: list[str] | None = None,
        *,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentModel:
        """A new agent with a fresh id, status ``initializing`` and every time set to now."""
        now = utc_now()
        return cls(
            id=id if id is not None else uuid7(),
            name=name,
            agent_type=agent_type,
            capabilities=list(capabilities or []),
            metadata=dict(metadata or {}),
            heartbeat=now,
            created_at=now,
            updated_at=now,
        )

    def update_heartbeat(self) -> None:
        """Stamp the heartbeat (and ``updated_at``) with the current time."""
        now = utc_now()
        self.heartbeat = now
        self.updated_at = now

    def set_status(self, status: AgentStatus) -> None:
        """Change the status and stamp ``updated_at``."""
        self.status = AgentStatus(status)
        self.updated_at = utc_now()


@dataclass(slots=True)
class TaskModel:
    """A unit of work in the priority queue, with dependencies, retries and a lease."""

    id: str
    task_type: str
    priority: TaskPriority = TaskPriority.Medium
    status: TaskStatus = TaskStatus.Pending
    assigned_to: str | None = None
    payload: Any = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    retry_count: int = 0
    max_retries: int = 3
    dependencies: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    lease_expires_at: datetime | None = None
    run_after: datetime | None = None
    #: At most one unfinished task per key: storing another returns the first one's id.
    dedup_key: str | None = None
    #: The key whose concurrency and rate limits apply to claims of this task.
    concurrency_key: str | None = None

    @classmethod
    def new(
        cls,
        task_type: str,
        payload: Any = None,
        priority: TaskPriority = TaskPriority.Medium,
        *,
        id: str | None = None,
        dependencies: list[str] | None = None,
        max_retries: int = 3,
        run_after: datetime | None = None,
        dedup_key: str | None = None,
        concurrency_key: str | None = None,
    ) -> TaskModel:
        """A new pending task with a fresh id.

        ``max_retries`` counts retries after the first attempt: the default 3 allows four
        attempts in all. ``dedup_key`` and ``concurrency_key`` are fixed once the task is
        stored (see ``Storage.store_task`` and ``Storage.set_concurrency_limit``).
        """
        now = utc_now()
        return cls(
            id=id if id is not None else uuid7(),
            task_type=task_type,
            priority=priority,
            payload={} if payload is None else payload,
            dependencies=list(dependencies or []),
            max_retries=max_retries,
            created_at=now,
            updated_at=now,
            run_after=run_after,
            dedup_key=dedup_key,
            concurrency_key=concurrency_key,
        )

    def assign_to(self, agent_id: str) -> None:
        """Mark the task assigned to ``agent_id`` (in memory; persist with ``update_task``)."""
        self.assigned_to = agent_id
        self.status = TaskStatus.Assigned
        self.updated_at = utc_now()

    def start(self) -> None:
        """Mark the task running and stamp ``started_at``."""
        now = utc_now()
        self.status = TaskStatus.Running
        self.started_at = now
        self.updated_at = now

    def complete(self, result: Any = None) -> None:
        """Mark the task completed with ``result``."""
        now = utc_now()
        self.status = TaskStatus.Completed
        self.result = result
        self.completed_at = now
        self.updated_at = now

    def fail(self, error: str) -> None:
        """Record a failed attempt: back to pending while retries remain, else failed.

        ``retry_count`` counts the retries used; the task fails for good once it would exceed
        ``max_retries``. (The storage's ``fail_task`` also schedules the retry's backoff.)
        """
        now = utc_now()
        self.error = error
        self.assigned_to = None
        self.lease_expires_at = None
        self.updated_at = now
        if self.retry_count < self.max_retries:
            self.retry_count += 1
            self.status = TaskStatus.Pending
        else:
            self.status = TaskStatus.Failed
            self.completed_at = now


@dataclass(slots=True)
class EventModel:
    """An entry of the append-only event log; ``sequence`` is assigned when it is stored."""

    id: str
    event_type: str
    agent_id: str | None = None
    task_id: str | None = None
    payload: Any = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utc_now)
    sequence: int | None = None

    @classmethod
    def new(
        cls,
        event_type: str,
        payload: Any = None,
        *,
        agent_id: str | None = None,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> EventModel:
        """A new event stamped now (the crate's ``EventModel::new(event_type, payload)``)."""
        return cls(
            id=id if id is not None else uuid7(),
            event_type=event_type,
            agent_id=agent_id,
            task_id=task_id,
            payload={} if payload is None else payload,
            metadata=dict(metadata or {}),
            timestamp=utc_now(),
        )

    def with_agent(self, agent_id: str) -> EventModel:
        """Attach the event to an agent; returns ``self`` for chaining."""
        self.agent_id = agent_id
        return self

    def with_task(self, task_id: str) -> EventModel:
        """Attach the event to a task; returns ``self`` for chaining."""
        self.task_id = task_id
        return self


@dataclass(slots=True)
class MessageModel:
    """A message from one agent to another, with a read receipt."""

    id: str
    from_agent: str
    to_agent: str
    message_type: str
    content: Any = field(default_factory=dict)
    priority: MessagePriority = MessagePriority.Normal
    read: bool = False
    created_at: datetime = field(default_factory=utc_now)
    read_at: datetime | None = None

    @classmethod
    def new(
        cls,
        from_agent: str,
        to_agent: str,
        message_type: str,
        content: Any = None,
        *,
        priority: MessagePriority = MessagePriority.Normal,
        id: str | None = None,
    ) -> MessageModel:
        """A new unread message stamped now."""
        return cls(
            id=id if id is not None else uuid7(),
            from_agent=from_agent,
            to_agent=to_agent,
            message_type=message_type,
            content={} if content is None else content,
            priority=priority,
            created_at=utc_now(),
        )

    def with_priority(self, priority: MessagePriority) -> MessageModel:
        """Set the priority; returns ``self`` for chaining."""
        self.priority = MessagePriority(priority)
        return self

    def mark_read(self) -> None:
        """Mark read now (in memory; the storage's ``mark_message_read`` records a receipt)."""
        if not self.read:
            self.read = True
            self.read_at = utc_now()


@dataclass(slots=True)
class MetricModel:
    """One measurement: a value with a unit, optionally tied to an agent and tagged."""

    id: str
    metric_type: str
    value: float
    unit: str
    agent_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utc_now)

    @classmethod
    def new(
        cls,
        metric_type: str,
        value: float,
        unit: str,
        *,
        agent_id: str | None = None,
        tags: dict[str, str] | None = None,
        id: str | None = None,
    ) -> MetricModel:
        """A new measurement stamped now (the crate's ``MetricModel::new(type, value, unit)``)."""
        return cls(
            id=id if id is not None else uuid7(),
            metric_type=metric_type,
            value=value,
            unit=unit,
            agent_id=agent_id,
            tags=dict(tags or {}),
            timestamp=utc_now(),
        )

    def with_agent(self, agent_id: str) -> MetricModel:
        """Tie the metric to an agent; returns ``self`` for chaining."""
        self.agent_id = agent_id
        return self

    def with_tag(self, key: str, value: str) -> MetricModel:
        """Add one tag; returns ``self`` for chaining."""
        self.tags[key] = value
        return self
