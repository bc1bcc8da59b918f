"""The ``Storage`` API every backend implements, and the ``Transaction`` that mirrors it.

The semantics (identical on every backend, proven by :mod:`ruv_swarm_persistence.testing`):

* ``get_*`` of a missing id returns ``None``; ``update_*`` of a missing id raises
  :class:`NotFoundError`; ``store_*`` of an existing id raises :class:`ConflictError`;
  ``delete_*`` is idempotent.
* Time arguments accept an aware ``datetime`` or epoch seconds. Durations accept a
  ``timedelta`` or seconds.
* Every status change of a task, whatever method causes it, goes through one transition
  routine per backend built on :mod:`ruv_swarm_persistence.rules`.
* Calls made on a storage from the task that began a transaction (and tasks it spawns) join
  that transaction, so ``begin_transaction(); store_task(a); store_task(b); commit()`` is atomic.
"""

from __future__ import annotations

import abc
import contextvars
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import TransactionError
from .models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
)
from .repository import Repository
from .retention import RetentionPolicy, RetentionReport
from .schedules import ScheduleModel

if TYPE_CHECKING:
    from .query import QueryBuilder

__all__ = [
    "ACTIVE_TRANSACTION",
    "Duration",
    "MetricAggregate",
    "PruneResult",
    "QueueLimit",
    "Storage",
    "TimeArg",
    "Transaction",
]

T = TypeVar("T")
TimeArg = datetime | int | float
Duration = timedelta | int | float

#: The transaction the current task (context) has open, if any.
ACTIVE_TRANSACTION: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "ruv_swarm_persistence_active_transaction", default=None
)


@dataclass(slots=True)
class MetricAggregate:
    """Statistics of one metric group (and time bucket) from ``aggregate_metrics``."""

    metric_type: str
    unit: str
    group: dict[str, str | None]
    bucket_start: datetime | None
    count: int
    sum: float
    mean: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float


@dataclass(slots=True)
class PruneResult:
    """How many rows ``prune`` removed."""

    events: int = 0
    metrics: int = 0
    messages: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    #: Completed tasks removed (by retention; ``prune`` keeps tasks).
    tasks: int = 0


@dataclass(frozen=True, slots=True)
class QueueLimit:
    """The limits of one key, as ``list_queue_limits`` returns them.

    ``concurrency`` is the ``limit`` of ``set_concurrency_limit``; ``rate`` and ``per`` those
    of ``set_rate_limit`` (``None``: no such limit).
    """

    key: str
    concurrency: int | None = None
    rate: int | None = None
    per: timedelta | None = None


class Storage(abc.ABC):
    """The persistence API of a swarm. Use as ``async with`` or call :meth:`close`."""

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release every resource; idempotent."""

    # --- agents -------------------------------------------------------------------------

    @abc.abstractmethod
    async def store_agent(self, agent: AgentModel) -> None:
        """Store a new agent; an existing id raises :class:`ConflictError`."""

    @abc.abstractmethod
    async def get_agent(self, agent_id: str) -> AgentModel | None:
        """The agent with this id, or ``None``."""

    @abc.abstractmethod
    async def update_agent(self, agent: AgentModel) -> None:
        """Replace a stored agent; a missing id raises :class:`NotFoundError`."""

    @abc.abstractmethod
    async def delete_agent(self, agent_id: str) -> None:
        """Delete an agent (idempotent).

        Its mailbox (messages to or from it) goes with it; tasks that named it lose
        ``assigned_to``, and the unfinished ones it held go back to pending as after an expired
        lease. Its events and metrics stay: they are history.
        """

    @abc.abstractmethod
    async def list_agents(self) -> list[AgentModel]:
        """Every agent, oldest first."""

    @abc.abstractmethod
    async def list_agents_by_status(self, status: AgentStatus | str) -> list[AgentModel]:
        """Agents with this status, oldest first."""

    @abc.abstractmethod
    async def heartbeat(self, agent_id: str, at: TimeArg | None = None) -> None:
        """Stamp an agent's liveness (now, or ``at``); a missing id raises NotFoundError."""

    @abc.abstractmethod
    async def find_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        """Agents whose heartbeat is older than ``older_than`` (an age, or a cut-off time).

        Agents already in ``error`` or ``shutdown`` are not listed.
        """

    @abc.abstractmethod
    async def reap_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        """Mark stale agents ``error`` and requeue the tasks they held; returns them."""

    # --- tasks --------------------------------------------------------------------------

    @abc.abstractmethod
    async def store_task(self, task: TaskModel, *, raise_on_duplicate: bool = False) -> str:
        """Store a new task; the id it is stored under.

        Dependencies must exist; a cycle is a ValidationError. While an unfinished task
        (pending, assigned or running) holds the task's ``dedup_key``, nothing is stored and
        the holder's id is returned, or, with ``raise_on_duplicate``, a ConflictError raised.
        """

    @abc.abstractmethod
    async def store_tasks(
        self, tasks: Sequence[TaskModel], *, raise_on_duplicate: bool = False
    ) -> list[str]:
        """Store several tasks atomically; they may depend on each other.

        Returns the id of each task, in order: its own, or that of the unfinished task that
        holds its ``dedup_key`` (see :meth:`store_task`); a task of the batch that depends on
        a task left out depends on that holder instead.
        """

    @abc.abstractmethod
    async def get_task(self, task_id: str) -> TaskModel | None:
        """The task with this id, or ``None``."""

    @abc.abstractmethod
    async def update_task(self, task: TaskModel) -> None:
        """Replace a stored task (the crate's update).

        A status change must be legal and goes through the same transition routine as every
        other method; dependencies cannot change. Putting a pending task into a worker's
        hands (``assigned`` or ``running``) is held to its ``concurrency_key``'s limits as a
        claim is, and counts as one: :class:`ConflictError` when the key admits no claim now.
        """

    @abc.abstractmethod
    async def delete_task(self, task_id: str) -> None:
        """Delete a task (idempotent); one that other tasks depend on raises ConflictError."""

    @abc.abstractmethod
    async def get_pending_tasks(self) -> list[TaskModel]:
        """Every pending task (ready or not), highest priority first, then oldest."""

    @abc.abstractmethod
    async def get_ready_tasks(self, limit: int | None = None) -> list[TaskModel]:
        """Claimable tasks in claim order: pending, dependencies completed, ``run_after`` passed."""

    @abc.abstractmethod
    async def get_tasks_by_agent(self, agent_id: str) -> list[TaskModel]:
        """Tasks assigned to an agent, highest priority first, then oldest."""

    @abc.abstractmethod
    async def claim_task(self, task_id: str, agent_id: str, lease: Duration | None = None) -> bool:
        """Claim this task for ``agent_id`` if it is ready; ``False`` otherwise."""

    @abc.abstractmethod
    async def claim_next_task(
        self,
        agent_id: str,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> TaskModel | None:
        """Atomically claim the highest-priority, oldest ready task (of these types)."""

    @abc.abstractmethod
    async def claim_next_tasks(
        self,
        agent_id: str,
        n: int,
        *,
        task_types: Sequence[str] | None = None,
        lease: Duration | None = None,
    ) -> list[TaskModel]:
        """Claim up to ``n`` ready tasks at once, best first; ``[]`` when none is ready.

        What ``n`` calls of :meth:`claim_next_task` would claim, in one call: the same order
        (highest priority, then oldest), the same filter by type, the same lease for each,
        the expired leases requeued first, and the queue controls applied task by task, so
        a batch never holds more of a key than its concurrency limit lets, nor claims more
        of it than its rate limit admits. No task is ever in two batches. ``n``: from 1 to
        1,000.
        """

    @abc.abstractmethod
    async def set_concurrency_limit(self, key: str, limit: int | None) -> None:
        """Let at most ``limit`` tasks whose ``concurrency_key`` is ``key`` be held at once.

        Claims skip a task whose key has ``limit`` tasks assigned or running (an expired
        lease frees its slot); ``0`` pauses the key, ``None`` removes the limit. Holds across
        processes; tasks already held are left alone. ``wait_for_tasks`` waits past tasks
        held back by their key; ``get_ready_tasks`` lists tasks by readiness alone.
        """

    @abc.abstractmethod
    async def set_rate_limit(self, key: str, limit: int | None, per: Duration = 1.0) -> None:
        """Let at most ``limit`` tasks whose ``concurrency_key`` is ``key`` be claimed in any
        window of ``per`` (a sliding window over the claims themselves, shared by every
        process); ``None`` removes the limit."""

    @abc.abstractmethod
    async def list_queue_limits(self) -> list[QueueLimit]:
        """Every key with a limit (``set_concurrency_limit``, ``set_rate_limit``), by key."""

    @abc.abstractmethod
    async def start_task(self, task_id: str, agent_id: str) -> TaskModel:
        """Mark a held task running; LeaseLostError if ``agent_id`` no longer holds it."""

    @abc.abstractmethod
    async def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        """Complete a held task; its dependents may become ready."""

    @abc.abstractmethod
    async def complete_tasks(
        self, results: Mapping[str, Any] | Sequence[tuple[str, Any]], agent_id: str
    ) -> list[TaskModel]:
        """Complete several tasks ``agent_id`` holds, all or none; the tasks, in that order.

        ``results``: ``(task_id, result)`` pairs, or a mapping of task id to result (a task
        listed twice is a :class:`ValidationError`). Each task is completed as by
        :meth:`complete_task`, in one transaction: dependents that become ready wake
        ``wait_for_tasks``, and waiters of ``wait_for_task`` wake, after the commit. If any
        task is not held by ``agent_id``, none is completed: the call raises what
        :meth:`complete_task` of the first such task would (:class:`LeaseLostError`, or
        :class:`NotFoundError` for an unknown id), after requeueing expired leases as that
        call would.
        """

    @abc.abstractmethod
    async def fail_task(self, task_id: str, agent_id: str, error: str) -> TaskModel:
        """Record a failed attempt: retry after backoff, or fail for good and cancel dependents."""

    @abc.abstractmethod
    async def cancel_task(self, task_id: str, reason: str | None = None) -> list[str]:
        """Cancel a task and, transitively, its unfinished dependents; returns their ids."""

    @abc.abstractmethod
    async def heartbeat_task(
        self, task_id: str, agent_id: str, lease: Duration | None = None
    ) -> TaskModel:
        """Extend the lease of a held task."""

    @abc.abstractmethod
    async def wait_for_tasks(
        self, timeout: Duration | None = None, task_types: Sequence[str] | None = None
    ) -> bool:
        """Wait until a task is ready to claim (of these types); ``False`` after ``timeout``.

        Woken across processes when a task is stored, a dependency completes or a task is
        requeued; a task waiting out a retry backoff is noticed when its time comes, and so is
        a task held past its lease (its worker died): a claim then requeues it.
        """

    @abc.abstractmethod
    async def release_task(self, task_id: str, agent_id: str) -> TaskModel:
        """Give back a task ``agent_id`` holds (assigned or running): pending again at once.

        For a worker that stops before finishing: the task loses its worker, lease and
        ``started_at`` and is ready for any worker, without counting a failed attempt
        (``retry_count`` and ``error`` are kept, no backoff). Wakes ``wait_for_tasks``.
        :class:`LeaseLostError` if ``agent_id`` does not hold it, as for ``complete_task``.
        """

    @abc.abstractmethod
    async def wait_for_task(
        self, task_id: str, timeout: Duration | None = None
    ) -> TaskModel | None:
        """The task, as soon as it is completed, failed or cancelled; ``None`` after ``timeout``.

        A failed attempt that will be retried is not final. ``timeout=None`` waits as long as
        it takes, ``0`` only looks. Woken by the commit that finishes the task, in this process
        or another; :class:`NotFoundError` if the task does not exist or is deleted meanwhile.
        """

    @abc.abstractmethod
    async def get_failed_tasks(
        self, task_type: str | None = None, limit: int = 100
    ) -> list[TaskModel]:
        """The dead letters: tasks failed for good (of a type), most recent failure first.

        A task lands here when its last attempt failed with no retry left (``fail_task`` or
        an expired lease); :meth:`retry_task` puts it back in the queue.
        """

    @abc.abstractmethod
    async def retry_task(self, task_id: str) -> TaskModel:
        """Requeue a task failed for good: pending and claimable at once; the new task.

        ``retry_count`` starts again at 0, so it gets its ``max_retries`` retries anew;
        ``error`` keeps the last failure until the next attempt. Dependents its failure
        cancelled stay cancelled. Wakes ``wait_for_tasks``. :class:`NotFoundError` for an
        unknown id; :class:`ConflictError` for a task that is not failed, or that depends on
        a failed or cancelled task (it could never run).
        """

    @abc.abstractmethod
    async def retry_tasks(self, task_ids: Sequence[str]) -> list[TaskModel]:
        """:meth:`retry_task` for several tasks, all or none; the new tasks, in that order."""

    @abc.abstractmethod
    async def retry_failed_tasks(self, task_type: str | None = None) -> int:
        """Requeue every dead letter (of a type) that can run again; how many.

        Tasks :meth:`retry_task` would refuse (a dependency failed or cancelled) are left.
        """

    @abc.abstractmethod
    async def get_dependency_results(self, task_id: str) -> dict[str, Any]:
        """The results of the task's completed dependencies, by dependency id.

        In the order the task lists its dependencies; those not completed are left out.
        :class:`NotFoundError` if the task does not exist.
        """

    # --- events -------------------------------------------------------------------------

    @abc.abstractmethod
    async def store_event(self, event: EventModel) -> int:
        """Append an event; returns its sequence (also set on ``event``)."""

    @abc.abstractmethod
    async def store_events(self, events: Sequence[EventModel]) -> list[int]:
        """Append events atomically, in order; returns their sequences."""

    @abc.abstractmethod
    async def get_event(self, event_id: str) -> EventModel | None:
        """The event with this id, or ``None``."""

    @abc.abstractmethod
    async def get_events_by_agent(self, agent_id: str, limit: int = 100) -> list[EventModel]:
        """An agent's events, newest first."""

    @abc.abstractmethod
    async def get_events_by_type(self, event_type: str, limit: int = 100) -> list[EventModel]:
        """Events of a type, newest first."""

    @abc.abstractmethod
    async def get_events_since(self, since: TimeArg) -> list[EventModel]:
        """Events with ``timestamp >= since``, oldest first."""

    @abc.abstractmethod
    async def read_events(self, after_sequence: int = 0, limit: int = 1000) -> list[EventModel]:
        """Events with sequence greater than ``after_sequence``, in sequence order."""

    @abc.abstractmethod
    def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[EventModel]:
        """Yield events after ``after_sequence`` as they are committed, forever."""

    # --- messages -----------------------------------------------------------------------

    @abc.abstractmethod
    async def store_message(self, message: MessageModel) -> None:
        """Store a message."""

    @abc.abstractmethod
    async def get_message(self, message_id: str) -> MessageModel | None:
        """The message with this id, or ``None``."""

    @abc.abstractmethod
    async def delete_message(self, message_id: str) -> None:
        """Delete a message (idempotent)."""

    @abc.abstractmethod
    async def get_messages_between(
        self, agent_a: str, agent_b: str, limit: int = 100
    ) -> list[MessageModel]:
        """Messages between two agents in both directions, newest first."""

    @abc.abstractmethod
    async def get_unread_messages(self, agent_id: str) -> list[MessageModel]:
        """Unread messages to an agent: highest priority first, then oldest."""

    @abc.abstractmethod
    async def mark_message_read(self, message_id: str) -> MessageModel:
        """Record a read receipt; the first read time is kept. Missing id: NotFoundError."""

    @abc.abstractmethod
    async def wait_for_messages(
        self, agent_id: str, timeout: Duration | None = None
    ) -> list[MessageModel]:
        """Unread messages to an agent, waiting up to ``timeout`` for one to arrive."""

    # --- metrics ------------------------------------------------------------------------

    @abc.abstractmethod
    async def store_metric(self, metric: MetricModel) -> None:
        """Store a measurement."""

    @abc.abstractmethod
    async def store_metrics(self, metrics: Sequence[MetricModel]) -> None:
        """Store measurements atomically."""

    @abc.abstractmethod
    async def get_metrics_by_agent(
        self, agent_id: str, metric_type: str | None = None
    ) -> list[MetricModel]:
        """An agent's measurements (of a type), oldest first."""

    @abc.abstractmethod
    async def get_aggregated_metrics(
        self, metric_type: str, start: TimeArg, end: TimeArg
    ) -> list[MetricModel]:
        """The crate's aggregate: one row per agent and unit in ``[start, end]``.

        ``value`` is the mean; ``tags`` carry ``count``, ``min``, ``max`` and ``sum``.
        """

    @abc.abstractmethod
    async def aggregate_metrics(
        self,
        metric_type: str,
        start: TimeArg,
        end: TimeArg,
        group_by: Sequence[str] = ("agent_id",),
        bucket: Duration | None = None,
    ) -> list[MetricAggregate]:
        """Count, sum, mean, min, max and percentiles per group (and time bucket).

        ``group_by`` names ``agent_id`` and/or ``tag:<name>``; the unit is always part of the
        group, so mixed units are never averaged together.
        """

    # --- transactions, queries, maintenance ---------------------------------------------

    @abc.abstractmethod
    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        """Open a transaction; calls from this task join it until commit or rollback."""

    @asynccontextmanager
    async def transaction(self, timeout: Duration | None = None) -> AsyncIterator[Transaction]:
        """``async with storage.transaction() as tx``: commit on exit, rollback on error."""
        tx = await self.begin_transaction(timeout)
        async with tx:
            yield tx

    @abc.abstractmethod
    async def query(self, builder: QueryBuilder[T]) -> list[T]:
        """Run a query built with :class:`QueryBuilder`."""

    @abc.abstractmethod
    async def count(self, builder: QueryBuilder[Any]) -> int:
        """How many rows ``builder`` selects, its limit and offset applied.

        The database counts them: no row is read into Python.
        """

    @abc.abstractmethod
    async def count_by(self, builder: QueryBuilder[Any], *group_by: str) -> dict[Any, int]:
        """The rows ``builder`` selects, counted per value of the ``group_by`` fields.

        ``count_by(QueryBuilder(TaskModel), "status")`` → ``{"pending": 3, "completed": 5}``;
        ``count_by(q, "task_type", "status")`` → ``{("build", "pending"): 3, ...}``. Fields
        are text, integer or boolean ones; keys are the stored values (an enum's as text,
        ``None`` where the field is empty). Values no row has are absent.
        """

    @abc.abstractmethod
    async def vacuum(self) -> None:
        """Reclaim free space."""

    @abc.abstractmethod
    async def checkpoint(self) -> None:
        """Flush the write-ahead log into the database."""

    @abc.abstractmethod
    async def get_storage_size(self) -> int:
        """Bytes used by the stored data."""

    @abc.abstractmethod
    async def prune(
        self,
        events_before: TimeArg | None = None,
        metrics_before: TimeArg | None = None,
        read_messages_before: TimeArg | None = None,
    ) -> PruneResult:
        """Delete events, metrics and read messages older than the given times."""

    @abc.abstractmethod
    async def apply_retention(
        self, policy: RetentionPolicy | Mapping[str, Any] | str | None = None
    ) -> PruneResult:
        """Run one retention pass now: the storage's policy (the ``retention`` option), or
        ``policy``; what it removed. See :mod:`ruv_swarm_persistence.retention`.

        A storage opened with a policy runs this by itself every ``policy.every``.
        """

    @abc.abstractmethod
    async def retention_report(self) -> RetentionReport:
        """This storage's policy, and when retention last ran (any process) and what it
        removed in all."""

    @abc.abstractmethod
    async def restore_retention_record(
        self, last_run: TimeArg | None, removed: Mapping[str, int]
    ) -> None:
        """Replace the record ``retention_report`` reads: when retention last ran and the
        rows it removed per table (``tasks``, ``events``, ``messages``, ``metrics``).

        For moving a database (``copy_storage`` carries the record over); retention passes
        keep it up to date by themselves.
        """

    # --- schedules ----------------------------------------------------------------------

    @abc.abstractmethod
    async def store_schedule(
        self,
        name: str,
        cron_or_interval: str | Duration,
        task_template: TaskModel | Mapping[str, Any],
        *,
        timezone: str = "UTC",
        missed: str = "skip",
    ) -> ScheduleModel:
        """Store (or redefine) a schedule; see :mod:`ruv_swarm_persistence.schedules`.

        A cron expression (the ``cron`` extra) in ``timezone``, or an interval; ``missed``
        says what becomes of due times that passed while no scheduler ran (``skip`` or
        ``run_once``). Redefining keeps the next due time unless the timing changed.
        """

    @abc.abstractmethod
    async def get_schedule(self, name: str) -> ScheduleModel | None:
        """The schedule, or ``None``."""

    @abc.abstractmethod
    async def list_schedules(self) -> list[ScheduleModel]:
        """Every schedule, by name."""

    @abc.abstractmethod
    async def restore_schedule(self, schedule: ScheduleModel) -> ScheduleModel:
        """Store a schedule exactly as ``get_schedule`` or ``list_schedules`` read it from
        another storage: its next and last due times, pause and times kept (where
        ``store_schedule`` would compute them afresh). A name already stored is a
        :class:`ConflictError`. For moving a database (``copy_storage`` uses it)."""

    @abc.abstractmethod
    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule (idempotent); the tasks it enqueued stay."""

    @abc.abstractmethod
    async def pause_schedule(self, name: str) -> ScheduleModel:
        """Stop a schedule enqueueing tasks; :class:`NotFoundError` for an unknown name."""

    @abc.abstractmethod
    async def resume_schedule(self, name: str) -> ScheduleModel:
        """Let a paused schedule run again, next at its first due time after now."""

    @abc.abstractmethod
    async def fire_due_schedules(self) -> list[str]:
        """One scheduler pass: enqueue a task for each schedule that is due; their ids.

        Safe to run from any number of processes at once: each due time is enqueued once.
        ``run_scheduler`` calls this in a loop.
        """

    # --- repositories -------------------------------------------------------------------

    @property
    def agents(self) -> Repository[AgentModel]:
        """Repository of agents."""
        return Repository(self, AgentModel)

    @property
    def tasks(self) -> Repository[TaskModel]:
        """Repository of tasks."""
        return Repository(self, TaskModel)

    @property
    def events(self) -> Repository[EventModel]:
        """Repository of events (append-only)."""
        return Repository(self, EventModel)

    @property
    def messages(self) -> Repository[MessageModel]:
        """Repository of messages."""
        return Repository(self, MessageModel)

    @property
    def metrics(self) -> Repository[MetricModel]:
        """Repository of metrics (append-only)."""
        return Repository(self, MetricModel)


class Transaction(Storage):
    """A storage view whose writes commit or roll back together.

    Use ``async with`` (commit on success, rollback on exception) or call :meth:`commit` /
    :meth:`rollback`. A transaction left open past its timeout is rolled back, and any later
    use raises :class:`TransactionError`.
    """

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make every write of the transaction durable and visible."""

    @abc.abstractmethod
    async def rollback(self) -> None:
        """Undo every write of the transaction."""

    @property
    @abc.abstractmethod
    def is_active(self) -> bool:
        """True until the transaction commits, rolls back or times out."""

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.is_active:
            # Committed or rolled back explicitly inside the block, or timed out.
            await self.settle_inactive(failed=exc is not None)
            return
        if exc is None:
            await self.commit()
        else:
            await self.rollback()

    async def settle_inactive(self, failed: bool) -> None:
        """Called on leaving ``async with`` when the transaction had already ended.

        A backend whose transaction timed out raises :class:`TransactionError` here (unless
        the block is already failing) and stops treating the task as inside it.
        """

    async def close(self) -> None:
        """Roll back if still open."""
        if self.is_active:
            await self.rollback()

    async def begin_transaction(self, timeout: Duration | None = None) -> Transaction:
        """Transactions do not nest."""
        raise TransactionError("a transaction is already open; transactions do not nest")
