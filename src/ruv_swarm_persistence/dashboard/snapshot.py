"""One read of the swarm's state, shared by every view and scrape for a moment.

The storage API has no counting queries, so the views that count (tasks by status and type,
agents by status, unread mail, the Prometheus gauges) read the rows they count. A
:class:`SnapshotCache` does that read at most once per ``ttl`` however many pages, API calls
and scrapes ask, and one at a time: a burst of requests costs one read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from .._time import utc_now
from ..models import AgentModel, EventModel, MessageModel, TaskModel
from ..query import QueryBuilder
from ..storage import Storage

__all__ = ["RATE_WINDOW", "Snapshot", "SnapshotCache", "take_snapshot"]

#: The window of the per-second rates (events, attempts started).
RATE_WINDOW: Final = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The swarm as read at ``taken_at``."""

    taken_at: datetime
    agents: list[AgentModel]
    tasks: list[TaskModel]
    #: Ids of the tasks a claim could take now (``get_ready_tasks``).
    ready_ids: frozenset[str]
    unread: list[MessageModel]
    #: The newest event's sequence (0 without events).
    last_sequence: int
    #: Events whose timestamp lies in the last :data:`RATE_WINDOW` (from their sequences).
    recent_events: int

    def task(self, task_id: str) -> TaskModel | None:
        """The task with this id, if it was read."""
        return next((t for t in self.tasks if t.id == task_id), None)


async def take_snapshot(storage: Storage) -> Snapshot:
    """Read everything the counting views need, through the public API."""
    now = utc_now()
    agents = await storage.list_agents()
    tasks = await storage.query(QueryBuilder(TaskModel))
    ready = await storage.get_ready_tasks()
    unread = await storage.query(QueryBuilder(MessageModel).where_eq("read", False))
    newest = await storage.query(QueryBuilder(EventModel).order_by("sequence", True).limit(1))
    last = (newest[0].sequence or 0) if newest else 0
    since = now - RATE_WINDOW
    first = await storage.query(
        QueryBuilder(EventModel).where_gte("timestamp", since).order_by("timestamp").limit(1)
    )
    recent = last - (first[0].sequence or 0) + 1 if first else 0
    return Snapshot(
        taken_at=now,
        agents=agents,
        tasks=tasks,
        ready_ids=frozenset(t.id for t in ready),
        unread=unread,
        last_sequence=last,
        recent_events=recent,
    )


class SnapshotCache:
    """The latest :class:`Snapshot`, read again once it is older than ``ttl`` seconds."""

    def __init__(self, storage: Storage, ttl: float = 1.0) -> None:
        self._storage = storage
        self._ttl = ttl
        self._lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._read_at = 0.0

    def invalidate(self) -> None:
        """Forget the snapshot: the next call reads again (after an action changed rows)."""
        self._snapshot = None

    async def get(self) -> Snapshot:
        """A snapshot no older than ``ttl``; concurrent callers share one read."""
        async with self._lock:
            fresh = time.monotonic() - self._read_at < self._ttl
            if self._snapshot is None or not fresh:
                self._snapshot = await take_snapshot(self._storage)
                self._read_at = time.monotonic()
            return self._snapshot
