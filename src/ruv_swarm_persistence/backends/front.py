"""The public ``Storage`` methods, written once for every backend.

Each method checks its arguments through :mod:`~ruv_swarm_persistence.codec`, left to right
in signature order and before any waiting or I/O; takes the transaction gate; calls the
backend's :class:`~.engine.Engine` with validated values; and decodes the records that come
back. Bad arguments therefore raise the same error, naming the same field, on every backend
by construction. The waits (``subscribe``, ``wait_for_messages``, ``wait_for_tasks``,
``wait_for_task``) are written here too, on the shared :class:`~._wake.Wakeups`.

A backend's storage is a :class:`~._gate.GatedStorage` (a :class:`Front` whose gate makes
other tasks wait for an open transaction) and keeps what is its own: opening and closing, and
how a transaction begins and ends. Its transaction is a :class:`~._gate.GatedTransaction`, the
same front over the same engine whose gate is the transaction itself, so a call through the
transaction and a call on the storage from the task that began it take one path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .. import _json, codec, rules, schedules
from .._time import from_us
from ..aggregate import grouping_args, window_args
from ..codec import Limits
from ..errors import NotFoundError, SerializationError, ValidationError
from ..models import AgentModel, AgentStatus, EventModel, MessageModel, MetricModel, TaskModel
from ..query import KINDS, QueryBuilder
from ..retention import (
    TABLES,
    RetentionPlan,
    RetentionPolicy,
    RetentionReport,
    parse_retention,
    retention_counts,
)
from ..schedules import ScheduleModel
from ..storage import Duration, MetricAggregate, PruneResult, QueueLimit, Storage, TimeArg
from ._wake import EVENTS, FINISHED, TASKS, Deadline, Wakeups, mail
from .engine import Engine

__all__ = ["Front"]

#: Events validated between two turns of the event loop in a large ``store_events``.
VALIDATE_CHUNK = 1000

T = TypeVar("T")

_decode_agent = codec.decode_agent
_decode_task = codec.decode_task
_decode_event = codec.decode_event
_decode_message = codec.decode_message
_decode_metric = codec.decode_metric
_TERMINAL = rules.TERMINAL


def _decode_result(task_id: str, text: str | None) -> Any:
    """A task's stored result as ``TaskModel.result`` holds it (undecodable: an error)."""
    if text is None:
        return None
    try:
        return _json.loads(text)
    except Exception as exc:
        raise SerializationError("tasks", task_id, f"{type(exc).__name__}: {exc}") from exc


class Front(Storage):
    """The concrete ``Storage`` API over an engine; the gate is the subclass's.

    A subclass sets, before use: ``_engine`` (its :class:`~.engine.Engine`), ``_wake``
    (the :class:`~._wake.Wakeups` its engine wakes), ``_limits``, ``_lease_us`` (the default
    lease), ``_now`` (its clock, in µs) and ``_blocked``, and provides :meth:`_gate` and
    :meth:`_gate_closed`.
    """

    _engine: Engine
    _wake: Wakeups
    _limits: Limits
    _lease_us: int
    _now: Callable[[], int]
    #: Whether a call must go through :meth:`_gate` (else it runs outside any transaction).
    _blocked: bool
    #: The last lease argument and its microseconds: a worker passes the same one with every
    #: claim, and converting it each time was a measurable share of a claim on a fast engine.
    _lease_memo: tuple[object, int] = (None, 0)

    async def _gate(self) -> Any:
        """Wait until the call may run; the transaction it runs in (``None``: none)."""
        raise NotImplementedError

    def _gate_closed(self) -> bool:
        """Whether calls are refused (closed storage): waits return instead of waiting."""
        raise NotImplementedError

    def _lease(self, lease: Duration | None) -> int:
        if lease is None:
            return self._lease_us
        memo = self._lease_memo
        if lease is memo[0]:  # durations are immutable: the same object, the same answer
            return memo[1]
        us = codec.duration_arg(lease, "lease")
        self._lease_memo = (lease, us)
        return us

    # --- agents ----------------------------------------------------------------------------

    async def store_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.insert_agent(tx, rec)

    async def get_agent(self, agent_id: str) -> AgentModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        tx = await self._gate() if self._blocked else None
        rec = await self._engine.get_agent(tx, agent_id)
        return None if rec is None else _decode_agent(rec)

    async def update_agent(self, agent: AgentModel) -> None:
        rec = codec.encode_agent(agent, self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.replace_agent(tx, rec)

    async def delete_agent(self, agent_id: str) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.delete_agent(tx, agent_id)

    async def list_agents(self) -> list[AgentModel]:
        tx = await self._gate() if self._blocked else None
        return [_decode_agent(r) for r in await self._engine.list_agents(tx, None)]

    async def list_agents_by_status(self, status: AgentStatus | str) -> list[AgentModel]:
        value = codec._enum(AgentStatus, status, "status").value
        tx = await self._gate() if self._blocked else None
        return [_decode_agent(r) for r in await self._engine.list_agents(tx, value)]

    async def heartbeat(self, agent_id: str, at: TimeArg | None = None) -> None:
        codec.check_id(agent_id, "agent_id", self._limits)
        stamp = codec.opt_time_arg(at, "at")
        tx = await self._gate() if self._blocked else None
        await self._engine.heartbeat(tx, agent_id, stamp)

    async def find_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        codec.cutoff_arg(older_than, "older_than", 0)  # checked before the gate…
        tx = await self._gate() if self._blocked else None
        cutoff = codec.cutoff_arg(older_than, "older_than", self._now())  # …aged after it
        return [_decode_agent(r) for r in await self._engine.stale_agents(tx, cutoff)]

    async def reap_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        codec.cutoff_arg(older_than, "older_than", 0)
        tx = await self._gate() if self._blocked else None
        cutoff = codec.cutoff_arg(older_than, "older_than", self._now())
        return [_decode_agent(r) for r in await self._engine.reap_stale_agents(tx, cutoff)]

    # --- tasks -----------------------------------------------------------------------------

    async def store_task(self, task: TaskModel, *, raise_on_duplicate: bool = False) -> str:
        rec = codec.encode_task(task, self._limits)
        conflict = codec.bool_arg(raise_on_duplicate, "raise_on_duplicate")
        tx = await self._gate() if self._blocked else None
        (task_id,) = await self._engine.insert_tasks(tx, [rec], conflict)
        return task_id

    async def store_tasks(
        self, tasks: Sequence[TaskModel], *, raise_on_duplicate: bool = False
    ) -> list[str]:
        recs = codec.encode_batch(tasks, codec.encode_task, "tasks", self._limits)
        conflict = codec.bool_arg(raise_on_duplicate, "raise_on_duplicate")
        tx = await self._gate() if self._blocked else None
        if not recs:
            return []
        return await self._engine.insert_tasks(tx, recs, conflict)

    async def get_task(self, task_id: str) -> TaskModel | None:
        codec.check_id(task_id, "task_id", self._limits)
        tx = await self._gate() if self._blocked else None
        rec = await self._engine.get_task(tx, task_id)
        return None if rec is None else _decode_task(rec)

    async def update_task(self, task: TaskModel) -> None:
        rec = codec.encode_task(task, self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.replace_task(tx, rec)

    async def delete_task(self, task_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.delete_task(tx, task_id)

    async def get_pending_tasks(self) -> list[TaskModel]:
        tx = await self._gate() if self._blocked else None
        return [_decode_task(r) for r in await self._engine.pending_tasks(tx)]

    async def get_ready_tasks(self, limit: int | None = None) -> list[TaskModel]:
        n = None if limit is None else codec.limit_arg(limit)
        tx = await self._gate() if self._blocked else None
        return [_decode_task(r) for r in await self._engine.ready_tasks(tx, n)]

    async def get_tasks_by_agent(self, agent_id: str) -> list[TaskModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        tx = await self._gate() if self._blocked else None
        return [_decode_task(r) for r in await self._engine.tasks_by_agent(tx, agent_id)]

    async def claim_task(self, task_id: str, agent_id: str, lease: Duration | None = None) -> bool:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)
        lease_us = self._lease(lease)
        tx = await self._gate() if self._blocked else None
        return await self._engine.claim_task(tx, task_id, agent_id, lease_us)

    async def claim_next_task(
        self,
        agent_id: str,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> TaskModel | None:
        codec.check_id(agent_id, "agent_id", self._limits)
        types = codec.types_arg(task_types)
        lease_us = self._lease(lease)
        tx = await self._gate() if self._blocked else None
        rec = await self._engine.claim_next_task(tx, agent_id, types, lease_us)
        return None if rec is None else _decode_task(rec)

    async def claim_next_tasks(
        self,
        agent_id: str,
        n: int,
        *,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> list[TaskModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        count = codec.batch_size_arg(n)
        types = codec.types_arg(task_types)
        lease_us = self._lease(lease)
        tx = await self._gate() if self._blocked else None
        recs = await self._engine.claim_next_tasks(tx, agent_id, types, lease_us, count)
        return [_decode_task(r) for r in recs]

    async def set_concurrency_limit(self, key: str, limit: int | None) -> None:
        codec.check_id(key, "key", self._limits)
        n = codec.queue_limit_arg(limit, "limit")
        tx = await self._gate() if self._blocked else None
        await self._engine.set_queue_limit(tx, key, "concurrency", n, None)

    async def set_rate_limit(self, key: str, limit: int | None, per: Duration = 1.0) -> None:
        codec.check_id(key, "key", self._limits)
        n = codec.queue_limit_arg(limit, "limit")
        per_us = codec.duration_arg(per, "per")
        tx = await self._gate() if self._blocked else None
        await self._engine.set_queue_limit(tx, key, "rate", n, None if n is None else per_us)

    async def list_queue_limits(self) -> list[QueueLimit]:
        tx = await self._gate() if self._blocked else None
        return [
            QueueLimit(
                r["key"],
                r["max_running"],
                r["rate_limit"],
                None if r["rate_period"] is None else timedelta(microseconds=r["rate_period"]),
            )
            for r in await self._engine.queue_limits(tx)
        ]

    def _held_args(self, task_id: str, agent_id: str) -> None:
        codec.check_id(task_id, "task_id", self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)

    async def start_task(self, task_id: str, agent_id: str) -> TaskModel:
        self._held_args(task_id, agent_id)
        tx = await self._gate() if self._blocked else None
        return _decode_task(await self._engine.start_task(tx, task_id, agent_id))

    async def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        self._held_args(task_id, agent_id)
        encoded = None if result is None else codec._json_field(result, "result", self._limits)
        tx = await self._gate() if self._blocked else None
        return _decode_task(await self._engine.complete_task(tx, task_id, agent_id, encoded))

    async def complete_tasks(
        self, results: Mapping[str, Any] | Sequence[tuple[str, Any]], agent_id: str
    ) -> list[TaskModel]:
        pairs = codec.results_arg(results, self._limits)
        codec.check_id(agent_id, "agent_id", self._limits)
        tx = await self._gate() if self._blocked else None
        if not pairs:
            return []
        return [_decode_task(r) for r in await self._engine.complete_tasks(tx, agent_id, pairs)]

    async def fail_task(self, task_id: str, agent_id: str, error: str) -> TaskModel:
        self._held_args(task_id, agent_id)
        codec.check_text(error, "error", self._limits, empty_ok=True)
        tx = await self._gate() if self._blocked else None
        return _decode_task(await self._engine.fail_task(tx, task_id, agent_id, error))

    async def cancel_task(self, task_id: str, reason: str | None = None) -> list[str]:
        codec.check_id(task_id, "task_id", self._limits)
        if reason is not None:
            codec.check_text(reason, "reason", self._limits, empty_ok=True)
        tx = await self._gate() if self._blocked else None
        return await self._engine.cancel_task(tx, task_id, reason)

    async def heartbeat_task(
        self, task_id: str, agent_id: str, lease: Duration | None = None
    ) -> TaskModel:
        self._held_args(task_id, agent_id)
        lease_us = self._lease(lease)
        tx = await self._gate() if self._blocked else None
        return _decode_task(await self._engine.heartbeat_task(tx, task_id, agent_id, lease_us))

    async def release_task(self, task_id: str, agent_id: str) -> TaskModel:
        self._held_args(task_id, agent_id)
        tx = await self._gate() if self._blocked else None
        return _decode_task(await self._engine.release_task(tx, task_id, agent_id))

    async def get_failed_tasks(
        self, task_type: str | None = None, limit: int = 100
    ) -> list[TaskModel]:
        if task_type is not None:
            codec.check_text(task_type, "task_type", self._limits)
        n = codec.limit_arg(limit)
        tx = await self._gate() if self._blocked else None
        return [_decode_task(r) for r in await self._engine.failed_tasks(tx, task_type, n)]

    async def retry_task(self, task_id: str) -> TaskModel:
        codec.check_id(task_id, "task_id", self._limits)
        tx = await self._gate() if self._blocked else None
        (rec,) = await self._engine.retry_tasks(tx, [task_id], None)
        return _decode_task(rec)

    async def retry_tasks(self, task_ids: Sequence[str]) -> list[TaskModel]:
        ids = codec.ids_arg(task_ids, "task_ids", self._limits)
        tx = await self._gate() if self._blocked else None
        if not ids:
            return []
        return [_decode_task(r) for r in await self._engine.retry_tasks(tx, ids, None)]

    async def retry_failed_tasks(self, task_type: str | None = None) -> int:
        if task_type is not None:
            codec.check_text(task_type, "task_type", self._limits)
        tx = await self._gate() if self._blocked else None
        return len(await self._engine.retry_tasks(tx, None, task_type))

    async def get_dependency_results(self, task_id: str) -> dict[str, Any]:
        codec.check_id(task_id, "task_id", self._limits)
        tx = await self._gate() if self._blocked else None
        pairs = await self._engine.dependency_results(tx, task_id)
        if pairs is None:
            raise NotFoundError("task", task_id)
        return {dep_id: _decode_result(dep_id, text) for dep_id, text in pairs}

    async def wait_for_task(
        self, task_id: str, timeout: Duration | None = None
    ) -> TaskModel | None:
        codec.check_id(task_id, "task_id", self._limits)
        deadline = Deadline(timeout)
        engine, wake = self._engine, self._wake
        while True:
            engine.note_changes()
            gen = wake.generation(FINISHED)
            tx = await self._gate() if self._blocked else None
            rec = await engine.get_task(tx, task_id)
            if rec is None:
                raise NotFoundError("task", task_id)
            if rec["status"] in _TERMINAL:
                return _decode_task(rec)
            if self._gate_closed() or deadline.expired():
                return None
            engine.watch()
            await wake.wait(FINISHED, gen, deadline.remaining())
            if self._gate_closed():
                # Woken by close(): return like a timeout instead of failing the next read.
                return None

    async def wait_for_tasks(
        self, timeout: Duration | None = None, task_types: Sequence[str] | None = None
    ) -> bool:
        deadline = Deadline(timeout)
        types = codec.types_arg(task_types)
        engine, wake = self._engine, self._wake
        while True:
            engine.note_changes()
            gen = wake.generation(TASKS)
            tx = await self._gate() if self._blocked else None
            due_us = await engine.next_ready(tx, types)
            if due_us == 0:
                return True
            if self._gate_closed() or deadline.expired():
                return False
            engine.watch()
            await wake.wait(TASKS, gen, deadline.wait_before(due_us))
            if self._gate_closed():
                return False

    # --- events ----------------------------------------------------------------------------

    async def store_event(self, event: EventModel) -> int:
        row = codec.event_values(event, self._limits)
        tx = await self._gate() if self._blocked else None
        seq = await self._engine.append_event(tx, row)
        event.sequence = seq
        return seq

    async def store_events(self, events: Sequence[EventModel]) -> list[int]:
        if (
            isinstance(events, Sequence)
            and not isinstance(events, (str, bytes))
            and len(events) > VALIDATE_CHUNK
        ):
            # A large batch is validated a chunk at a time, letting the loop run between.
            rows = []
            for start in range(0, len(events), VALIDATE_CHUNK):
                chunk = events[start : start + VALIDATE_CHUNK]
                rows += [codec.event_values(e, self._limits) for e in chunk]
                await asyncio.sleep(0)
        else:
            rows = codec.encode_batch(events, codec.event_values, "events", self._limits)
        tx = await self._gate() if self._blocked else None
        if not rows:
            return []
        seqs = await self._engine.append_events(tx, rows)
        for event, seq in zip(events, seqs, strict=True):
            event.sequence = seq
        return seqs

    async def get_event(self, event_id: str) -> EventModel | None:
        codec.check_id(event_id, "event_id", self._limits)
        tx = await self._gate() if self._blocked else None
        rec = await self._engine.get_event(tx, event_id)
        return None if rec is None else _decode_event(rec)

    async def get_events_by_agent(self, agent_id: str, limit: int = 100) -> list[EventModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        n = codec.limit_arg(limit)
        tx = await self._gate() if self._blocked else None
        return [_decode_event(r) for r in await self._engine.events_by_agent(tx, agent_id, n)]

    async def get_events_by_type(self, event_type: str, limit: int = 100) -> list[EventModel]:
        codec.check_text(event_type, "event_type", self._limits)
        n = codec.limit_arg(limit)
        tx = await self._gate() if self._blocked else None
        return [_decode_event(r) for r in await self._engine.events_by_type(tx, event_type, n)]

    async def get_events_since(self, since: TimeArg) -> list[EventModel]:
        t = codec.time_arg(since, "since")
        tx = await self._gate() if self._blocked else None
        return [_decode_event(r) for r in await self._engine.events_since(tx, t)]

    async def read_events(self, after_sequence: int = 0, limit: int = 1000) -> list[EventModel]:
        after = codec.limit_arg(after_sequence, "after_sequence")
        n = codec.limit_arg(limit)
        tx = await self._gate() if self._blocked else None
        return [_decode_event(r) for r in await self._engine.read_events(tx, after, n)]

    async def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncGenerator[EventModel, None]:
        last = codec.limit_arg(after_sequence, "after_sequence")
        types = (
            None
            if event_types is None
            else frozenset(codec.types_arg(event_types, "event_types") or ())
        )
        engine, wake = self._engine, self._wake
        page = engine.subscribe_page
        while not self._gate_closed():
            engine.note_changes()
            gen = wake.generation(EVENTS)
            batch = await self.read_events(last, page)
            for ev in batch:
                last = ev.sequence or last
                if types is None or ev.event_type in types:
                    yield ev
            if len(batch) == page or self._gate_closed():
                continue
            engine.watch()
            await wake.wait(EVENTS, gen)

    # --- messages --------------------------------------------------------------------------

    async def store_message(self, message: MessageModel) -> None:
        rec = codec.encode_message(message, self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.insert_message(tx, rec)

    async def get_message(self, message_id: str) -> MessageModel | None:
        codec.check_id(message_id, "message_id", self._limits)
        tx = await self._gate() if self._blocked else None
        rec = await self._engine.get_message(tx, message_id)
        return None if rec is None else _decode_message(rec)

    async def delete_message(self, message_id: str) -> None:
        codec.check_id(message_id, "message_id", self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.delete_message(tx, message_id)

    async def get_messages_between(
        self, agent_a: str, agent_b: str, limit: int = 100
    ) -> list[MessageModel]:
        codec.check_id(agent_a, "agent_a", self._limits)
        codec.check_id(agent_b, "agent_b", self._limits)
        n = codec.limit_arg(limit)
        tx = await self._gate() if self._blocked else None
        recs = await self._engine.messages_between(tx, agent_a, agent_b, n)
        return [_decode_message(r) for r in recs]

    async def get_unread_messages(self, agent_id: str) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        tx = await self._gate() if self._blocked else None
        return [_decode_message(r) for r in await self._engine.unread_messages(tx, agent_id)]

    async def mark_message_read(self, message_id: str) -> MessageModel:
        codec.check_id(message_id, "message_id", self._limits)
        tx = await self._gate() if self._blocked else None
        return _decode_message(await self._engine.mark_message_read(tx, message_id))

    async def wait_for_messages(
        self, agent_id: str, timeout: Duration | None = None
    ) -> list[MessageModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        deadline = Deadline(timeout)
        engine, wake, key = self._engine, self._wake, mail(agent_id)
        while True:
            engine.note_changes()
            gen = wake.generation(key)
            unread = await self.get_unread_messages(agent_id)
            if unread or self._gate_closed():
                return unread
            if deadline.expired():
                return []
            engine.watch()
            await wake.wait(key, gen, deadline.remaining())
            if self._gate_closed():
                # Woken by close(): return like a timeout instead of failing the next read.
                return []

    # --- metrics ---------------------------------------------------------------------------

    async def store_metric(self, metric: MetricModel) -> None:
        rec = codec.encode_metric(metric, self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.insert_metrics(tx, [rec])

    async def store_metrics(self, metrics: Sequence[MetricModel]) -> None:
        recs = codec.encode_batch(metrics, codec.encode_metric, "metrics", self._limits)
        tx = await self._gate() if self._blocked else None
        if recs:
            await self._engine.insert_metrics(tx, recs)

    async def get_metrics_by_agent(
        self, agent_id: str, metric_type: str | None = None
    ) -> list[MetricModel]:
        codec.check_id(agent_id, "agent_id", self._limits)
        if metric_type is not None:
            codec.check_text(metric_type, "metric_type", self._limits)
        tx = await self._gate() if self._blocked else None
        recs = await self._engine.metrics_by_agent(tx, agent_id, metric_type)
        return [_decode_metric(r) for r in recs]

    async def get_aggregated_metrics(
        self, metric_type: str, start: TimeArg, end: TimeArg
    ) -> list[MetricModel]:
        name, s, t = window_args(metric_type, start, end, self._limits)
        tx = await self._gate() if self._blocked else None
        return await self._engine.crate_aggregate(tx, name, s, t)

    async def aggregate_metrics(
        self,
        metric_type: str,
        start: TimeArg,
        end: TimeArg,
        group_by: Sequence[str] = ("agent_id",),
        bucket: Duration | None = None,
    ) -> list[MetricAggregate]:
        name, s, t = window_args(metric_type, start, end, self._limits)
        groups, bucket_us = grouping_args(group_by, bucket)
        tx = await self._gate() if self._blocked else None
        return await self._engine.aggregate_metrics(tx, name, s, t, list(groups), bucket_us)

    # --- queries, maintenance --------------------------------------------------------------

    async def query(self, builder: QueryBuilder[T]) -> list[T]:
        if not isinstance(builder, QueryBuilder):
            raise ValidationError("expected a QueryBuilder", field="builder")
        tx = await self._gate() if self._blocked else None
        decode = codec.DECODERS[builder.table]
        return [decode(r) for r in await self._engine.query(tx, builder)]

    async def count(self, builder: QueryBuilder[Any]) -> int:
        if not isinstance(builder, QueryBuilder):
            raise ValidationError("expected a QueryBuilder", field="builder")
        tx = await self._gate() if self._blocked else None
        ((n,),) = await self._engine.count(tx, builder, ())
        return int(n)

    async def count_by(self, builder: QueryBuilder[Any], *group_by: str) -> dict[Any, int]:
        if not isinstance(builder, QueryBuilder):
            raise ValidationError("expected a QueryBuilder", field="builder")
        if not group_by:
            raise ValidationError("name at least one field", field="group_by")
        fields = builder.check_group_by(group_by)
        flags = [KINDS[builder.table][f] == "bool" for f in fields]
        tx = await self._gate() if self._blocked else None
        out: dict[Any, int] = {}
        for *keys, n in await self._engine.count(tx, builder, fields):
            # Booleans are stored as 0/1 by the SQL backends.
            key = tuple(
                bool(k) if flag and k is not None else k
                for k, flag in zip(keys, flags, strict=True)
            )
            out[key[0] if len(key) == 1 else key] = int(n)
        return out

    async def vacuum(self) -> None:
        tx = await self._gate() if self._blocked else None
        await self._engine.vacuum(tx)

    async def checkpoint(self) -> None:
        tx = await self._gate() if self._blocked else None
        await self._engine.checkpoint(tx)

    async def get_storage_size(self) -> int:
        tx = await self._gate() if self._blocked else None
        return await self._engine.storage_size(tx)

    async def prune(
        self,
        events_before: TimeArg | None = None,
        metrics_before: TimeArg | None = None,
        read_messages_before: TimeArg | None = None,
    ) -> PruneResult:
        ev = codec.opt_time_arg(events_before, "events_before")
        me = codec.opt_time_arg(metrics_before, "metrics_before")
        ms = codec.opt_time_arg(read_messages_before, "read_messages_before")
        tx = await self._gate() if self._blocked else None
        return await self._engine.prune(tx, ev, me, ms)

    # --- schedules -------------------------------------------------------------------------

    async def store_schedule(
        self,
        name: str,
        cron_or_interval: str | Duration,
        task_template: TaskModel | Mapping[str, Any],
        *,
        timezone: str = "UTC",
        missed: str = "skip",
    ) -> ScheduleModel:
        now = self._now()
        rec = schedules.schedule_record(
            name, cron_or_interval, task_template, timezone, missed, self._limits, now
        )
        tx = await self._gate() if self._blocked else None
        return schedules.decode_schedule(await self._engine.put_schedule(tx, rec))

    async def get_schedule(self, name: str) -> ScheduleModel | None:
        schedules.check_name(name, self._limits)
        tx = await self._gate() if self._blocked else None
        rec = await self._engine.get_schedule(tx, name)
        return None if rec is None else schedules.decode_schedule(rec)

    async def list_schedules(self) -> list[ScheduleModel]:
        tx = await self._gate() if self._blocked else None
        return [schedules.decode_schedule(r) for r in await self._engine.list_schedules(tx)]

    async def restore_schedule(self, schedule: ScheduleModel) -> ScheduleModel:
        rec = schedules.restored_record(schedule, self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.restore_schedule(tx, rec)
        return schedules.decode_schedule(rec)

    async def delete_schedule(self, name: str) -> None:
        schedules.check_name(name, self._limits)
        tx = await self._gate() if self._blocked else None
        await self._engine.delete_schedule(tx, name)

    async def _set_paused(self, name: str, paused: bool) -> ScheduleModel:
        schedules.check_name(name, self._limits)
        tx = await self._gate() if self._blocked else None
        engine, now = self._engine, self._now()
        next_due = None
        if not paused:
            rec = await engine.get_schedule(tx, name)
            if rec is None:
                raise NotFoundError("schedule", name)
            next_due = schedules.stored_timing(rec).next_after(now)
        got = await engine.set_schedule_paused(tx, name, paused, next_due, now)
        if got is None:
            raise NotFoundError("schedule", name)
        return schedules.decode_schedule(got)

    async def pause_schedule(self, name: str) -> ScheduleModel:
        return await self._set_paused(name, True)

    async def resume_schedule(self, name: str) -> ScheduleModel:
        return await self._set_paused(name, False)

    async def fire_due_schedules(self) -> list[str]:
        tx = await self._gate() if self._blocked else None
        engine, now = self._engine, self._now()
        fired: list[str] = []
        for rec in await engine.list_schedules(tx):
            plan = schedules.due_plan(rec, now)
            if plan is None:
                continue
            due, next_due = plan
            task = None
            if due is not None:
                task = codec.encode_task(schedules.scheduled_task(rec, due, now), self._limits)
            if (
                await engine.fire_schedule(
                    tx, rec["name"], rec["next_due"], next_due, due, task, now
                )
                and task is not None
            ):
                fired.append(task["id"])
        return fired

    #: The ``retention`` option (a subclass sets it from its options).
    _retention: RetentionPolicy | None = None

    async def apply_retention(
        self, policy: RetentionPolicy | Mapping[str, Any] | str | None = None
    ) -> PruneResult:
        chosen = self._retention if policy is None else parse_retention(policy, "policy")
        tx = await self._gate() if self._blocked else None
        if chosen is None:
            return PruneResult()
        return await self._engine.retain(tx, RetentionPlan.of(chosen, self._now()))

    async def retention_report(self) -> RetentionReport:
        tx = await self._gate() if self._blocked else None
        record = await self._engine.retention_record(tx)
        ran_at = record.get("ran_at")
        return RetentionReport(
            self._retention,
            None if ran_at is None else from_us(ran_at),
            {table: record.get(table, 0) for table in TABLES},
        )

    async def restore_retention_record(
        self, last_run: TimeArg | None, removed: Mapping[str, int]
    ) -> None:
        ran_at = codec.opt_time_arg(last_run, "last_run")
        record = retention_counts(removed)
        if ran_at is not None:
            record["ran_at"] = ran_at
        tx = await self._gate() if self._blocked else None
        await self._engine.set_retention_record(tx, record)
