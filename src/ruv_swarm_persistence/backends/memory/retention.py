"""Retention on the memory engine's tables (see :mod:`ruv_swarm_persistence.retention`).

Every removal goes through the tables' undo-logged primitives, so a pass inside a
transaction rolls back with it, and the browser engine (whose tables note each change)
writes it through to IndexedDB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ... import _json, rules
from ...codec import Record
from ...retention import TABLES, Cut, RetentionPlan
from ...storage import PruneResult

__all__ = ["drop_events", "retain"]


class _Tables(Protocol):
    """What retention uses of the memory engine's tables (``tables.Tables``)."""

    tasks: dict[str, Record]
    unfinished: dict[str, int]
    dependents: dict[str, list[str]]
    events: list[Record]
    messages: dict[str, Record]
    metrics: dict[str, Record]
    meta: dict[str, int]

    def put(self, table: dict[str, Any], key: str, value: Any) -> None: ...

    def drop(self, table: dict[str, Any], key: str) -> None: ...

    def set_attr(self, name: str, value: Any) -> None: ...


def _beyond(
    cut: Cut,
    rows: Sequence[Record],
    time_of: Callable[[Record], int],
    order: Callable[[Record], Any] | None = None,
) -> set[str]:
    """Ids of the rows a cut removes: older than ``before`` by ``time_of``, or not among
    the newest ``keep`` by ``order`` (default: ``time_of``, ties by id)."""
    gone: set[str] = set()
    if cut.before is not None:
        gone = {r["id"] for r in rows if time_of(r) < cut.before}
    if cut.keep is not None and len(rows) > cut.keep:
        key = order if order is not None else lambda r: (time_of(r), r["id"])
        oldest_first = sorted(rows, key=key)
        gone.update(r["id"] for r in oldest_first[: len(rows) - cut.keep])
    return gone


def drop_events(t: _Tables, doomed: Callable[[Record], bool]) -> int:
    """Remove the events ``doomed`` picks, with their indexes; how many."""
    keep = [r for r in t.events if not doomed(r)]
    dropped = len(t.events) - len(keep)
    if dropped:
        t.set_attr("events", keep)
        t.set_attr("event_ids", {r["id"]: r for r in keep})
        by_agent: dict[str, list[Record]] = {}
        by_type: dict[str, list[Record]] = {}
        for r in keep:
            if r["agent_id"] is not None:
                by_agent.setdefault(r["agent_id"], []).append(r)
            by_type.setdefault(r["event_type"], []).append(r)
        t.set_attr("events_by_agent", by_agent)
        t.set_attr("events_by_type", by_type)
    return dropped


def _drop_rows(
    t: _Tables,
    table: dict[str, Record],
    cut: Cut,
    eligible: Callable[[Record], bool],
    time_of: Callable[[Record], int],
) -> int:
    gone = _beyond(cut, [r for r in table.values() if eligible(r)], time_of)
    for rid in gone:
        t.drop(table, rid)
    return len(gone)


def _drop_completed_tasks(t: _Tables, cut: Cut) -> int:
    def pinned(task_id: str) -> bool:
        # A dependent that may still run (unfinished, or failed and retryable) reads it.
        return any(
            t.tasks[d]["status"] not in (rules.COMPLETED, rules.CANCELLED)
            for d in t.dependents.get(task_id, ())
        )

    completed = [r for r in t.tasks.values() if r["status"] == rules.COMPLETED]
    gone = sorted(
        tid for tid in _beyond(cut, completed, lambda r: r["completed_at"] or 0) if not pinned(tid)
    )
    for tid in gone:
        for d in _json.loads(t.tasks[tid]["dependencies"]):
            lst = t.dependents.get(d)
            if lst is not None:
                t.put(t.dependents, d, [x for x in lst if x != tid])
        t.drop(t.dependents, tid)
        t.drop(t.unfinished, tid)
        t.drop(t.tasks, tid)
    return len(gone)


def retain(t: _Tables, plan: RetentionPlan) -> PruneResult:
    """Carry out a retention pass on the tables and add it to their record."""
    result = PruneResult()
    if plan.events is not None:
        gone = _beyond(plan.events, t.events, _timestamp, lambda r: r["sequence"])
        result.events = drop_events(t, lambda r: r["id"] in gone) if gone else 0
    if plan.metrics is not None:
        result.metrics = _drop_rows(t, t.metrics, plan.metrics, lambda r: True, _timestamp)
    if plan.messages is not None:
        result.messages = _drop_rows(
            t, t.messages, plan.messages, lambda r: bool(r["read"]), lambda r: r["read_at"] or 0
        )
    if plan.tasks is not None:
        result.tasks = _drop_completed_tasks(t, plan.tasks)
    meta = dict(t.meta)
    meta["ran_at"] = plan.now
    for table in TABLES:
        meta[table] = meta.get(table, 0) + getattr(result, table)
    t.set_attr("meta", meta)
    return result


def _timestamp(r: Record) -> int:
    return int(r["timestamp"])
