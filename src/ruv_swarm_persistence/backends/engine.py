"""What a backend implements under the front: an engine, records in and records out.

The front (:mod:`.front`) writes every public ``Storage`` method once: it checks the
arguments through :mod:`~ruv_swarm_persistence.codec`, takes the transaction gate, calls the
engine with validated values, and decodes what comes back. An engine therefore never checks an
argument and never builds a model; it stores and finds records (``dict`` rows keyed by
``codec.COLUMNS``), applies the rules of :mod:`~ruv_swarm_persistence.rules` to them, and
wakes the front's :class:`~._wake.Wakeups` after each commit. It may do an operation in one
statement (a claim, an append) and proves that it follows the rules by passing the
conformance suite.

Every method takes ``tx`` first: the backend's transaction that the call joins, or ``None``
outside any transaction. Times (``now``, cut-offs) are integer microseconds; the engine reads
its own clock for "now", after the gate, so a call that waited for a transaction does not act
on the time it arrived.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..codec import EventValues, Record
from ..models import MetricModel
from ..query import QueryBuilder
from ..retention import RetentionPlan
from ..storage import MetricAggregate, PruneResult

__all__ = ["Engine"]


class Engine(Protocol):
    """The operations a backend provides to the front (see the module docstring)."""

    @property
    def subscribe_page(self) -> int:
        """Events a subscriber reads per step."""
        ...

    # --- waiting ---------------------------------------------------------------------------

    def note_changes(self) -> None:
        """Before a waiter reads: notice changes made elsewhere (other processes) so far."""

    def watch(self) -> None:
        """Before a waiter waits: make sure changes made elsewhere will wake it."""

    # --- agents ----------------------------------------------------------------------------

    async def insert_agent(self, tx: Any, rec: Record) -> None:
        """Store a new agent; an existing id is a ``ConflictError``."""

    async def get_agent(self, tx: Any, agent_id: str) -> Record | None:
        """The agent, or ``None``."""

    async def replace_agent(self, tx: Any, rec: Record) -> None:
        """Overwrite an agent; a missing id is a ``NotFoundError``."""

    async def delete_agent(self, tx: Any, agent_id: str) -> None:
        """Delete an agent, its mailbox, and release the tasks it held (idempotent)."""

    async def list_agents(self, tx: Any, status: str | None) -> list[Record]:
        """Agents (of a status), oldest first."""

    async def heartbeat(self, tx: Any, agent_id: str, at: int | None) -> None:
        """Stamp an agent's heartbeat (``at`` or now); a missing id is a ``NotFoundError``."""

    async def stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        """Live agents whose heartbeat is older than ``cutoff``, stalest first."""

    async def reap_stale_agents(self, tx: Any, cutoff: int) -> list[Record]:
        """Mark stale agents ``error`` and requeue what they held; the reaped agents."""

    # --- tasks -----------------------------------------------------------------------------

    async def insert_tasks(
        self, tx: Any, recs: list[Record], raise_on_duplicate: bool
    ) -> list[str]:
        """Store new tasks atomically (dependencies checked, cycles refused); the id of
        each, its own or its ``dedup_key``'s holder's (``rules.dedup_batch``)."""

    async def get_task(self, tx: Any, task_id: str) -> Record | None:
        """The task, or ``None``."""

    async def replace_task(self, tx: Any, rec: Record) -> None:
        """``update_task``: every field but the id, through the transition routine."""

    async def delete_task(self, tx: Any, task_id: str) -> None:
        """Delete a task without dependents (idempotent)."""

    async def pending_tasks(self, tx: Any) -> list[Record]:
        """Every pending task, in claim order."""

    async def ready_tasks(self, tx: Any, limit: int | None) -> list[Record]:
        """Claimable tasks, in claim order."""

    async def tasks_by_agent(self, tx: Any, agent_id: str) -> list[Record]:
        """Tasks assigned to an agent, in claim order."""

    async def claim_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> bool:
        """Claim one task if it is ready."""

    async def claim_next_task(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int
    ) -> Record | None:
        """Claim the highest-priority, oldest ready task (of the types)."""

    async def claim_next_tasks(
        self, tx: Any, agent_id: str, types: list[str] | None, lease_us: int, n: int
    ) -> list[Record]:
        """Claim up to ``n`` ready tasks (of the types), in claim order: what ``n`` calls of
        :meth:`claim_next_task` would claim, each obeying ``rules.claim_admitted`` after the
        claims before it (a SQL engine may claim them in one statement where no limit is at
        stake)."""

    async def set_queue_limit(
        self, tx: Any, key: str, kind: str, limit: int | None, period_us: int | None
    ) -> None:
        """Set (``None``: remove) a key's ``"concurrency"`` or ``"rate"`` limit; claims
        (``claim_task``, ``claim_next_task``, ``next_ready``) obey ``rules.claim_admitted``."""

    async def queue_limits(self, tx: Any) -> list[Record]:
        """Every key with a limit, by key: ``key``, ``max_running``, ``rate_limit``,
        ``rate_period`` (µs), each limit ``None`` when unset."""

    async def start_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        """Held task → running."""

    async def complete_task(
        self, tx: Any, task_id: str, agent_id: str, result: str | None
    ) -> Record:
        """Held task → completed with its JSON result."""

    async def complete_tasks(
        self, tx: Any, agent_id: str, pairs: list[tuple[str, str | None]]
    ) -> list[Record]:
        """Held tasks → completed, each with its JSON result, all or none (expired leases
        requeued first, and kept); the first task not held raises what
        :meth:`complete_task` would, and nothing is completed. The records, in order."""

    async def fail_task(self, tx: Any, task_id: str, agent_id: str, error: str) -> Record:
        """Held task: a failed attempt (retry with backoff, or failed for good)."""

    async def cancel_task(self, tx: Any, task_id: str, reason: str | None) -> list[str]:
        """Cancel a task and its dependents; the ids cancelled."""

    async def heartbeat_task(self, tx: Any, task_id: str, agent_id: str, lease_us: int) -> Record:
        """Extend the lease of a held task."""

    async def release_task(self, tx: Any, task_id: str, agent_id: str) -> Record:
        """Held task → pending, claimable at once (``rules.release_changes``)."""

    async def failed_tasks(self, tx: Any, task_type: str | None, limit: int) -> list[Record]:
        """Tasks failed for good (of a type), the most recent failure first."""

    async def retry_tasks(
        self, tx: Any, task_ids: list[str] | None, task_type: str | None
    ) -> list[Record]:
        """Requeue dead letters through the transition routine (``rules.retry_changes``).

        Given ids: each one, atomically (an unknown id is a ``NotFoundError``, one that
        ``rules.check_retry`` refuses a ``ConflictError``, and then nothing changes). Given
        ``None``: every failed task (of the type) that ``check_retry`` accepts, oldest failure
        first. The new records, in that order.
        """

    async def dependency_results(
        self, tx: Any, task_id: str
    ) -> list[tuple[str, str | None]] | None:
        """``(id, JSON result)`` of the task's completed dependencies, in its dependency
        order; ``None`` if the task does not exist (SQL engines: one statement)."""

    async def next_ready(self, tx: Any, types: list[str] | None) -> int | None:
        """0 if a task (of the types) is ready now or held past its lease (a claim requeues
        it), else µs until the next backoff or lease ends (``None``: nothing due)."""

    # --- events ----------------------------------------------------------------------------

    async def append_event(self, tx: Any, row: EventValues) -> int:
        """Append one event; its sequence number (the hottest write: no list around it)."""

    async def append_events(self, tx: Any, rows: list[EventValues]) -> list[int]:
        """Append events (all or none); their sequence numbers, in order."""

    async def events_by_agent(self, tx: Any, agent_id: str, limit: int) -> list[Record]:
        """An agent's events, newest first."""

    async def events_by_type(self, tx: Any, event_type: str, limit: int) -> list[Record]:
        """Events of a type, newest first."""

    async def events_since(self, tx: Any, since: int) -> list[Record]:
        """Events at or after a time, oldest first."""

    async def read_events(self, tx: Any, after: int, limit: int) -> list[Record]:
        """Events after a sequence number, in sequence order."""

    async def get_event(self, tx: Any, event_id: str) -> Record | None:
        """The event with this id, or ``None``."""

    # --- messages --------------------------------------------------------------------------

    async def insert_message(self, tx: Any, rec: Record) -> None:
        """Store a message; an existing id is a ``ConflictError``."""

    async def get_message(self, tx: Any, message_id: str) -> Record | None:
        """The message, or ``None``."""

    async def delete_message(self, tx: Any, message_id: str) -> None:
        """Delete a message (idempotent)."""

    async def messages_between(self, tx: Any, a: str, b: str, limit: int) -> list[Record]:
        """Messages between two agents, both directions, newest first."""

    async def unread_messages(self, tx: Any, agent_id: str) -> list[Record]:
        """An agent's unread mail, urgent first, then oldest."""

    async def mark_message_read(self, tx: Any, message_id: str) -> Record:
        """Record the first read; a missing id is a ``NotFoundError``."""

    # --- metrics ---------------------------------------------------------------------------

    async def insert_metrics(self, tx: Any, recs: list[Record]) -> None:
        """Store metrics (all or none)."""

    async def metrics_by_agent(
        self, tx: Any, agent_id: str, metric_type: str | None
    ) -> list[Record]:
        """An agent's metrics (of a type), oldest first."""

    async def crate_aggregate(
        self, tx: Any, metric_type: str, start: int, end: int
    ) -> list[MetricModel]:
        """The crate's per-agent aggregate (an engine may compute it in SQL)."""

    async def aggregate_metrics(
        self,
        tx: Any,
        metric_type: str,
        start: int,
        end: int,
        groups: list[str],
        bucket_us: int | None,
    ) -> list[MetricAggregate]:
        """Count, sum, mean, min, max and percentiles per group and bucket."""

    # --- schedules -------------------------------------------------------------------------

    async def put_schedule(self, tx: Any, rec: Record) -> Record:
        """Store a schedule, or redefine the one of that name (keeping its ``next_due``,
        ``last_due``, ``paused`` and ``created_at`` unless ``spec`` or ``timezone`` changed,
        which takes the new ``next_due``); the stored record."""

    async def restore_schedule(self, tx: Any, rec: Record) -> None:
        """Store a schedule record as it is; a stored name is a ``ConflictError``."""

    async def get_schedule(self, tx: Any, name: str) -> Record | None:
        """The schedule, or ``None``."""

    async def list_schedules(self, tx: Any) -> list[Record]:
        """Every schedule, by name."""

    async def delete_schedule(self, tx: Any, name: str) -> None:
        """Delete a schedule (idempotent)."""

    async def set_schedule_paused(
        self, tx: Any, name: str, paused: bool, next_due: int | None, now: int
    ) -> Record | None:
        """Pause or resume (``next_due`` given: from then on); ``None`` if unknown."""

    async def fire_schedule(
        self,
        tx: Any,
        name: str,
        expected_due: int,
        next_due: int,
        due: int | None,
        task: Record | None,
        now: int,
    ) -> bool:
        """Atomically: if the schedule is unpaused and still has ``next_due ==
        expected_due``, move it to ``next_due`` (``last_due`` to ``due`` when given) and
        store ``task``; whether it did (``False``: another process fired it first)."""

    # --- queries, maintenance --------------------------------------------------------------

    async def query(self, tx: Any, builder: QueryBuilder[Any]) -> list[Record]:
        """The records a checked query selects, in its order."""

    async def count(
        self, tx: Any, builder: QueryBuilder[Any], group_by: tuple[str, ...]
    ) -> list[tuple[Any, ...]]:
        """``(key..., count)`` rows of what ``builder.build_count(group_by)`` selects (the
        stored values as keys); one ``(count,)`` row without ``group_by``."""

    async def vacuum(self, tx: Any) -> None:
        """Reclaim free space."""

    async def checkpoint(self, tx: Any) -> None:
        """Flush the write-ahead log."""

    async def storage_size(self, tx: Any) -> int:
        """Bytes used."""

    async def prune(
        self, tx: Any, events: int | None, metrics: int | None, read_messages: int | None
    ) -> PruneResult:
        """Delete history older than the given times."""

    async def retain(self, tx: Any, plan: RetentionPlan) -> PruneResult:
        """Carry out a retention pass (see :mod:`~ruv_swarm_persistence.retention`) and add
        it to the database's record of maintenance (``retention_record``)."""

    async def retention_record(self, tx: Any) -> dict[str, int]:
        """The record of maintenance: ``ran_at`` (µs; absent if no pass ever ran) and rows
        removed in all per table (``tasks``, ``events``, ``messages``, ``metrics``)."""

    async def set_retention_record(self, tx: Any, record: dict[str, int]) -> None:
        """Replace the record of maintenance with ``record`` (``retention_record``'s form)."""
