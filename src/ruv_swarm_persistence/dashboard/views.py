"""What each page shows, as JSON-ready data read through the public ``Storage`` API.

Every function here works on any backend and knows nothing of HTTP: the API module parses
requests and calls them; the tests call the API and compare with the database.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from .._time import from_us, to_us
from ..models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MessagePriority,
    MetricModel,
    TaskModel,
    TaskPriority,
    TaskStatus,
)
from ..query import QueryBuilder
from ..storage import Storage
from .snapshot import RATE_WINDOW, Snapshot

__all__ = [
    "BUCKET_STEPS_S",
    "MAX_BUCKETS",
    "agents_view",
    "event_json",
    "event_types",
    "events_page",
    "failed_view",
    "metric_names",
    "metric_series",
    "messages_view",
    "overview",
    "task_graph",
    "task_json",
    "task_stats",
    "tasks_list",
]

TASK_STATUSES: Final = tuple(s.value for s in TaskStatus)
AGENT_STATUSES: Final = tuple(s.value for s in AgentStatus)
ACTIVE: Final = frozenset({"assigned", "running"})
FINISHED: Final = ("completed", "failed", "cancelled")
#: The states of the tasks-over-time chart: before a claim, during an attempt, and finished.
TIMELINE_STATES: Final = ("waiting", "running", *FINISHED)
#: Bucket widths a chart may choose (seconds): round numbers a reader recognises.
BUCKET_STEPS_S: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300,
                         600, 900, 1800, 3600, 7200, 21600, 43200, 86400)  # fmt: skip
#: The most buckets one chart asks for: more would be wider than the screen.
MAX_BUCKETS: Final = 2000
#: Buckets a chart aims at when its caller gives no width.
TARGET_BUCKETS: Final = 60
_US: Final = 1_000_000


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 (UTC), or None."""
    return None if value is None else value.isoformat()


def seconds(value: datetime) -> float:
    """A time as epoch seconds (what the charts plot)."""
    return to_us(value) / _US


def nice_bucket(span_us: int) -> int:
    """A round bucket width (µs) that cuts ``span_us`` into about :data:`TARGET_BUCKETS`."""
    wanted = span_us / TARGET_BUCKETS / _US
    step: float | None = next((s for s in BUCKET_STEPS_S if s >= wanted), None)
    if step is None:
        step = math.ceil(wanted / 86400) * 86400
    return round(step * _US)


# --- agents -------------------------------------------------------------------------------


def agent_json(a: AgentModel, now: datetime, stale: bool, held: int) -> dict[str, Any]:
    """An agent as the agents page shows it."""
    return {
        "id": a.id,
        "name": a.name,
        "agent_type": a.agent_type,
        "status": a.status.value,
        "capabilities": list(a.capabilities),
        "metadata": a.metadata,
        "heartbeat": iso(a.heartbeat),
        "heartbeat_age_s": max(0.0, (now - a.heartbeat).total_seconds()),
        "stale": stale,
        "tasks_held": held,
        "created_at": iso(a.created_at),
    }


async def agents_view(storage: Storage, snap: Snapshot, stale_after: float) -> dict[str, Any]:
    """Every agent, its heartbeat's age, and which are stale (``find_stale_agents``)."""
    stale = {a.id for a in await storage.find_stale_agents(stale_after)}
    held = Counter(t.assigned_to for t in snap.tasks if t.status.value in ACTIVE)
    agents = sorted(snap.agents, key=lambda a: (a.id not in stale, a.status.value, a.name, a.id))
    counts = Counter(a.status.value for a in snap.agents)
    return {
        "taken_at": iso(snap.taken_at),
        "stale_after_s": stale_after,
        "total": len(snap.agents),
        "stale": sum(1 for a in snap.agents if a.id in stale),
        "by_status": {s: counts.get(s, 0) for s in AGENT_STATUSES},
        "agents": [agent_json(a, snap.taken_at, a.id in stale, held.get(a.id, 0)) for a in agents],
    }


# --- tasks --------------------------------------------------------------------------------


def task_json(t: TaskModel, *, full: bool = False) -> dict[str, Any]:
    """A task: its columns (``full``: with payload and result, which may be large)."""
    row: dict[str, Any] = {
        "id": t.id,
        "task_type": t.task_type,
        "priority": int(t.priority),
        "priority_name": TaskPriority(t.priority).name,
        "status": t.status.value,
        "assigned_to": t.assigned_to,
        "error": t.error,
        "retry_count": t.retry_count,
        "max_retries": t.max_retries,
        "dependencies": list(t.dependencies),
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "started_at": iso(t.started_at),
        "completed_at": iso(t.completed_at),
        "lease_expires_at": iso(t.lease_expires_at),
        "run_after": iso(t.run_after),
    }
    if full:
        row["payload"] = t.payload
        row["result"] = t.result
    return row


def tasks_list(
    snap: Snapshot,
    statuses: Sequence[str],
    types: Sequence[str],
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """Tasks with these statuses and types (all when empty), most recently changed first."""
    found = [
        t
        for t in snap.tasks
        if (not statuses or t.status.value in statuses) and (not types or t.task_type in types)
    ]
    found.sort(key=lambda t: (t.updated_at, t.id), reverse=True)
    return {
        "total": len(found),
        "offset": offset,
        "tasks": [task_json(t) | {"ready": t.id in snap.ready_ids} for t in found[offset:][:limit]],
    }


def _span(tasks: Iterable[TaskModel], now: datetime) -> tuple[int, int]:
    """First creation and last change of ``tasks`` (µs); ``now`` while any is unfinished."""
    start, end = None, None
    for t in tasks:
        created, changed = to_us(t.created_at), to_us(t.completed_at or t.updated_at)
        if t.status.value not in FINISHED:
            changed = max(changed, to_us(now))
        start = created if start is None else min(start, created)
        end = changed if end is None else max(end, changed)
    if start is None or end is None:
        end = to_us(now)
        return end - 3600 * _US, end
    return start, max(end, start + _US)


def timeline(
    tasks: Sequence[TaskModel], start_us: int, end_us: int, bucket_us: int
) -> dict[str, Any]:
    """Tasks by state at the end of each bucket, and tasks finished in each bucket by type.

    A task is *waiting* from its creation until its attempt started (claims that were never
    started count as waiting), *running* until it finished, then counted under its final
    status. Only the current attempt's start is stored, so earlier attempts of a retried task
    count as waiting.
    """
    first = start_us - start_us % bucket_us
    n = max(1, -(-(end_us - first) // bucket_us))
    ends = [first + (i + 1) * bucket_us for i in range(n)]

    def index(at_us: int) -> int:
        """The first bucket whose end is at or after ``at_us``."""
        return min(n, max(0, -(-(at_us - first) // bucket_us) - 1))

    diff: dict[str, list[int]] = {s: [0] * (n + 1) for s in TIMELINE_STATES}

    def add(state: str, begin: int, stop: int | None) -> None:
        """Count the task in ``state`` at the bucket ends in ``[begin, stop)``."""
        i, j = index(begin), n if stop is None else index(stop)
        if i < j:
            diff[state][i] += 1
            diff[state][j] -= 1

    by_type: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    for t in tasks:
        created = to_us(t.created_at)
        started = None if t.started_at is None else to_us(t.started_at)
        done = None
        status = t.status.value
        if status in FINISHED:
            done = to_us(t.completed_at or t.updated_at)
            if first < done <= ends[-1]:
                by_type[t.task_type][index(done)] += 1
        # A task back to pending keeps its failed attempt's start: it is waiting again.
        if started is not None and status in ("running", "completed", "failed"):
            add("waiting", created, started)
            add("running", started, done)
        else:
            add("waiting", created, done)
        if done is not None:
            add(status, done, None)
    series = {}
    for state, d in diff.items():
        running, values = 0, []
        for i in range(n):
            running += d[i]
            values.append(running)
        series[state] = values
    return {
        "start": iso(from_us(first)),
        "end": iso(from_us(ends[-1])),
        "bucket_s": bucket_us / _US,
        "t": [e / _US for e in ends],
        "by_state": series,
        "finished_by_type": dict(sorted(by_type.items())),
    }


def task_stats(
    snap: Snapshot, start: datetime | None, end: datetime | None, bucket_s: float | None
) -> dict[str, Any]:
    """Tasks by status, by type and status, ready now, and over time."""
    by_status = Counter(t.status.value for t in snap.tasks)
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for t in snap.tasks:
        by_type[t.task_type][t.status.value] += 1
    ready_by_type = Counter(t.task_type for t in snap.tasks if t.id in snap.ready_ids)
    span_start, span_end = _span(snap.tasks, snap.taken_at)
    start_us = span_start if start is None else to_us(start)
    end_us = span_end if end is None else to_us(end)
    if end_us <= start_us:
        raise ValueError("end must be after start")
    bucket_us = nice_bucket(end_us - start_us) if bucket_s is None else round(bucket_s * _US)
    if bucket_us <= 0 or (end_us - start_us) / bucket_us > MAX_BUCKETS:
        raise ValueError(f"the bucket must cut the range into at most {MAX_BUCKETS} buckets")
    return {
        "taken_at": iso(snap.taken_at),
        "total": len(snap.tasks),
        "ready": len(snap.ready_ids),
        "by_status": {s: by_status.get(s, 0) for s in TASK_STATUSES},
        "by_type": {
            k: {s: v.get(s, 0) for s in TASK_STATUSES} | {"ready": ready_by_type.get(k, 0)}
            for k, v in sorted(by_type.items())
        },
        "timeline": timeline(snap.tasks, start_us, end_us, bucket_us),
    }


def task_graph(snap: Snapshot, task_id: str, depth: int, max_nodes: int) -> dict[str, Any] | None:
    """The tasks within ``depth`` dependency steps of a task, upstream and downstream.

    Nodes carry their distance (negative: a dependency, positive: a dependent); edges run
    from a dependency to the task that waits for it. None if the task does not exist.
    """
    by_id = {t.id: t for t in snap.tasks}
    root = by_id.get(task_id)
    if root is None:
        return None
    dependents: dict[str, list[str]] = defaultdict(list)
    for t in snap.tasks:
        for d in t.dependencies:
            dependents[d].append(t.id)
    level: dict[str, int] = {task_id: 0}
    truncated = False
    for sign, follow in ((-1, lambda t: t.dependencies), (1, lambda t: dependents[t.id])):
        queue = deque([(task_id, 0)])
        while queue:
            current, dist = queue.popleft()
            if dist == depth:
                continue
            for nxt in follow(by_id[current]):
                if nxt in level or nxt not in by_id:
                    continue
                if len(level) >= max_nodes:
                    truncated = True
                    break
                level[nxt] = sign * (dist + 1)
                queue.append((nxt, dist + 1))
    edges = [{"from": d, "to": t} for t in level for d in by_id[t].dependencies if d in level]
    return {
        "root": task_id,
        "depth": depth,
        "truncated": truncated,
        "nodes": [
            task_json(by_id[t]) | {"level": lvl, "ready": t in snap.ready_ids}
            for t, lvl in sorted(level.items(), key=lambda kv: (kv[1], kv[0]))
        ],
        "edges": edges,
    }


async def failed_view(
    storage: Storage, snap: Snapshot, task_type: str | None, limit: int
) -> dict[str, Any]:
    """Dead letters (``get_failed_tasks``: failed for good, newest first) and the unfinished
    tasks that failed an attempt and wait to retry."""
    failed = await storage.get_failed_tasks(task_type, limit=limit)
    retrying = [
        t
        for t in snap.tasks
        if t.status.value not in FINISHED
        and t.retry_count > 0
        and t.error is not None
        and (task_type is None or t.task_type == task_type)
    ]
    retrying.sort(key=lambda t: (t.updated_at, t.id), reverse=True)
    return {
        "total_failed": sum(
            1
            for t in snap.tasks
            if t.status.value == "failed" and (task_type is None or t.task_type == task_type)
        ),
        "dead_letters": [task_json(t) for t in failed],
        "retrying": [task_json(t) for t in retrying[:limit]],
        "total_retrying": len(retrying),
    }


async def schedules_view(storage: Storage) -> dict[str, Any]:
    """Every schedule: its timing, the task it enqueues, whether it is paused, when next due."""
    found = await storage.list_schedules()
    return {
        "schedules": [
            {
                "name": s.name,
                "spec": s.spec,
                "timezone": s.timezone,
                "missed": s.missed,
                "paused": s.paused,
                "task_type": s.task_template.get("task_type"),
                "next_due": iso(s.next_due),
                "last_due": iso(s.last_due),
                "updated_at": iso(s.updated_at),
            }
            for s in found
        ],
        "paused": sum(1 for s in found if s.paused),
    }


# --- messages, events, metrics --------------------------------------------------------------


def messages_view(snap: Snapshot) -> dict[str, Any]:
    """Unread messages per recipient: how many, of which priority, and the oldest's time."""
    per: dict[str, list[MessageModel]] = defaultdict(list)
    for m in snap.unread:
        per[m.to_agent].append(m)
    names = {a.id: a.name for a in snap.agents}
    rows = []
    for agent_id, mail in sorted(per.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        oldest = min(m.created_at for m in mail)
        priorities = Counter(MessagePriority(m.priority).name.lower() for m in mail)
        rows.append(
            {
                "agent_id": agent_id,
                "name": names.get(agent_id),
                "unread": len(mail),
                "by_priority": {
                    p.name.lower(): priorities.get(p.name.lower(), 0) for p in MessagePriority
                },
                "oldest_unread_at": iso(oldest),
                "oldest_unread_age_s": max(0.0, (snap.taken_at - oldest).total_seconds()),
            }
        )
    return {"taken_at": iso(snap.taken_at), "total_unread": len(snap.unread), "agents": rows}


def message_json(m: MessageModel) -> dict[str, Any]:
    """A message as the messages page shows it."""
    return {
        "id": m.id,
        "from_agent": m.from_agent,
        "to_agent": m.to_agent,
        "message_type": m.message_type,
        "content": m.content,
        "priority": int(m.priority),
        "priority_name": MessagePriority(m.priority).name,
        "read": m.read,
        "created_at": iso(m.created_at),
        "read_at": iso(m.read_at),
    }


def event_json(e: EventModel) -> dict[str, Any]:
    """An event as the events page and the live tail show it."""
    return {
        "sequence": e.sequence,
        "id": e.id,
        "event_type": e.event_type,
        "agent_id": e.agent_id,
        "task_id": e.task_id,
        "payload": e.payload,
        "metadata": e.metadata,
        "timestamp": iso(e.timestamp),
    }


async def events_page(
    storage: Storage,
    types: Sequence[str],
    agent: str | None,
    before: int | None,
    limit: int,
) -> dict[str, Any]:
    """The newest events (before a sequence, of these types, by this agent), newest first."""
    query = QueryBuilder(EventModel)
    if types:
        query = query.where_in("event_type", list(types))
    if agent:
        query = query.where_eq("agent_id", agent)
    if before is not None:
        query = query.where_lt("sequence", before)
    found = await storage.query(query.order_by("sequence", True).limit(limit))
    newest = await storage.query(QueryBuilder(EventModel).order_by("sequence", True).limit(1))
    return {
        "last_sequence": (newest[0].sequence or 0) if newest else 0,
        "events": [event_json(e) for e in found],
    }


async def _distinct(storage: Storage, model: type[Any], column: str, most: int) -> list[str]:
    """Distinct values of an indexed text column, in order: one short query per value, so a
    large table is never read whole."""
    values: list[str] = []
    first = QueryBuilder(model).order_by(column).limit(1)
    while len(values) < most:
        query = first.where_gt(column, values[-1]) if values else first
        found = await storage.query(query)
        if not found:
            break
        values.append(getattr(found[0], column))
    return values


async def event_types(storage: Storage, most: int = 100) -> list[str]:
    """The event types in the log, alphabetically (at most ``most``)."""
    return await _distinct(storage, EventModel, "event_type", most)


async def metric_names(storage: Storage, most: int = 100) -> list[str]:
    """The metric types stored, alphabetically (at most ``most``)."""
    return await _distinct(storage, MetricModel, "metric_type", most)


async def metric_series(
    storage: Storage,
    metric_type: str,
    end: datetime | None,
    window_s: float,
    bucket_s: float | None,
    by_agent: bool,
) -> dict[str, Any]:
    """``aggregate_metrics`` per time bucket as columns for a chart, one series per group.

    Without ``end``, the window ends at the newest measurement of the type (so a swarm that
    stopped yesterday still shows its last hour), and starts no earlier than the oldest.
    Empty buckets are null.
    """
    base = QueryBuilder(MetricModel).where_eq("metric_type", metric_type)
    newest = await storage.query(base.order_by("timestamp", True).limit(1))
    if end is None:
        if not newest:
            return {"metric_type": metric_type, "series": [], "bucket_s": None,
                    "start": None, "end": None}  # fmt: skip
        end = newest[0].timestamp
        oldest = await storage.query(base.order_by("timestamp").limit(1))
        start_us = max(to_us(end) - round(window_s * _US), to_us(oldest[0].timestamp))
    else:
        start_us = to_us(end) - round(window_s * _US)
    end_us = to_us(end)
    span = max(end_us - start_us, _US)
    bucket_us = nice_bucket(span) if bucket_s is None else round(bucket_s * _US)
    if bucket_us <= 0 or span / bucket_us > MAX_BUCKETS:
        raise ValueError(f"the bucket must cut the window into at most {MAX_BUCKETS} buckets")
    rows = await storage.aggregate_metrics(
        metric_type,
        from_us(start_us),
        from_us(end_us),
        group_by=("agent_id",) if by_agent else (),
        bucket=timedelta(microseconds=bucket_us),
    )
    first = start_us - start_us % bucket_us
    n = (end_us - first) // bucket_us + 1
    stats = ("count", "mean", "min", "max", "p50", "p95", "p99")
    series: dict[tuple[str | None, str], dict[str, Any]] = {}
    for r in rows:
        agent = r.group.get("agent_id") if by_agent else None
        key = (agent, r.unit)
        if key not in series:
            series[key] = {"agent_id": agent, "unit": r.unit} | {s: [None] * n for s in stats}
        assert r.bucket_start is not None
        i = (to_us(r.bucket_start) - first) // bucket_us
        if 0 <= i < n:
            for s in stats:
                series[key][s][i] = getattr(r, s)
    return {
        "metric_type": metric_type,
        "start": iso(from_us(start_us)),
        "end": iso(from_us(end_us)),
        "bucket_s": bucket_us / _US,
        "t": [(first + i * bucket_us) / _US for i in range(n)],
        "series": sorted(series.values(), key=lambda s: (s["unit"], s["agent_id"] or "")),
    }


def overview(snap: Snapshot) -> dict[str, Any]:
    """The headline numbers: agents and tasks by status, ready tasks, mail, the event log."""
    agents = Counter(a.status.value for a in snap.agents)
    tasks = Counter(t.status.value for t in snap.tasks)
    return {
        "taken_at": iso(snap.taken_at),
        "agents": {s: agents.get(s, 0) for s in AGENT_STATUSES},
        "agents_total": len(snap.agents),
        "tasks": {s: tasks.get(s, 0) for s in TASK_STATUSES},
        "tasks_total": len(snap.tasks),
        "tasks_ready": len(snap.ready_ids),
        "messages_unread": len(snap.unread),
        "events_last_sequence": snap.last_sequence,
        "events_per_second": snap.recent_events / RATE_WINDOW.total_seconds(),
    }
