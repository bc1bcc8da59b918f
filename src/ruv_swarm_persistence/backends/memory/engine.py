"""The memory engine: dictionaries and heaps in one process, the reference semantics.

Rows are stored as records (see :mod:`ruv_swarm_persistence.codec`), exactly as the SQL
backends store them, so precision and validation match. Every operation runs without
awaiting in between, so it is atomic on the event loop. While a transaction is open the
tables keep an undo log, which a rollback replays backwards; the keys a transaction changed
are woken only at its commit.

The engine takes validated values from the front (:mod:`..front`) and returns records; it
is meant to be reused by backends that keep their state in memory and persist it elsewhere.
"""

from __future__ import annotations

import bisect
import heapq
import logging
from collections.abc import Callable
from typing import Any, Final

from ... import _json, rules
from ...aggregate import MetricRow, aggregate, crate_aggregate
from ...codec import EventValues, Record, check_unique_ids, event_record
from ...errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from ...models import MetricModel
from ...query import QueryBuilder
from ...retention import RetentionPlan
from ...storage import MetricAggregate, PruneResult
from .._wake import EVENTS, FINISHED, TASKS, Wakeups, mail
from . import schedules
from .retention import drop_events, retain
from .tables import Tables as _Tables

__all__ = ["MemoryEngine"]

log = logging.getLogger(__name__)

PENDING, ASSIGNED, RUNNING = rules.PENDING, rules.ASSIGNED, rules.RUNNING
COMPLETED, FAILED, CANCELLED = rules.COMPLETED, rules.FAILED, rules.CANCELLED


def _claim_order(r: Record) -> tuple[int, int, str]:
    return (-r["priority"], r["created_at"], r["id"])


def _failure_order(r: Record) -> tuple[int, str]:
    """Oldest failure first (``failed_tasks`` reverses it: most recent first)."""
    return (r["completed_at"] or 0, r["id"])


def _newest(r: Record) -> tuple[int, int]:
    return (r["timestamp"], r["sequence"])


class MemoryEngine(schedules.MemorySchedules):
    """The operations of the memory backend on its :class:`_Tables` (see the module)."""

    subscribe_page: Final = 500

    def __init__(
        self,
        now: Callable[[], int],
        policy: rules.RetryPolicy,
        wake: Wakeups,
        *,
        read_only: bool = False,
    ) -> None:
        self.tables = _Tables(read_only=read_only)
        self._now = now
        self._policy = policy
        self._wake = wake
        # Keys changed inside the open transaction: woken at its commit, forgotten at rollback.
        self._deferred: set[str] = set()

    # --- transactions and wake-ups ------------------------------------------------------

    def begin(self) -> None:
        """Start keeping the undo log of a transaction."""
        self.tables.undo = []

    def finish(self, commit: bool) -> None:
        """End the transaction: wake what it changed, or undo it."""
        t = self.tables
        undo, t.undo = t.undo or [], None
        keys, self._deferred = self._deferred, set()
        if commit:
            for key in keys:
                self._wake.wake(key)
        else:
            for step in reversed(undo):
                step()
            t.rebuild_queue()

    def _changed(self, key: str) -> None:
        if self.tables.undo is not None:
            self._deferred.add(key)
        else:
            self._wake.wake(key)

    def note_changes(self) -> None:
        """Nothing changes this engine but its own calls."""

    def watch(self) -> None:
        """Its own commits wake the waiters: nothing to watch."""

    # --- agents ---------------------------------------------------------------------------

    async def insert_agent(self, tx: Any, rec: Record) -> None:
        t = self.tables
        if rec["id"] in t.agents:
            raise ConflictError("agent", rec["id"])
        t.put(t.agents, rec["id"], rec)

    async def get_agent(self, tx: Any, agent_id: str) -> Record | None:
        return self.tables.agents.get(agent_id)

    async def replace_agent(self, tx: Any, rec: Record) -> None:
        t = self.tables
        if rec["id"] not in t.agents:
            raise NotFoundError("agent", rec["id"])
        t.put(t.agents, rec["id"], rec)

    async def delete_agent(self, tx: Any, agent_id: str) -> None:
        t = self.tables
        if agent_id not in t.agents:
            return
        t.drop(t.agents, agent_id)
        for mid, m in list(t.messages.items()):
            if m["from_agent"] == agent_id or m["to_agent"] == agent_id:
                t.drop(t.messages, mid)
        now = self._now()
        for task_id in [r["id"] for r in t.tasks.values() if r["assigned_to"] == agent_id]:
            # Read the task now: an earlier requeue may have cascaded into it.
            rec = t.tasks[task_id]
            if rec["status"] in rules.ACTIVE:
                self._fail_attempt(rec, rules.released_error(agent_id), now)
                rec = t.tasks[rec["id"]]
            if rec["assigned_to"] is not None:
                t.set_task({**rec, "assigned_to": None})

    async def list_agents(self, tx: Any, status: str | None) -> list[Record]:
        agents = self.tables.agents.values()
        return sorted(
            (r for r in agents if status is None or r["status"] == status),
            key=lambda r: (r["created_at"], r["id"]),
        )

    async def heartbeat(self, tx: Any, agent_id: str, at: int | None) -> None:
        t = self.tables
        rec = t.agents.get(agent_id)
        if rec is None:
            raise NotFoundError("agent", agent_id)
        now = self._now()
        t.put(
            t.agents, agent_id, {**rec, "heartbeat": now if at is None else at, "updated_at": now}
        )

    async def stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        return sorted(
            (
                r
                for r in self.tables.agents.values()
                if r["heartbeat"] < cutoff and r["status"] not in ("error", "shutdown")
            ),
            key=lambda r: (r["heartbeat"], r["id"]),
        )

    async def reap_stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        t, now = self.tables, self._now()
        reaped = []
        for rec in await self.stale_agents(tx, cutoff):
            new = {**rec, "status": "error", "updated_at": now}
            t.put(t.agents, rec["id"], new)
            reaped.append(new)
            for task in list(t.tasks.values()):
                if task["assigned_to"] == rec["id"] and task["status"] in rules.ACTIVE:
                    self._fail_attempt(task, rules.released_error(rec["id"]), now)
        return reaped

    # --- the transition routine -----------------------------------------------------------

    def _transition(
        self, old: Record, changes: dict[str, Any], now: int, *, retry: bool = False
    ) -> Record:
        """Every status change goes through here: legality, dependents, cascades."""
        t = self.tables
        new = {**old, **changes}
        old_status, new_status = old["status"], new["status"]
        rules.check_transition(old["id"], old_status, new_status, retry=retry)
        if new_status != old_status:
            if new_status in (ASSIGNED, RUNNING, COMPLETED) and t.unfinished.get(old["id"], 0):
                raise ValidationError(
                    f"task {old['id']!r} cannot be {new_status} before its dependencies complete",
                    field="task.status",
                )
            if new_status in rules.ACTIVE and new["assigned_to"] is None:
                raise ValidationError(
                    f"a {new_status} task needs assigned_to", field="task.assigned_to"
                )
        t.set_task(new)
        self._changed(TASKS)
        if new_status == old_status:
            return new
        if new_status in rules.TERMINAL:
            # Covers the cascade below too: a dependent is cancelled only under a final task.
            self._changed(FINISHED)
        if new_status == COMPLETED:
            for dep_id in t.dependents.get(old["id"], ()):
                left = t.unfinished[dep_id] - 1
                t.put(t.unfinished, dep_id, left)
                if left == 0:
                    t._queue(t.tasks[dep_id])
        elif new_status in (FAILED, CANCELLED):
            error = rules.cascade_error(old["id"], new_status)
            for dep_id in t.dependents.get(old["id"], ()):
                dep = t.tasks[dep_id]
                if dep["status"] not in rules.TERMINAL:
                    self._transition(dep, rules.cancel_changes(error, now), now)
        return new

    def _fail_attempt(self, rec: Record, error: str, now: int) -> Record:
        changes = rules.failure_changes(
            rec["retry_count"], rec["max_retries"], error, now, self._policy
        )
        return self._transition(rec, changes, now)

    def _expire_leases(self, now: int) -> None:
        for rec in self.tables.due_leases(now):
            log.info("lease of task %s held by %s expired", rec["id"], rec["assigned_to"])
            self._fail_attempt(rec, rules.lease_error(rec["assigned_to"]), now)

    def _held(self, task_id: str, agent_id: str, now: int) -> Record:
        self._expire_leases(now)
        rec = self.tables.tasks.get(task_id)
        if rec is None:
            raise NotFoundError("task", task_id)
        if (lost := rules.not_held(task_id, agent_id, rec)) is not None:
            raise lost
        return rec

    # --- tasks ----------------------------------------------------------------------------

    async def insert_tasks(
        self, tx: Any, recs: list[Record], raise_on_duplicate: bool
    ) -> list[str]:
        t = self.tables
        ids = [rec["id"] for rec in recs]
        if any(rec["dedup_key"] is not None for rec in recs):
            recs, ids = rules.dedup_batch(recs, t.dedup_holders, raise_on_duplicate)
        await self._insert_tasks(recs)
        return ids

    async def _insert_tasks(self, recs: list[Record]) -> None:
        t = self.tables
        batch: dict[str, Record] = {}
        deps_of: dict[str, list[str]] = {}
        for rec in recs:
            tid = rec["id"]
            if tid in t.tasks or tid in batch:
                raise ConflictError("task", tid)
            batch[tid] = rec
        for tid, rec in batch.items():
            deps = _json.loads(rec["dependencies"])
            for d in deps:
                if d == tid:
                    raise ValidationError(
                        f"task {tid!r} depends on itself", field="task.dependencies"
                    )
                if d not in t.tasks and d not in batch:
                    raise ValidationError(
                        f"task {tid!r} depends on unknown task {d!r}",
                        field="task.dependencies",
                    )
            deps_of[tid] = deps
        order = rules.topological(batch, deps_of)
        now = self._now()
        # Validate every task before writing any, so a bad batch changes nothing.
        status_of: dict[str, str] = {}
        planned: list[tuple[Record, int]] = []
        for tid in order:
            rec = batch[tid]
            unfinished = 0
            cause: tuple[str, str] | None = None
            for d in deps_of[tid]:
                st = (batch[d] if d in batch else t.tasks[d])["status"]
                st = status_of.get(d, st)
                if st != COMPLETED:
                    unfinished += 1
                if st in (FAILED, CANCELLED) and cause is None:
                    cause = (d, st)
            if cause is not None and rec["status"] not in rules.TERMINAL:
                rec = {**rec, **rules.cancel_changes(rules.cascade_error(*cause), now)}
            rules.check_stored_status(tid, rec["status"], rec["assigned_to"], unfinished)
            status_of[tid] = rec["status"]
            planned.append((rec, unfinished))
        for rec, unfinished in planned:
            tid = rec["id"]
            t.put(t.unfinished, tid, unfinished)
            for d in deps_of[tid]:
                lst = t.dependents.get(d)
                if lst is None:
                    t.put(t.dependents, d, [tid])
                else:
                    t.put(t.dependents, d, [*lst, tid])
            t.set_task(rec)
        if planned:
            self._changed(TASKS)

    async def get_task(self, tx: Any, task_id: str) -> Record | None:
        return self.tables.tasks.get(task_id)

    async def replace_task(self, tx: Any, rec: Record) -> None:
        t = self.tables
        old = t.tasks.get(rec["id"])
        if old is None:
            raise NotFoundError("task", rec["id"])
        changes, now = rules.update_changes(old, rec), self._now()
        claims = rules.update_claims(old["status"], changes["status"])
        key = old["concurrency_key"]
        if claims and not t.admits(key, now):
            raise rules.limit_reached(old["id"], key)
        new = self._transition(old, changes, now)
        if claims:
            t.note_claim(new, now)

    async def delete_task(self, tx: Any, task_id: str) -> None:
        t = self.tables
        rec = t.tasks.get(task_id)
        if rec is None:
            return
        if t.dependents.get(task_id):
            raise ConflictError("task", task_id, "has dependent tasks and cannot be deleted")
        for d in _json.loads(rec["dependencies"]):
            lst = t.dependents.get(d, [])
            t.put(t.dependents, d, [x for x in lst if x != task_id])
        t.drop(t.dependents, task_id)
        t.drop(t.unfinished, task_id)
        t.drop_task(rec)
        # Whoever waits for it to finish learns that it never will.
        self._changed(FINISHED)

    async def pending_tasks(self, tx: Any) -> list[Record]:
        return sorted(
            (r for r in self.tables.tasks.values() if r["status"] == PENDING), key=_claim_order
        )

    async def ready_tasks(self, tx: Any, limit: int | None) -> list[Record]:
        t, now = self.tables, self._now()
        recs = sorted(
            (
                r
                for r in t.tasks.values()
                if rules.is_ready(r["status"], t.unfinished.get(r["id"], 0), r["run_after"], now)
            ),
            key=_claim_order,
        )
        return recs[:limit]

    async def tasks_by_agent(self, tx: Any, agent_id: str) -> list[Record]:
        return sorted(
            (r for r in self.tables.tasks.values() if r["assigned_to"] == agent_id),
            key=_claim_order,
        )

    async def claim_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> bool:
        t, now = self.tables, self._now()
        self._expire_leases(now)
        rec = t.tasks.get(task_id)
        if (
            rec is None
            or not rules.is_ready(
                rec["status"], t.unfinished.get(task_id, 0), rec["run_after"], now
            )
            or not t.admits(rec["concurrency_key"], now)
        ):
            return False
        self._transition(rec, rules.claim_changes(agent_id, now, lease_us), now)
        t.note_claim(rec, now)
        return True

    async def claim_next_task(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int
    ) -> Record | None:
        t, now = self.tables, self._now()
        self._expire_leases(now)
        rec = t.pop_ready(types, now)
        if rec is None:
            return None
        new = self._transition(rec, rules.claim_changes(agent_id, now, lease_us), now)
        if t.limits:  # only a rate limit logs claims
            t.note_claim(new, now)
        return new

    async def claim_next_tasks(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int, n: int
    ) -> list[Record]:
        t, now = self.tables, self._now()
        self._expire_leases(now)
        changes = rules.claim_changes(agent_id, now, lease_us)
        out: list[Record] = []
        # Each claim is noted before the next pick, so the keys' limits count it.
        while len(out) < n and (rec := t.pop_ready(types, now)) is not None:
            new = self._transition(rec, changes, now)
            if t.limits:
                t.note_claim(new, now)
            out.append(new)
        return out

    async def set_queue_limit(
        self, tx: Any, key: str, kind: str, limit: int | None, period_us: int | None
    ) -> None:
        t = self.tables
        max_running, rate, period = t.limits.get(key, (None, None, None))
        if kind == "concurrency":
            max_running = limit
        else:
            rate, period = limit, period_us
            if rate is None:
                t.drop(t.claim_log, key)
        if max_running is None and rate is None:
            t.drop(t.limits, key)
        else:
            t.put(t.limits, key, (max_running, rate, period))
        self._changed(TASKS)  # a raised limit may let waiting tasks be claimed

    async def queue_limits(self, tx: Any) -> list[Record]:
        return [
            {"key": key, "max_running": m, "rate_limit": r, "rate_period": p}
            for key, (m, r, p) in sorted(self.tables.limits.items())
        ]

    async def start_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return self._transition(rec, rules.start_changes(now), now)

    async def complete_task(
        self, tx: Any, task_id: str, agent_id: str, result: str | None
    ) -> Record:
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return self._transition(rec, rules.complete_changes(result, now), now)

    async def complete_tasks(
        self, tx: Any, agent_id: str, pairs: list[tuple[str, str | None]]
    ) -> list[Record]:
        now = self._now()
        # Every task is checked before any is completed: a refused batch changes nothing
        # (but the leases found expired stay requeued, as for complete_task).
        held = [self._held(task_id, agent_id, now) for task_id, _ in pairs]
        return [
            self._transition(rec, rules.complete_changes(result, now), now)
            for rec, (_, result) in zip(held, pairs, strict=True)
        ]

    async def fail_task(self, tx: Any, task_id: str, agent_id: str, error: str) -> Record:
        now = self._now()
        return self._fail_attempt(self._held(task_id, agent_id, now), error, now)

    async def cancel_task(self, tx: Any, task_id: str, reason: str | None) -> list[str]:
        t, now = self.tables, self._now()
        self._expire_leases(now)
        rec = t.tasks.get(task_id)
        if rec is None:
            raise NotFoundError("task", task_id)
        if rec["status"] == CANCELLED:
            return []
        before = [tid for tid, r in t.tasks.items() if r["status"] not in rules.TERMINAL]
        self._transition(rec, rules.cancel_changes(reason, now), now)
        return [tid for tid in before if t.tasks[tid]["status"] == CANCELLED]

    async def heartbeat_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> Record:
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return self._transition(rec, {"lease_expires_at": now + lease_us, "updated_at": now}, now)

    async def release_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return self._transition(rec, rules.release_changes(now), now)

    async def failed_tasks(self, tx: Any, task_type: str | None, limit: int) -> list[Record]:
        return heapq.nlargest(
            limit,
            (
                r
                for r in self.tables.tasks.values()
                if r["status"] == FAILED and (task_type is None or r["task_type"] == task_type)
            ),
            key=_failure_order,
        )

    def _dead_dependency(self, rec: Record) -> tuple[str, str] | None:
        tasks = self.tables.tasks
        for dep_id in _json.loads(rec["dependencies"]):
            dep = tasks.get(dep_id)  # a pruned dependency had completed
            if dep is not None and dep["status"] in (FAILED, CANCELLED):
                return dep_id, dep["status"]
        return None

    async def retry_tasks(
        self, tx: Any, task_ids: list[str] | None, task_type: str | None
    ) -> list[Record]:
        t, now = self.tables, self._now()
        if task_ids is None:
            chosen = sorted(
                (
                    r
                    for r in t.tasks.values()
                    if r["status"] == FAILED
                    and (task_type is None or r["task_type"] == task_type)
                    and self._dead_dependency(r) is None
                ),
                key=_failure_order,
            )
        else:
            chosen = []
            for task_id in dict.fromkeys(task_ids):
                rec = t.tasks.get(task_id)
                if rec is None:
                    raise NotFoundError("task", task_id)
                rules.check_retry(task_id, rec["status"], self._dead_dependency(rec))
                chosen.append(rec)
        chosen = rules.retries_of_free_keys(chosen, t.dedup_holders, task_ids is not None)
        changes = rules.retry_changes(now)
        return [self._transition(rec, changes, now, retry=True) for rec in chosen]

    async def dependency_results(
        self, tx: Any, task_id: str
    ) -> list[tuple[str, str | None]] | None:
        tasks = self.tables.tasks
        rec = tasks.get(task_id)
        if rec is None:
            return None
        out = []
        for dep_id in _json.loads(rec["dependencies"]):
            # Only retention removes a dependency (completed, its dependents finished).
            dep = tasks.get(dep_id)
            if dep is not None and dep["status"] == COMPLETED:
                out.append((dep_id, dep["result"]))
        return out

    async def next_ready(self, tx: Any, types: list[str] | None) -> int | None:
        t, now = self.tables, self._now()
        soonest: int | None = None
        for r in t.tasks.values():
            if types is not None and r["task_type"] not in types:
                continue
            status = r["status"]
            if status == PENDING and not t.unfinished.get(r["id"], 0):
                due = r["run_after"]
                if due is None or due <= now:
                    key = r["concurrency_key"]
                    if t.admits(key, now):
                        return 0
                    # Held back by its key: a concurrency slot frees with a wake-up, a rate
                    # limit when its window moves on.
                    due = None if key is None else t.rate_frees_at(key, now)
                    if due is None:
                        continue
            elif status in rules.ACTIVE and r["lease_expires_at"] is not None:
                due = r["lease_expires_at"]  # a claim requeues the task then
                if due <= now:
                    return 0
            else:
                continue
            if soonest is None or due - now < soonest:
                soonest = max(due - now, 1)
        return soonest

    # --- events ---------------------------------------------------------------------------

    def _append_event(self, rec: Record) -> int:
        t = self.tables
        if t.undo is None and not t.read_only:
            # Outside a transaction nothing is undo-logged: the hottest write of the memory
            # backend skips the logged primitives (a quarter of its time when it used them).
            seq = t.event_seq = t.event_seq + 1
            rec["sequence"] = seq
            t.event_ids[rec["id"]] = rec
            t.events.append(rec)
            agent = rec["agent_id"]
            if agent is not None:
                t.events_by_agent.setdefault(agent, []).append(rec)
            t.events_by_type.setdefault(rec["event_type"], []).append(rec)
            return seq
        seq = t.event_seq + 1
        t.set_attr("event_seq", seq)
        rec["sequence"] = seq
        t.put(t.event_ids, rec["id"], rec)
        t.append(t.events, rec)
        if rec["agent_id"] is not None:
            lst = t.events_by_agent.get(rec["agent_id"])
            if lst is None:
                t.put(t.events_by_agent, rec["agent_id"], [rec])
            else:
                t.append(lst, rec)
        lst = t.events_by_type.get(rec["event_type"])
        if lst is None:
            t.put(t.events_by_type, rec["event_type"], [rec])
        else:
            t.append(lst, rec)
        return seq

    async def append_event(self, tx: Any, row: EventValues) -> int:
        if row[0] in self.tables.event_ids:
            raise ConflictError("event", row[0])
        seq = self._append_event(event_record(row))
        self._changed(EVENTS)
        return seq

    async def append_events(self, tx: Any, rows: list[EventValues]) -> list[int]:
        check_unique_ids([row[0] for row in rows], "event", self.tables.event_ids)
        seqs = [self._append_event(event_record(row)) for row in rows]
        self._changed(EVENTS)
        return seqs

    async def get_event(self, tx: Any, event_id: str) -> Record | None:
        return self.tables.event_ids.get(event_id)

    async def events_by_agent(self, tx: Any, agent_id: str, limit: int) -> list[Record]:
        return heapq.nlargest(limit, self.tables.events_by_agent.get(agent_id, ()), key=_newest)

    async def events_by_type(self, tx: Any, event_type: str, limit: int) -> list[Record]:
        return heapq.nlargest(limit, self.tables.events_by_type.get(event_type, ()), key=_newest)

    async def events_since(self, tx: Any, since: int) -> list[Record]:
        return sorted((r for r in self.tables.events if r["timestamp"] >= since), key=_newest)

    async def read_events(self, tx: Any, after: int, limit: int) -> list[Record]:
        events = self.tables.events
        i = bisect.bisect_right(events, after, key=lambda r: r["sequence"])
        return events[i : i + limit]

    # --- messages -------------------------------------------------------------------------

    async def insert_message(self, tx: Any, rec: Record) -> None:
        t = self.tables
        if rec["id"] in t.messages:
            raise ConflictError("message", rec["id"])
        t.put(t.messages, rec["id"], rec)
        self._changed(mail(rec["to_agent"]))

    async def get_message(self, tx: Any, message_id: str) -> Record | None:
        return self.tables.messages.get(message_id)

    async def delete_message(self, tx: Any, message_id: str) -> None:
        self.tables.drop(self.tables.messages, message_id)

    async def messages_between(self, tx: Any, a: str, b: str, limit: int) -> list[Record]:
        pair = {(a, b), (b, a)}
        return heapq.nlargest(
            limit,
            (m for m in self.tables.messages.values() if (m["from_agent"], m["to_agent"]) in pair),
            key=lambda m: (m["created_at"], m["id"]),
        )

    async def unread_messages(self, tx: Any, agent_id: str) -> list[Record]:
        return sorted(
            (
                m
                for m in self.tables.messages.values()
                if m["to_agent"] == agent_id and not m["read"]
            ),
            key=lambda m: (-m["priority"], m["created_at"], m["id"]),
        )

    async def mark_message_read(self, tx: Any, message_id: str) -> Record:
        t = self.tables
        rec = t.messages.get(message_id)
        if rec is None:
            raise NotFoundError("message", message_id)
        if not rec["read"]:
            rec = {**rec, "read": 1, "read_at": self._now()}
            t.put(t.messages, message_id, rec)
        return rec

    # --- metrics --------------------------------------------------------------------------

    async def insert_metrics(self, tx: Any, recs: list[Record]) -> None:
        t = self.tables
        check_unique_ids([rec["id"] for rec in recs], "metric", t.metrics)
        for rec in recs:
            t.put(t.metrics, rec["id"], rec)

    async def metrics_by_agent(
        self, tx: Any, agent_id: str, metric_type: str | None
    ) -> list[Record]:
        return sorted(
            (
                m
                for m in self.tables.metrics.values()
                if m["agent_id"] == agent_id
                and (metric_type is None or m["metric_type"] == metric_type)
            ),
            key=lambda m: (m["timestamp"], m["id"]),
        )

    def _metric_rows(self, metric_type: str, start: int, end: int) -> list[MetricRow]:
        return [
            MetricRow(m["agent_id"], m["unit"], m["tags"], m["value"], m["timestamp"])
            for m in self.tables.metrics.values()
            if m["metric_type"] == metric_type and start <= m["timestamp"] <= end
        ]

    async def crate_aggregate(
        self, tx: Any, metric_type: str, start: int, end: int
    ) -> list[MetricModel]:
        return crate_aggregate(metric_type, self._metric_rows(metric_type, start, end))

    async def aggregate_metrics(
        self,
        tx: Any,
        metric_type: str,
        start: int,
        end: int,
        groups: list[str],
        bucket_us: int | None,
    ) -> list[MetricAggregate]:
        rows = self._metric_rows(metric_type, start, end)
        return aggregate(metric_type, rows, tuple(groups), bucket_us)

    # --- schedules (the operations are those of .schedules.MemorySchedules) ----------------

    def _schedule_tables(self) -> _Tables:
        return self.tables

    async def _insert_at_once(self, tx: Any, rec: Record) -> None:
        # This class's own insert (it raises before anything changed): a subclass's may
        # wait for I/O, and another pass would then find the schedule still due.
        await MemoryEngine.insert_tasks(self, tx, [rec], True)

    # --- queries and maintenance -----------------------------------------------------------

    def _table_rows(self, table: str) -> list[Record]:
        t = self.tables
        source: list[Record] = {
            "agents": lambda: list(t.agents.values()),
            "tasks": lambda: list(t.tasks.values()),
            "events": lambda: list(t.events),
            "messages": lambda: list(t.messages.values()),
            "metrics": lambda: list(t.metrics.values()),
        }[table]()
        return source

    async def query(self, tx: Any, builder: QueryBuilder[Any]) -> list[Record]:
        return list(builder.apply(self._table_rows(builder.table)))

    async def count(
        self, tx: Any, builder: QueryBuilder[Any], group_by: tuple[str, ...]
    ) -> list[tuple[Any, ...]]:
        return builder.count_records(self._table_rows(builder.table), group_by)

    async def vacuum(self, tx: Any) -> None:
        """Drop stale queue entries (the memory backend's only reclaimable space)."""
        if self.tables.undo is None:
            self.tables.rebuild_queue()

    async def checkpoint(self, tx: Any) -> None:
        """Nothing to flush in memory."""

    async def storage_size(self, tx: Any) -> int:
        """Approximate bytes held by the stored records."""
        t = self.tables
        total = 0
        for table in (t.agents.values(), t.tasks.values(), t.events, t.messages.values(),
                      t.metrics.values()):  # fmt: skip
            for rec in table:
                total += sum(len(v) if isinstance(v, str) else 8 for v in rec.values())
        return total

    async def prune(
        self, tx: Any, events: int | None, metrics: int | None, read_messages: int | None
    ) -> PruneResult:
        t = self.tables
        result = PruneResult()
        if events is not None:
            result.events = drop_events(t, lambda r: r["timestamp"] < events)
        if metrics is not None:
            for mid, m in list(t.metrics.items()):
                if m["timestamp"] < metrics:
                    t.drop(t.metrics, mid)
                    result.metrics += 1
        if read_messages is not None:
            for mid, m in list(t.messages.items()):
                if m["read"] and m["read_at"] is not None and m["read_at"] < read_messages:
                    t.drop(t.messages, mid)
                    result.messages += 1
        return result

    async def retain(self, tx: Any, plan: RetentionPlan) -> PruneResult:
        return retain(self.tables, plan)

    async def retention_record(self, tx: Any) -> dict[str, int]:
        return dict(self.tables.meta)

    async def set_retention_record(self, tx: Any, record: dict[str, int]) -> None:
        self.tables.set_attr("meta", dict(record))
