"""The memory backend: dictionaries and heaps in one process, the reference semantics.

Rows are stored as records (see :mod:`ruv_swarm_persistence.codec`), exactly as the SQL
backends store them, so precision and validation match. Every operation runs without
awaiting in between, so it is atomic on the event loop. A transaction owns the engine until
it ends (other tasks' calls wait) and keeps an undo log; rollback replays it backwards.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Final

from .. import _json, codec, rules
from .._time import now_us, to_us
from ..aggregate import MetricRow, aggregate, crate_aggregate, grouping_args, window_args
from ..codec import Limits, Record
from ..errors import (
    ConflictError,
    DatabaseError,
    LeaseLostError,
    NotFoundError,
    ValidationError,
)
from ..models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
)
from ..query import QueryBuilder
from ..storage import (
    ACTIVE_TRANSACTION,
    Duration,
    MetricAggregate,
    PruneResult,
    TimeArg,
    Transaction,
)
from ..urls import ParsedUrl
from ._gate import GatedStorage, GatedTransaction
from ._wake import EVENTS, TASKS, Deadline, Wakeups, mail

__all__ = ["MemoryStorage", "open_url"]

log = logging.getLogger(__name__)

_MISSING: Final = object()
PENDING, ASSIGNED, RUNNING = rules.PENDING, rules.ASSIGNED, rules.RUNNING
COMPLETED, FAILED, CANCELLED = rules.COMPLETED, rules.FAILED, rules.CANCELLED
_DEFAULT_TX_TIMEOUT_US: Final = 30_000_000
_FLAGS: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _read_only_error() -> DatabaseError:
    return DatabaseError("the storage was opened read-only: every write is refused")


class _Engine:
    """The tables, indexes and task queue; synchronous, with an optional undo log."""

    def __init__(self, *, read_only: bool = False) -> None:
        self.read_only = read_only
        self.agents: dict[str, Record] = {}
        self.tasks: dict[str, Record] = {}
        self.unfinished: dict[str, int] = {}  # task id -> dependencies not yet completed
        self.dependents: dict[str, list[str]] = {}  # task id -> ids of tasks depending on it
        self.events: list[Record] = []  # in sequence order
        self.event_ids: dict[str, Record] = {}
        self.events_by_agent: dict[str, list[Record]] = {}
        self.events_by_type: dict[str, list[Record]] = {}
        self.event_seq = 0
        self.messages: dict[str, Record] = {}
        self.metrics: dict[str, Record] = {}
        self.undo: list[Callable[[], None]] | None = None
        # Task queue: heaps with lazy deletion, rebuilt from the tables after a rollback.
        self.ready: dict[str, list[tuple[int, int, str]]] = {}  # type -> (-prio, created, id)
        self.delayed: list[tuple[int, str]] = []  # (run_after, id)
        self.leases: list[tuple[int, str]] = []  # (lease_expires_at, id)

    # --- undo-logged primitives ---------------------------------------------------------

    def put(self, table: dict[str, Any], key: str, value: Any) -> None:
        if self.read_only:
            raise _read_only_error()
        if self.undo is not None:
            old = table.get(key, _MISSING)
            if old is _MISSING:
                self.undo.append(lambda: table.pop(key, None))
            else:
                self.undo.append(lambda: table.__setitem__(key, old))
        table[key] = value

    def drop(self, table: dict[str, Any], key: str) -> None:
        if self.read_only:
            raise _read_only_error()
        if key not in table:
            return
        if self.undo is not None:
            old = table[key]
            self.undo.append(lambda: table.__setitem__(key, old))
        del table[key]

    def append(self, items: list[Any], value: Any) -> None:
        if self.read_only:
            raise _read_only_error()
        if self.undo is not None:
            self.undo.append(items.pop)
        items.append(value)

    def set_attr(self, name: str, value: Any) -> None:
        if self.read_only:
            raise _read_only_error()
        if self.undo is not None:
            old = getattr(self, name)
            self.undo.append(lambda: setattr(self, name, old))
        setattr(self, name, value)

    # --- task queue -----------------------------------------------------------------------

    def _queue(self, rec: Record) -> None:
        """Index a task record in the queue heaps it may need."""
        status = rec["status"]
        if status == PENDING and self.unfinished.get(rec["id"], 0) == 0:
            heap = self.ready.get(rec["task_type"])
            if heap is None:
                heap = self.ready[rec["task_type"]] = []
            heapq.heappush(heap, (-rec["priority"], rec["created_at"], rec["id"]))
        elif status in rules.ACTIVE and rec["lease_expires_at"] is not None:
            heapq.heappush(self.leases, (rec["lease_expires_at"], rec["id"]))

    def rebuild_queue(self) -> None:
        self.ready = {}
        self.delayed = []
        self.leases = []
        for rec in self.tasks.values():
            self._queue(rec)

    def set_task(self, rec: Record) -> None:
        self.put(self.tasks, rec["id"], rec)
        self._queue(rec)

    def _valid_ready(self, entry: tuple[int, int, str]) -> Record | None:
        rec = self.tasks.get(entry[2])
        if (
            rec is None
            or rec["status"] != PENDING
            or self.unfinished.get(rec["id"], 0) != 0
            or -rec["priority"] != entry[0]
            or rec["created_at"] != entry[1]
        ):
            return None
        return rec

    def promote_delayed(self, now: int) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, task_id = heapq.heappop(delayed)
            rec = self.tasks.get(task_id)
            if rec is not None:
                self._queue(rec)

    def pop_ready(self, types: Sequence[str] | None, now: int) -> Record | None:
        """Remove and return the best ready task of these types, or None."""
        self.promote_delayed(now)
        heaps = (
            list(self.ready.values())
            if types is None
            else [self.ready[t] for t in types if t in self.ready]
        )
        while True:
            best: list[tuple[int, int, str]] | None = None
            for heap in heaps:
                while heap and self._valid_ready(heap[0]) is None:
                    heapq.heappop(heap)
                if heap and (best is None or heap[0] < best[0]):
                    best = heap
            if best is None:
                return None
            entry = heapq.heappop(best)
            rec = self.tasks[entry[2]]
            run_after = rec["run_after"]
            if run_after is not None and run_after > now:
                heapq.heappush(self.delayed, (run_after, rec["id"]))
                continue
            return rec

    def due_leases(self, now: int) -> list[Record]:
        out = []
        leases = self.leases
        while leases and leases[0][0] <= now:
            expires, task_id = heapq.heappop(leases)
            rec = self.tasks.get(task_id)
            if (
                rec is not None
                and rec["lease_expires_at"] == expires
                and rec["status"] in rules.ACTIVE
            ):
                out.append(rec)
        return out


class MemoryStorage(GatedStorage["MemoryTransaction"]):
    """Everything in one process's memory; the reference implementation of the semantics.

    Options: ``clock`` (a callable returning an aware ``datetime``; the default is the system
    clock), ``lease`` (default lease, 30 s), ``retry_policy``, ``limits`` and
    ``transaction_timeout`` (30 s). ``migrate`` is accepted for symmetry with the SQL
    backends (there is no schema); ``read_only=True`` refuses every write with a
    ``DatabaseError``, as a read-only SQL storage does.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        lease: Duration = 30,
        retry_policy: rules.RetryPolicy | None = None,
        limits: Limits | None = None,
        transaction_timeout: Duration = 30,
        migrate: bool = True,
        read_only: bool = False,
    ) -> None:
        for flag, value in (("migrate", migrate), ("read_only", read_only)):
            if not isinstance(value, bool):
                raise ValidationError(f"{value!r} is not true or false", field=flag)
        self._engine = _Engine(read_only=read_only)
        self._now: Callable[[], int] = now_us if clock is None else (lambda: to_us(clock()))
        self._lease_us = codec.duration_arg(lease, "lease")
        self._policy = retry_policy or rules.RetryPolicy()
        self._limits = limits or codec.DEFAULT_LIMITS
        self._tx_timeout_us = codec.duration_arg(transaction_timeout, "transaction_timeout")
        self._closed = False
        self._init_gate()
        self._wake = Wakeups()
        # Keys changed inside the open transaction: woken at its commit, forgotten at rollback.
        self._deferred: set[str] = set()

    @classmethod
    async def open(cls, **options: Any) -> MemoryStorage:
        """Create an empty memory storage (``init_storage("memory://")`` does the same)."""
        return cls(**options)

    # --- notifications ----------------------------------------------------------------------

    def _changed(self, key: str) -> None:
        if self._engine.undo is not None:
            self._deferred.add(key)
        else:
            self._wake.wake(key)

    def _events_changed(self) -> None:
        self._changed(EVENTS)

    def _tasks_changed(self) -> None:
        self._changed(TASKS)

    def _mail_changed(self, agent_id: str) -> None:
        self._changed(mail(agent_id))

    # --- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the storage; waiting subscribers, mail and task waiters return."""
        if self._closed:
            return
        if self._tx is not None:
            self._tx.abort("storage closed")
        self._closed = True
        self._blocked = True
        self._wake.wake_all()
        self._release_tx()

    # --- agents ---------------------------------------------------------------------------

    async def store_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        if rec["id"] in e.agents:
            raise ConflictError("agent", rec["id"])
        e.put(e.agents, rec["id"], rec)

    async def get_agent(self, agent_id: str) -> AgentModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        if self._blocked:
            await self._gate()
        rec = self._engine.agents.get(agent_id)
        return None if rec is None else codec.decode_agent(rec)

    async def update_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        if rec["id"] not in e.agents:
            raise NotFoundError("agent", rec["id"])
        e.put(e.agents, rec["id"], rec)

    async def delete_agent(self, agent_id: str) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        if agent_id not in e.agents:
            return
        e.drop(e.agents, agent_id)
        for mid, m in list(e.messages.items()):
            if m["from_agent"] == agent_id or m["to_agent"] == agent_id:
                e.drop(e.messages, mid)
        now = self._now()
        for task_id in [t["id"] for t in e.tasks.values() if t["assigned_to"] == agent_id]:
            # Read the task now: an earlier requeue may have cascaded into it.
            rec = e.tasks[task_id]
            if rec["status"] in rules.ACTIVE:
                self._fail_attempt(rec, rules.released_error(agent_id), now)
                rec = e.tasks[rec["id"]]
            if rec["assigned_to"] is not None:
                e.set_task({**rec, "assigned_to": None})

    async def list_agents(self) -> list[AgentModel]:
        if self._blocked:
            await self._gate()
        recs = sorted(self._engine.agents.values(), key=lambda r: (r["created_at"], r["id"]))
        return [codec.decode_agent(r) for r in recs]

    async def list_agents_by_status(self, status: AgentStatus | str) -> list[AgentModel]:
        value = codec._enum(AgentStatus, status, "status").value
        if self._blocked:
            await self._gate()
        recs = sorted(
            (r for r in self._engine.agents.values() if r["status"] == value),
            key=lambda r: (r["created_at"], r["id"]),
        )
        return [codec.decode_agent(r) for r in recs]

    async def heartbeat(self, agent_id: str, at: TimeArg | None = None) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        stamp = codec.opt_time_arg(at, "at")
        if self._blocked:
            await self._gate()
        e = self._engine
        rec = e.agents.get(agent_id)
        if rec is None:
            raise NotFoundError("agent", agent_id)
        now = self._now()
        e.put(
            e.agents,
            agent_id,
            {**rec, "heartbeat": now if stamp is None else stamp, "updated_at": now},
        )

    def _stale(self, cutoff: int) -> list[Record]:
        return sorted(
            (
                r
                for r in self._engine.agents.values()
                if r["heartbeat"] < cutoff and r["status"] not in ("error", "shutdown")
            ),
            key=lambda r: (r["heartbeat"], r["id"]),
        )

    async def find_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        cutoff = codec.cutoff_arg(older_than, "older_than", self._now())
        if self._blocked:
            await self._gate()
        return [codec.decode_agent(r) for r in self._stale(cutoff)]

    async def reap_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        now = self._now()
        cutoff = codec.cutoff_arg(older_than, "older_than", now)
        if self._blocked:
            await self._gate()
        e = self._engine
        reaped = []
        for rec in self._stale(cutoff):
            new = {**rec, "status": "error", "updated_at": now}
            e.put(e.agents, rec["id"], new)
            reaped.append(new)
            for t in list(e.tasks.values()):
                if t["assigned_to"] == rec["id"] and t["status"] in rules.ACTIVE:
                    self._fail_attempt(t, rules.released_error(rec["id"]), now)
        return [codec.decode_agent(r) for r in reaped]

    # --- the transition routine -------------------------------------------------------------

    def _transition(self, old: Record, changes: dict[str, Any], now: int) -> Record:
        """Every status change goes through here: legality, dependents, cascades."""
        e = self._engine
        new = {**old, **changes}
        old_status, new_status = old["status"], new["status"]
        rules.check_transition(old["id"], old_status, new_status)
        if new_status != old_status:
            if new_status in (ASSIGNED, RUNNING, COMPLETED) and e.unfinished.get(old["id"], 0):
                raise ValidationError(
                    f"task {old['id']!r} cannot be {new_status} before its dependencies complete",
                    field="task.status",
                )
            if new_status in rules.ACTIVE and new["assigned_to"] is None:
                raise ValidationError(
                    f"a {new_status} task needs assigned_to", field="task.assigned_to"
                )
        e.set_task(new)
        self._tasks_changed()
        if new_status == old_status:
            return new
        if new_status == COMPLETED:
            for dep_id in e.dependents.get(old["id"], ()):
                left = e.unfinished[dep_id] - 1
                e.put(e.unfinished, dep_id, left)
                if left == 0:
                    e._queue(e.tasks[dep_id])
        elif new_status in (FAILED, CANCELLED):
            error = rules.cascade_error(old["id"], new_status)
            for dep_id in e.dependents.get(old["id"], ()):
                dep = e.tasks[dep_id]
                if dep["status"] not in rules.TERMINAL:
                    self._transition(dep, rules.cancel_changes(error, now), now)
        return new

    def _fail_attempt(self, rec: Record, error: str, now: int) -> Record:
        changes = rules.failure_changes(
            rec["retry_count"], rec["max_retries"], error, now, self._policy
        )
        return self._transition(rec, changes, now)

    def _expire_leases(self, now: int) -> None:
        for rec in self._engine.due_leases(now):
            log.info("lease of task %s held by %s expired", rec["id"], rec["assigned_to"])
            self._fail_attempt(rec, rules.lease_error(rec["assigned_to"]), now)

    def _held(self, task_id: str, agent_id: str, now: int) -> Record:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)
        self._expire_leases(now)
        rec = self._engine.tasks.get(task_id)
        if rec is None:
            raise NotFoundError("task", task_id)
        if rec["status"] not in rules.ACTIVE or rec["assigned_to"] != agent_id:
            raise LeaseLostError(task_id, agent_id, f"task is {rec['status']}")
        return rec

    # --- tasks ----------------------------------------------------------------------------

    async def store_task(self, task: TaskModel) -> None:
        await self.store_tasks([task])

    async def store_tasks(self, tasks: Sequence[TaskModel]) -> None:
        recs = codec.encode_batch(tasks, codec.encode_task, "tasks", self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        batch: dict[str, Record] = {}
        deps_of: dict[str, list[str]] = {}
        for rec in recs:
            tid = rec["id"]
            if tid in e.tasks or tid in batch:
                raise ConflictError("task", tid)
            batch[tid] = rec
        for tid, rec in batch.items():
            deps = _json.loads(rec["dependencies"])
            for d in deps:
                if d == tid:
                    raise ValidationError(
                        f"task {tid!r} depends on itself", field="task.dependencies"
                    )
                if d not in e.tasks and d not in batch:
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
                st = (batch[d] if d in batch else e.tasks[d])["status"]
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
            e.put(e.unfinished, tid, unfinished)
            for d in deps_of[tid]:
                lst = e.dependents.get(d)
                if lst is None:
                    e.put(e.dependents, d, [tid])
                else:
                    e.put(e.dependents, d, [*lst, tid])
            e.set_task(rec)
        if planned:
            self._tasks_changed()

    async def get_task(self, task_id: str) -> TaskModel | None:
        codec.check_id(task_id, "task_id", self._limits)
        if self._blocked:
            await self._gate()
        rec = self._engine.tasks.get(task_id)
        return None if rec is None else codec.decode_task(rec)

    async def update_task(self, task: TaskModel) -> None:
        rec = codec.encode_task(task, self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        old = e.tasks.get(rec["id"])
        if old is None:
            raise NotFoundError("task", rec["id"])
        changes = rules.update_changes(old, rec)
        self._transition(old, changes, self._now())

    async def delete_task(self, task_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        rec = e.tasks.get(task_id)
        if rec is None:
            return
        if e.dependents.get(task_id):
            raise ConflictError("task", task_id, "has dependent tasks and cannot be deleted")
        for d in _json.loads(rec["dependencies"]):
            lst = e.dependents.get(d, [])
            e.put(e.dependents, d, [x for x in lst if x != task_id])
        e.drop(e.dependents, task_id)
        e.drop(e.unfinished, task_id)
        e.drop(e.tasks, task_id)

    async def get_pending_tasks(self) -> list[TaskModel]:
        if self._blocked:
            await self._gate()
        recs = sorted(
            (r for r in self._engine.tasks.values() if r["status"] == PENDING),
            key=_claim_order,
        )
        return [codec.decode_task(r) for r in recs]

    async def get_ready_tasks(self, limit: int | None = None) -> list[TaskModel]:
        n = None if limit is None else codec.limit_arg(limit)
        if self._blocked:
            await self._gate()
        e, now = self._engine, self._now()
        recs = sorted(
            (
                r
                for r in e.tasks.values()
                if rules.is_ready(r["status"], e.unfinished.get(r["id"], 0), r["run_after"], now)
            ),
            key=_claim_order,
        )
        return [codec.decode_task(r) for r in recs[:n]]

    async def get_tasks_by_agent(self, agent_id: str) -> list[TaskModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        if self._blocked:
            await self._gate()
        recs = sorted(
            (r for r in self._engine.tasks.values() if r["assigned_to"] == agent_id),
            key=_claim_order,
        )
        return [codec.decode_task(r) for r in recs]

    def _lease(self, lease: Duration | None) -> int:
        return self._lease_us if lease is None else codec.duration_arg(lease, "lease")

    async def claim_task(self, task_id: str, agent_id: str, lease: Duration | None = None) -> bool:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)
        lease_us = self._lease(lease)
        if self._blocked:
            await self._gate()
        e, now = self._engine, self._now()
        self._expire_leases(now)
        rec = e.tasks.get(task_id)
        if rec is None or not rules.is_ready(
            rec["status"], e.unfinished.get(task_id, 0), rec["run_after"], now
        ):
            return False
        self._transition(rec, rules.claim_changes(agent_id, now, lease_us), now)
        return True

    async def claim_next_task(
        self,
        agent_id: str,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> TaskModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        types = codec.types_arg(task_types)
        lease_us = self._lease(lease)
        if self._blocked:
            await self._gate()
        now = self._now()
        self._expire_leases(now)
        rec = self._engine.pop_ready(types, now)
        if rec is None:
            return None
        return codec.decode_task(
            self._transition(rec, rules.claim_changes(agent_id, now, lease_us), now)
        )

    async def start_task(self, task_id: str, agent_id: str) -> TaskModel:
        if self._blocked:
            await self._gate()
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return codec.decode_task(self._transition(rec, rules.start_changes(now), now))

    async def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        encoded = None if result is None else codec._json_field(result, "result", self._limits)
        if self._blocked:
            await self._gate()
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return codec.decode_task(self._transition(rec, rules.complete_changes(encoded, now), now))

    async def fail_task(self, task_id: str, agent_id: str, error: str) -> TaskModel:
        codec.check_text(error, "error", self._limits, empty_ok=True)
        if self._blocked:
            await self._gate()
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return codec.decode_task(self._fail_attempt(rec, error, now))

    async def cancel_task(self, task_id: str, reason: str | None = None) -> list[str]:
        codec.check_id(task_id, "task_id", self._limits)
        if reason is not None:
            codec.check_text(reason, "reason", self._limits, empty_ok=True)
        if self._blocked:
            await self._gate()
        e, now = self._engine, self._now()
        self._expire_leases(now)
        rec = e.tasks.get(task_id)
        if rec is None:
            raise NotFoundError("task", task_id)
        if rec["status"] == CANCELLED:
            return []
        before = {
            tid: r["status"] for tid, r in e.tasks.items() if r["status"] not in rules.TERMINAL
        }
        self._transition(rec, rules.cancel_changes(reason, now), now)
        return [tid for tid in before if e.tasks[tid]["status"] == CANCELLED]

    async def heartbeat_task(
        self, task_id: str, agent_id: str, lease: Duration | None = None
    ) -> TaskModel:
        lease_us = self._lease(lease)
        if self._blocked:
            await self._gate()
        now = self._now()
        rec = self._held(task_id, agent_id, now)
        return codec.decode_task(
            self._transition(rec, {"lease_expires_at": now + lease_us, "updated_at": now}, now)
        )

    def _next_ready(self, types: Sequence[str] | None) -> int | None:
        """0 if a task of these types is ready now, else when the next one's backoff ends."""
        e, now = self._engine, self._now()
        soonest: int | None = None
        for r in e.tasks.values():
            if r["status"] != PENDING or e.unfinished.get(r["id"], 0):
                continue
            if types is not None and r["task_type"] not in types:
                continue
            run_after = r["run_after"]
            if run_after is None or run_after <= now:
                return 0
            if soonest is None or run_after - now < soonest:
                soonest = run_after - now
        return soonest

    async def wait_for_tasks(
        self, timeout: Duration | None = None, task_types: Sequence[str] | None = None
    ) -> bool:
        types = codec.types_arg(task_types)
        deadline = Deadline(timeout)
        while True:
            if self._blocked:
                await self._gate()
            gen = self._wake.generation(TASKS)
            due_us = self._next_ready(types)
            if due_us == 0:
                return True
            if self._closed or deadline.expired():
                return False
            await self._wake.wait(TASKS, gen, deadline.wait_before(due_us))
            if self._closed:
                return False

    # --- events ---------------------------------------------------------------------------

    def _append_event(self, rec: Record) -> int:
        e = self._engine
        seq = e.event_seq + 1
        e.set_attr("event_seq", seq)
        rec["sequence"] = seq
        e.put(e.event_ids, rec["id"], rec)
        e.append(e.events, rec)
        if rec["agent_id"] is not None:
            lst = e.events_by_agent.get(rec["agent_id"])
            if lst is None:
                e.put(e.events_by_agent, rec["agent_id"], [rec])
            else:
                e.append(lst, rec)
        lst = e.events_by_type.get(rec["event_type"])
        if lst is None:
            e.put(e.events_by_type, rec["event_type"], [rec])
        else:
            e.append(lst, rec)
        return seq

    async def store_event(self, event: EventModel) -> int:
        rec = codec.encode_event(event, self._limits)
        if self._blocked:
            await self._gate()
        if rec["id"] in self._engine.event_ids:
            raise ConflictError("event", rec["id"])
        seq = self._append_event(rec)
        event.sequence = seq
        self._events_changed()
        return seq

    async def store_events(self, events: Sequence[EventModel]) -> list[int]:
        recs = codec.encode_batch(events, codec.encode_event, "events", self._limits)
        if self._blocked:
            await self._gate()
        codec.check_unique_ids([rec["id"] for rec in recs], "event", self._engine.event_ids)
        seqs = [self._append_event(rec) for rec in recs]
        for ev, seq in zip(events, seqs, strict=True):
            ev.sequence = seq
        if seqs:
            self._events_changed()
        return seqs

    async def get_events_by_agent(self, agent_id: str, limit: int = 100) -> list[EventModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        n = codec.limit_arg(limit)
        if self._blocked:
            await self._gate()
        recs = heapq.nlargest(n, self._engine.events_by_agent.get(agent_id, ()), key=_newest)
        return [codec.decode_event(r) for r in recs]

    async def get_events_by_type(self, event_type: str, limit: int = 100) -> list[EventModel]:
        codec.check_text(event_type, "event_type", self._limits)
        n = codec.limit_arg(limit)
        if self._blocked:
            await self._gate()
        recs = heapq.nlargest(n, self._engine.events_by_type.get(event_type, ()), key=_newest)
        return [codec.decode_event(r) for r in recs]

    async def get_events_since(self, since: TimeArg) -> list[EventModel]:
        t = codec.time_arg(since, "since")
        if self._blocked:
            await self._gate()
        recs = sorted((r for r in self._engine.events if r["timestamp"] >= t), key=_newest)
        return [codec.decode_event(r) for r in recs]

    async def read_events(self, after_sequence: int = 0, limit: int = 1000) -> list[EventModel]:
        after = codec.limit_arg(after_sequence, "after_sequence")
        n = codec.limit_arg(limit)
        if self._blocked:
            await self._gate()
        events = self._engine.events
        i = bisect.bisect_right(events, after, key=lambda r: r["sequence"])
        return [codec.decode_event(r) for r in events[i : i + n]]

    async def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[EventModel]:
        last = codec.limit_arg(after_sequence, "after_sequence")
        types = None if event_types is None else frozenset(codec.types_arg(event_types) or ())
        while not self._closed:
            gen = self._wake.generation(EVENTS)
            batch = await self.read_events(last, 500)
            for ev in batch:
                last = ev.sequence or last
                if types is None or ev.event_type in types:
                    yield ev
            if len(batch) < 500:
                await self._wake.wait(EVENTS, gen)

    # --- messages -------------------------------------------------------------------------

    async def store_message(self, message: MessageModel) -> None:
        rec = codec.encode_message(message, self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        if rec["id"] in e.messages:
            raise ConflictError("message", rec["id"])
        e.put(e.messages, rec["id"], rec)
        self._mail_changed(rec["to_agent"])

    async def get_message(self, message_id: str) -> MessageModel | None:
        codec.check_id(message_id, "message_id", self._limits)
        if self._blocked:
            await self._gate()
        rec = self._engine.messages.get(message_id)
        return None if rec is None else codec.decode_message(rec)

    async def delete_message(self, message_id: str) -> None:
        codec.check_id(message_id, "message_id", self._limits)
        if self._blocked:
            await self._gate()
        self._engine.drop(self._engine.messages, message_id)

    async def get_messages_between(
        self, agent_a: str, agent_b: str, limit: int = 100
    ) -> list[MessageModel]:
        codec.check_id(agent_a, "agent_a", self._limits)
        codec.check_id(agent_b, "agent_b", self._limits)
        n = codec.limit_arg(limit)
        if self._blocked:
            await self._gate()
        pair = {(agent_a, agent_b), (agent_b, agent_a)}
        recs = heapq.nlargest(
            n,
            (m for m in self._engine.messages.values() if (m["from_agent"], m["to_agent"]) in pair),
            key=lambda m: (m["created_at"], m["id"]),
        )
        return [codec.decode_message(r) for r in recs]

    def _unread(self, agent_id: str) -> list[Record]:
        return sorted(
            (
                m
                for m in self._engine.messages.values()
                if m["to_agent"] == agent_id and not m["read"]
            ),
            key=lambda m: (-m["priority"], m["created_at"], m["id"]),
        )

    async def get_unread_messages(self, agent_id: str) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        if self._blocked:
            await self._gate()
        return [codec.decode_message(r) for r in self._unread(agent_id)]

    async def mark_message_read(self, message_id: str) -> MessageModel:
        codec.check_id(message_id, "message_id", self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        rec = e.messages.get(message_id)
        if rec is None:
            raise NotFoundError("message", message_id)
        if not rec["read"]:
            rec = {**rec, "read": 1, "read_at": self._now()}
            e.put(e.messages, message_id, rec)
        return codec.decode_message(rec)

    async def wait_for_messages(
        self, agent_id: str, timeout: Duration | None = None
    ) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        deadline = Deadline(timeout)
        key = mail(agent_id)
        while True:
            gen = self._wake.generation(key)
            unread = await self.get_unread_messages(agent_id)
            if unread or self._closed:
                return unread
            if deadline.expired():
                return []
            await self._wake.wait(key, gen, deadline.remaining())
            if self._closed:
                # Woken by close(): return like a timeout instead of failing the next read.
                return []

    # --- metrics --------------------------------------------------------------------------

    async def store_metric(self, metric: MetricModel) -> None:
        await self.store_metrics([metric])

    async def store_metrics(self, metrics: Sequence[MetricModel]) -> None:
        recs = codec.encode_batch(metrics, codec.encode_metric, "metrics", self._limits)
        if self._blocked:
            await self._gate()
        e = self._engine
        codec.check_unique_ids([rec["id"] for rec in recs], "metric", e.metrics)
        for rec in recs:
            e.put(e.metrics, rec["id"], rec)

    async def get_metrics_by_agent(
        self, agent_id: str, metric_type: str | None = None
    ) -> list[MetricModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        if metric_type is not None:
            codec.check_text(metric_type, "metric_type", self._limits)
        if self._blocked:
            await self._gate()
        recs = sorted(
            (
                m
                for m in self._engine.metrics.values()
                if m["agent_id"] == agent_id
                and (metric_type is None or m["metric_type"] == metric_type)
            ),
            key=lambda m: (m["timestamp"], m["id"]),
        )
        return [codec.decode_metric(r) for r in recs]

    def _metric_rows(self, metric_type: str, start: int, end: int) -> list[MetricRow]:
        return [
            MetricRow(m["agent_id"], m["unit"], m["tags"], m["value"], m["timestamp"])
            for m in self._engine.metrics.values()
            if m["metric_type"] == metric_type and start <= m["timestamp"] <= end
        ]

    async def get_aggregated_metrics(
        self, metric_type: str, start: TimeArg, end: TimeArg
    ) -> list[MetricModel]:
        _, s, t = window_args(metric_type, start, end, self._limits)
        if self._blocked:
            await self._gate()
        return crate_aggregate(metric_type, self._metric_rows(metric_type, s, t))

    async def aggregate_metrics(
        self,
        metric_type: str,
        start: TimeArg,
        end: TimeArg,
        group_by: Sequence[str] = ("agent_id",),
        bucket: Duration | None = None,
    ) -> list[MetricAggregate]:
        _, s, t = window_args(metric_type, start, end, self._limits)
        groups, bucket_us = grouping_args(group_by, bucket)
        if self._blocked:
            await self._gate()
        return aggregate(metric_type, self._metric_rows(metric_type, s, t), groups, bucket_us)

    # --- transactions ---------------------------------------------------------------------

    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        timeout_us = (
            self._tx_timeout_us if timeout is None else codec.duration_arg(timeout, "timeout")
        )
        tx = await self._hold(lambda: MemoryTransaction(self, timeout_us / 1e6))
        self._engine.undo = []
        ACTIVE_TRANSACTION.set(tx)
        return tx

    def _finish(self, tx: MemoryTransaction, commit: bool) -> None:
        e = self._engine
        undo, e.undo = e.undo or [], None
        keys, self._deferred = self._deferred, set()
        if commit:
            for key in keys:
                self._wake.wake(key)
        else:
            for step in reversed(undo):
                step()
            e.rebuild_queue()
        if ACTIVE_TRANSACTION.get() is tx:
            ACTIVE_TRANSACTION.set(None)
        self._release_tx()

    # --- queries and maintenance -------------------------------------------------------------

    async def query(self, builder: QueryBuilder[Any]) -> list[Any]:
        if not isinstance(builder, QueryBuilder):
            raise ValidationError("expected a QueryBuilder", field="builder")
        if self._blocked:
            await self._gate()
        e = self._engine
        source: list[Record] = {
            "agents": lambda: list(e.agents.values()),
            "tasks": lambda: list(e.tasks.values()),
            "events": lambda: list(e.events),
            "messages": lambda: list(e.messages.values()),
            "metrics": lambda: list(e.metrics.values()),
        }[builder.table]()
        decode = codec.DECODERS[builder.table]
        return [decode(r) for r in builder.apply(source)]

    async def vacuum(self) -> None:
        """Drop stale queue entries (the memory backend's only reclaimable space)."""
        if self._blocked:
            await self._gate()
        if self._engine.undo is None:
            self._engine.rebuild_queue()

    async def checkpoint(self) -> None:
        """Nothing to flush in memory; checks the storage is open."""
        if self._blocked:
            await self._gate()

    async def get_storage_size(self) -> int:
        """Approximate bytes held by the stored records."""
        if self._blocked:
            await self._gate()
        e = self._engine
        total = 0
        for table in (
            e.agents.values(),
            e.tasks.values(),
            e.events,
            e.messages.values(),
            e.metrics.values(),
        ):
            for rec in table:
                total += sum(len(v) if isinstance(v, str) else 8 for v in rec.values())
        return total

    async def prune(
        self,
        events_before: TimeArg | None = None,
        metrics_before: TimeArg | None = None,
        read_messages_before: TimeArg | None = None,
    ) -> PruneResult:
        ev_t = codec.opt_time_arg(events_before, "events_before")
        me_t = codec.opt_time_arg(metrics_before, "metrics_before")
        ms_t = codec.opt_time_arg(read_messages_before, "read_messages_before")
        if self._blocked:
            await self._gate()
        e = self._engine
        result = PruneResult()
        if ev_t is not None:
            keep = [r for r in e.events if r["timestamp"] >= ev_t]
            result.events = len(e.events) - len(keep)
            if result.events:
                e.set_attr("events", keep)
                e.set_attr("event_ids", {r["id"]: r for r in keep})
                by_agent: dict[str, list[Record]] = {}
                by_type: dict[str, list[Record]] = {}
                for r in keep:
                    if r["agent_id"] is not None:
                        by_agent.setdefault(r["agent_id"], []).append(r)
                    by_type.setdefault(r["event_type"], []).append(r)
                e.set_attr("events_by_agent", by_agent)
                e.set_attr("events_by_type", by_type)
        if me_t is not None:
            for mid, m in list(e.metrics.items()):
                if m["timestamp"] < me_t:
                    e.drop(e.metrics, mid)
                    result.metrics += 1
        if ms_t is not None:
            for mid, m in list(e.messages.items()):
                if m["read"] and m["read_at"] is not None and m["read_at"] < ms_t:
                    e.drop(e.messages, mid)
                    result.messages += 1
        return result


class MemoryTransaction(GatedTransaction):
    """A transaction of :class:`MemoryStorage`: owns the engine, undone on rollback."""

    def __init__(self, storage: MemoryStorage, timeout_s: float) -> None:
        super().__init__(storage)
        self._memory = storage
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        if self._state == "active":
            log.warning("transaction open past its timeout; rolled back")
            self._state = "timed_out"
            self._memory._orphaned += 1
            self._memory._finish(self, commit=False)

    def abort(self, why: str) -> None:
        """Roll back at once (used when the storage closes)."""
        if self._state == "active":
            self._timer.cancel()
            self._state = "rolled back"
            self._memory._finish(self, commit=False)
            log.warning("transaction rolled back: %s", why)

    async def commit(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._timer.cancel()
        self._state = "committed"
        self._memory._finish(self, commit=True)

    async def rollback(self) -> None:
        self._acknowledge_timeout()
        self.check_active()
        self._timer.cancel()
        self._state = "rolled back"
        self._memory._finish(self, commit=False)


def _claim_order(r: Record) -> tuple[int, int, str]:
    return (-r["priority"], r["created_at"], r["id"])


def _newest(r: Record) -> tuple[int, int]:
    return (r["timestamp"], r["sequence"])


async def open_url(parsed: ParsedUrl, options: dict[str, Any]) -> MemoryStorage:
    """Open a memory storage for ``memory://`` (URL options are not used)."""
    unknown = set(parsed.options) - {"lease", "transaction_timeout", "migrate", "read_only"}
    if unknown:
        raise ValidationError(
            f"unknown memory:// option(s): {', '.join(sorted(unknown))}", field="url"
        )
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("migrate", "read_only") and isinstance(value, str):
            if value.lower() not in _FLAGS:
                raise ValidationError(f"{value!r} is not true or false", field=key)
            kwargs[key] = _FLAGS[value.lower()]
        elif key in ("lease", "transaction_timeout") and isinstance(value, str):
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise ValidationError(f"{value!r} is not a number of seconds", field=key) from None
        else:
            kwargs[key] = value
    return MemoryStorage(**kwargs)
