"""The blocking twin of the Storage API, for code that is not async.

::

    from ruv_swarm_persistence.sync import open_storage

    with open_storage("swarm.db") as storage:
        storage.store_agent(AgentModel.new("worker-001", "researcher", ["analysis"]))
        with storage.transaction():
            storage.store_task(a)          # joins the transaction this thread began
            storage.store_task(b)
        for event in storage.subscribe():  # a plain iterator, blocks for new events
            ...

There is no second copy of the logic: a :class:`SyncStorage` owns a private event loop running
on a daemon thread, opens the async storage there, and each blocking method submits the async
method to that loop and waits for its result. The method wrappers are generated from
:class:`~ruv_swarm_persistence.storage.Storage` and
:class:`~ruv_swarm_persistence.repository.Repository` by ``scripts/gen_sync.py`` (whose
``--check`` mode the tests run), so they cannot drift from the API.

Transactions: the async API joins a transaction through a context variable of the task that
began it; here the thread that began a transaction plays that role. Calls a thread makes on the
storage while it has a transaction open run inside that transaction; other threads' calls see
the storage as other tasks would (on the memory backend they wait for the commit).

Workers: :class:`Worker` (:mod:`~ruv_swarm_persistence.sync_worker`) runs the async worker on
the same loop thread and blocks until it stops.

Lifecycle: use ``with`` or call :meth:`SyncStorage.close`, which closes the async storage and
stops the thread. One that is garbage collected while open emits a :class:`ResourceWarning`
and is closed then; the thread is a daemon, so a forgotten storage never keeps the process
alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import warnings
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .errors import StorageError
from .models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
)
from .query import QueryBuilder
from .repository import Repository
from .retention import RetentionPolicy, RetentionReport
from .schedules import ScheduleModel
from .storage import (
    Duration,
    MetricAggregate,
    PruneResult,
    QueueLimit,
    Storage,
    TimeArg,
    Transaction,
)
from .sync_worker import Worker
from .urls import in_browser

__all__ = [
    "SyncRepository",
    "SyncStorage",
    "SyncSubscription",
    "SyncTransaction",
    "Worker",
    "open_storage",
]

T = TypeVar("T")
R = TypeVar("R")

#: How long closing may take when a forgotten storage is collected (bounded so a wedged
#: backend cannot hang garbage collection or interpreter exit).
_ABANDON_TIMEOUT = 10.0


class _LoopThread:
    """An event loop on a daemon thread, and the blocking hand-off of coroutines to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closed = False
        self.thread = threading.Thread(target=_serve, args=(self.loop,), name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, R], *, closing: bool = False) -> R:
        """Run ``coro`` on the loop and wait for its result (or exception)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking storage method was called from its own event-loop thread "
                "(this would wait forever); use the async API there"
            )
        with self._lock:
            if self._closed and not closing:
                coro.close()
                raise StorageError("storage is closed")
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            # The loop was shut down under a call still waiting (another thread closed it).
            raise StorageError("storage is closed") from None
        except BaseException:
            # KeyboardInterrupt and friends: do not leave the call running on the loop.
            fut.cancel()
            raise

    def begin_close(self) -> bool:
        """Refuse new calls; ``False`` if the loop was already closing."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            return True

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop (cancelling calls still pending) and wait for the thread to end."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed itself meanwhile
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Body of the loop thread: run until stopped, then cancel what is left and close."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _invoke(call: Callable[[Any], Awaitable[R]], target: Any) -> R:
    # Runs on the loop thread, so even the synchronous part of ``call`` happens there.
    return await call(target)


def _abandon(runner: _LoopThread, storage: Storage, label: str) -> None:
    """Finalizer of a SyncStorage collected while open: warn, then close it."""
    try:
        warnings.warn(
            f"unclosed {label}; use 'with open_storage(...)' or call close()",
            ResourceWarning,
            stacklevel=2,
        )
    finally:
        # Even when warnings are errors, the thread must not outlive its storage.
        _shut_down(runner, storage)


def _shut_down(runner: _LoopThread, storage: Storage) -> None:
    if not runner.begin_close():
        return
    if threading.current_thread() is runner.thread:
        # Collected on its own loop thread: nothing may block here, so close in the background.
        async def close_then_stop() -> None:
            try:
                await storage.close()
            finally:
                runner.loop.stop()

        runner.loop.create_task(close_then_stop())
        return
    fut = asyncio.run_coroutine_threadsafe(storage.close(), runner.loop)
    with contextlib.suppress(BaseException):
        fut.result(_ABANDON_TIMEOUT)
    runner.stop(_ABANDON_TIMEOUT)


class _ThreadState(threading.local):
    """Per thread: the transaction it has open on one SyncStorage (weakly held)."""

    tx: weakref.ref[SyncTransaction] | None = None


class _SyncAPI:
    """The blocking Storage API shared by :class:`SyncStorage` and :class:`SyncTransaction`.

    Each method runs the async method of the same name on the owner's loop thread and returns
    its result; exceptions propagate unchanged.
    """

    __slots__ = ()

    def _owner(self) -> SyncStorage:
        raise NotImplementedError

    def _target(self) -> Storage:
        """The async storage (or transaction) calls from this thread go to."""
        raise NotImplementedError

    def _self(self) -> SyncStorage | SyncTransaction:
        raise NotImplementedError

    def _run(self, call: Callable[[Storage], Awaitable[R]]) -> R:
        return self._owner()._runner.run(_invoke(call, self._target()))

    # --- the parts that are not plain method calls --------------------------------------

    def begin_transaction(self, timeout: Duration | None = None) -> SyncTransaction:
        """Open a transaction; this thread's calls on the storage join it until it ends."""
        owner = self._owner()
        atx = self._run(lambda s: s.begin_transaction(timeout))
        stx = SyncTransaction(owner, atx)
        owner._state.tx = weakref.ref(stx)
        return stx

    @contextlib.contextmanager
    def transaction(self, timeout: Duration | None = None) -> Iterator[SyncTransaction]:
        """``with storage.transaction() as tx``: commit on exit, rollback on an exception."""
        tx = self.begin_transaction(timeout)
        with tx:
            yield tx

    def subscribe(
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> SyncSubscription:
        """Events after ``after_sequence`` as they are committed: a blocking iterator.

        It ends when the storage closes; :meth:`SyncSubscription.close` stops it early (also
        from another thread). Not part of a transaction: it follows committed events.
        """
        owner = self._owner()

        async def start(s: Storage) -> AsyncIterator[EventModel]:
            return s.subscribe(after_sequence, event_types)

        # A transaction refuses to subscribe (as the async one does); the storage streams.
        source = self._tx if isinstance(self, SyncTransaction) else owner._storage
        it = owner._runner.run(_invoke(start, source))
        return SyncSubscription(owner, it)

    @property
    def agents(self) -> SyncRepository[AgentModel]:
        """Repository of agents."""
        return SyncRepository(self._self(), AgentModel)

    @property
    def tasks(self) -> SyncRepository[TaskModel]:
        """Repository of tasks."""
        return SyncRepository(self._self(), TaskModel)

    @property
    def events(self) -> SyncRepository[EventModel]:
        """Repository of events (append-only)."""
        return SyncRepository(self._self(), EventModel)

    @property
    def messages(self) -> SyncRepository[MessageModel]:
        """Repository of messages."""
        return SyncRepository(self._self(), MessageModel)

    @property
    def metrics(self) -> SyncRepository[MetricModel]:
        """Repository of metrics (append-only)."""
        return SyncRepository(self._self(), MetricModel)

    # --- generated from Storage by scripts/gen_sync.py: do not edit by hand ---------------
    # BEGIN GENERATED STORAGE
    def store_agent(self, agent: AgentModel) -> None:
        """Store a new agent; an existing id raises :class:`ConflictError`."""
        self._run(lambda s: s.store_agent(agent))

    def get_agent(self, agent_id: str) -> AgentModel | None:
        """The agent with this id, or ``None``."""
        return self._run(lambda s: s.get_agent(agent_id))

    def update_agent(self, agent: AgentModel) -> None:
        """Replace a stored agent; a missing id raises :class:`NotFoundError`."""
        self._run(lambda s: s.update_agent(agent))

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent (idempotent).

        Its mailbox (messages to or from it) goes with it; tasks that named it lose
        ``assigned_to``, and the unfinished ones it held go back to pending as after an expired
        lease. Its events and metrics stay: they are history.
        """
        self._run(lambda s: s.delete_agent(agent_id))

    def list_agents(self) -> list[AgentModel]:
        """Every agent, oldest first."""
        return self._run(lambda s: s.list_agents())

    def list_agents_by_status(self, status: AgentStatus | str) -> list[AgentModel]:
        """Agents with this status, oldest first."""
        return self._run(lambda s: s.list_agents_by_status(status))

    def heartbeat(self, agent_id: str, at: TimeArg | None = None) -> None:
        """Stamp an agent's liveness (now, or ``at``); a missing id raises NotFoundError."""
        self._run(lambda s: s.heartbeat(agent_id, at))

    def find_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        """Agents whose heartbeat is older than ``older_than`` (an age, or a cut-off time).

        Agents already in ``error`` or ``shutdown`` are not listed.
        """
        return self._run(lambda s: s.find_stale_agents(older_than))

    def reap_stale_agents(self, older_than: Duration | datetime) -> list[AgentModel]:
        """Mark stale agents ``error`` and requeue the tasks they held; returns them."""
        return self._run(lambda s: s.reap_stale_agents(older_than))

    def store_task(self, task: TaskModel, *, raise_on_duplicate: bool = False) -> str:
        """Store a new task; the id it is stored under.

        Dependencies must exist; a cycle is a ValidationError. While an unfinished task
        (pending, assigned or running) holds the task's ``dedup_key``, nothing is stored and
        the holder's id is returned, or, with ``raise_on_duplicate``, a ConflictError raised.
        """
        return self._run(lambda s: s.store_task(task, raise_on_duplicate=raise_on_duplicate))

    def store_tasks(
        self, tasks: Sequence[TaskModel], *, raise_on_duplicate: bool = False
    ) -> list[str]:
        """Store several tasks atomically; they may depend on each other.

        Returns the id of each task, in order: its own, or that of the unfinished task that
        holds its ``dedup_key`` (see :meth:`store_task`); a task of the batch that depends on
        a task left out depends on that holder instead.
        """
        return self._run(lambda s: s.store_tasks(tasks, raise_on_duplicate=raise_on_duplicate))

    def get_task(self, task_id: str) -> TaskModel | None:
        """The task with this id, or ``None``."""
        return self._run(lambda s: s.get_task(task_id))

    def update_task(self, task: TaskModel) -> None:
        """Replace a stored task (the crate's update).

        A status change must be legal and goes through the same transition routine as every
        other method; dependencies cannot change. Putting a pending task into a worker's
        hands (``assigned`` or ``running``) is held to its ``concurrency_key``'s limits as a
        claim is, and counts as one: :class:`ConflictError` when the key admits no claim now.
        """
        self._run(lambda s: s.update_task(task))

    def delete_task(self, task_id: str) -> None:
        """Delete a task (idempotent); one that other tasks depend on raises ConflictError."""
        self._run(lambda s: s.delete_task(task_id))

    def get_pending_tasks(self) -> list[TaskModel]:
        """Every pending task (ready or not), highest priority first, then oldest."""
        return self._run(lambda s: s.get_pending_tasks())

    def get_ready_tasks(self, limit: int | None = None) -> list[TaskModel]:
        """Claimable tasks in claim order: pending, dependencies completed, ``run_after`` passed."""
        return self._run(lambda s: s.get_ready_tasks(limit))

    def get_tasks_by_agent(self, agent_id: str) -> list[TaskModel]:
        """Tasks assigned to an agent, highest priority first, then oldest."""
        return self._run(lambda s: s.get_tasks_by_agent(agent_id))

    def claim_task(self, task_id: str, agent_id: str, lease: Duration | None = None) -> bool:
        """Claim this task for ``agent_id`` if it is ready; ``False`` otherwise."""
        return self._run(lambda s: s.claim_task(task_id, agent_id, lease))

    def claim_next_task(
        self, agent_id: str, task_types: Sequence[str] | None = None, lease: Duration | None = None
    ) -> TaskModel | None:
        """Atomically claim the highest-priority, oldest ready task (of these types)."""
        return self._run(lambda s: s.claim_next_task(agent_id, task_types, lease))

    def claim_next_tasks(
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
        return self._run(
            lambda s: s.claim_next_tasks(agent_id, n, task_types=task_types, lease=lease)
        )

    def set_concurrency_limit(self, key: str, limit: int | None) -> None:
        """Let at most ``limit`` tasks whose ``concurrency_key`` is ``key`` be held at once.

        Claims skip a task whose key has ``limit`` tasks assigned or running (an expired
        lease frees its slot); ``0`` pauses the key, ``None`` removes the limit. Holds across
        processes; tasks already held are left alone. ``wait_for_tasks`` waits past tasks
        held back by their key; ``get_ready_tasks`` lists tasks by readiness alone.
        """
        self._run(lambda s: s.set_concurrency_limit(key, limit))

    def set_rate_limit(self, key: str, limit: int | None, per: Duration = 1.0) -> None:
        """Let at most ``limit`` tasks whose ``concurrency_key`` is ``key`` be claimed in any
        window of ``per`` (a sliding window over the claims themselves, shared by every
        process); ``None`` removes the limit.
        """
        self._run(lambda s: s.set_rate_limit(key, limit, per))

    def list_queue_limits(self) -> list[QueueLimit]:
        """Every key with a limit (``set_concurrency_limit``, ``set_rate_limit``), by key."""
        return self._run(lambda s: s.list_queue_limits())

    def start_task(self, task_id: str, agent_id: str) -> TaskModel:
        """Mark a held task running; LeaseLostError if ``agent_id`` no longer holds it."""
        return self._run(lambda s: s.start_task(task_id, agent_id))

    def complete_task(self, task_id: str, agent_id: str, result: Any = None) -> TaskModel:
        """Complete a held task; its dependents may become ready."""
        return self._run(lambda s: s.complete_task(task_id, agent_id, result))

    def complete_tasks(
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
        return self._run(lambda s: s.complete_tasks(results, agent_id))

    def fail_task(self, task_id: str, agent_id: str, error: str) -> TaskModel:
        """Record a failed attempt: retry after backoff, or fail for good and cancel dependents."""
        return self._run(lambda s: s.fail_task(task_id, agent_id, error))

    def cancel_task(self, task_id: str, reason: str | None = None) -> list[str]:
        """Cancel a task and, transitively, its unfinished dependents; returns their ids."""
        return self._run(lambda s: s.cancel_task(task_id, reason))

    def heartbeat_task(
        self, task_id: str, agent_id: str, lease: Duration | None = None
    ) -> TaskModel:
        """Extend the lease of a held task."""
        return self._run(lambda s: s.heartbeat_task(task_id, agent_id, lease))

    def wait_for_tasks(
        self, timeout: Duration | None = None, task_types: Sequence[str] | None = None
    ) -> bool:
        """Wait until a task is ready to claim (of these types); ``False`` after ``timeout``.

        Woken across processes when a task is stored, a dependency completes or a task is
        requeued; a task waiting out a retry backoff is noticed when its time comes, and so is
        a task held past its lease (its worker died): a claim then requeues it.
        """
        return self._run(lambda s: s.wait_for_tasks(timeout, task_types))

    def release_task(self, task_id: str, agent_id: str) -> TaskModel:
        """Give back a task ``agent_id`` holds (assigned or running): pending again at once.

        For a worker that stops before finishing: the task loses its worker, lease and
        ``started_at`` and is ready for any worker, without counting a failed attempt
        (``retry_count`` and ``error`` are kept, no backoff). Wakes ``wait_for_tasks``.
        :class:`LeaseLostError` if ``agent_id`` does not hold it, as for ``complete_task``.
        """
        return self._run(lambda s: s.release_task(task_id, agent_id))

    def wait_for_task(self, task_id: str, timeout: Duration | None = None) -> TaskModel | None:
        """The task, as soon as it is completed, failed or cancelled; ``None`` after ``timeout``.

        A failed attempt that will be retried is not final. ``timeout=None`` waits as long as
        it takes, ``0`` only looks. Woken by the commit that finishes the task, in this process
        or another; :class:`NotFoundError` if the task does not exist or is deleted meanwhile.
        """
        return self._run(lambda s: s.wait_for_task(task_id, timeout))

    def get_failed_tasks(self, task_type: str | None = None, limit: int = 100) -> list[TaskModel]:
        """The dead letters: tasks failed for good (of a type), most recent failure first.

        A task lands here when its last attempt failed with no retry left (``fail_task`` or
        an expired lease); :meth:`retry_task` puts it back in the queue.
        """
        return self._run(lambda s: s.get_failed_tasks(task_type, limit))

    def retry_task(self, task_id: str) -> TaskModel:
        """Requeue a task failed for good: pending and claimable at once; the new task.

        ``retry_count`` starts again at 0, so it gets its ``max_retries`` retries anew;
        ``error`` keeps the last failure until the next attempt. Dependents its failure
        cancelled stay cancelled. Wakes ``wait_for_tasks``. :class:`NotFoundError` for an
        unknown id; :class:`ConflictError` for a task that is not failed, or that depends on
        a failed or cancelled task (it could never run).
        """
        return self._run(lambda s: s.retry_task(task_id))

    def retry_tasks(self, task_ids: Sequence[str]) -> list[TaskModel]:
        """:meth:`retry_task` for several tasks, all or none; the new tasks, in that order."""
        return self._run(lambda s: s.retry_tasks(task_ids))

    def retry_failed_tasks(self, task_type: str | None = None) -> int:
        """Requeue every dead letter (of a type) that can run again; how many.

        Tasks :meth:`retry_task` would refuse (a dependency failed or cancelled) are left.
        """
        return self._run(lambda s: s.retry_failed_tasks(task_type))

    def get_dependency_results(self, task_id: str) -> dict[str, Any]:
        """The results of the task's completed dependencies, by dependency id.

        In the order the task lists its dependencies; those not completed are left out.
        :class:`NotFoundError` if the task does not exist.
        """
        return self._run(lambda s: s.get_dependency_results(task_id))

    def store_event(self, event: EventModel) -> int:
        """Append an event; returns its sequence (also set on ``event``)."""
        return self._run(lambda s: s.store_event(event))

    def store_events(self, events: Sequence[EventModel]) -> list[int]:
        """Append events atomically, in order; returns their sequences."""
        return self._run(lambda s: s.store_events(events))

    def get_event(self, event_id: str) -> EventModel | None:
        """The event with this id, or ``None``."""
        return self._run(lambda s: s.get_event(event_id))

    def get_events_by_agent(self, agent_id: str, limit: int = 100) -> list[EventModel]:
        """An agent's events, newest first."""
        return self._run(lambda s: s.get_events_by_agent(agent_id, limit))

    def get_events_by_type(self, event_type: str, limit: int = 100) -> list[EventModel]:
        """Events of a type, newest first."""
        return self._run(lambda s: s.get_events_by_type(event_type, limit))

    def get_events_since(self, since: TimeArg) -> list[EventModel]:
        """Events with ``timestamp >= since``, oldest first."""
        return self._run(lambda s: s.get_events_since(since))

    def read_events(self, after_sequence: int = 0, limit: int = 1000) -> list[EventModel]:
        """Events with sequence greater than ``after_sequence``, in sequence order."""
        return self._run(lambda s: s.read_events(after_sequence, limit))

    def store_message(self, message: MessageModel) -> None:
        """Store a message."""
        self._run(lambda s: s.store_message(message))

    def get_message(self, message_id: str) -> MessageModel | None:
        """The message with this id, or ``None``."""
        return self._run(lambda s: s.get_message(message_id))

    def delete_message(self, message_id: str) -> None:
        """Delete a message (idempotent)."""
        self._run(lambda s: s.delete_message(message_id))

    def get_messages_between(
        self, agent_a: str, agent_b: str, limit: int = 100
    ) -> list[MessageModel]:
        """Messages between two agents in both directions, newest first."""
        return self._run(lambda s: s.get_messages_between(agent_a, agent_b, limit))

    def get_unread_messages(self, agent_id: str) -> list[MessageModel]:
        """Unread messages to an agent: highest priority first, then oldest."""
        return self._run(lambda s: s.get_unread_messages(agent_id))

    def mark_message_read(self, message_id: str) -> MessageModel:
        """Record a read receipt; the first read time is kept. Missing id: NotFoundError."""
        return self._run(lambda s: s.mark_message_read(message_id))

    def wait_for_messages(
        self, agent_id: str, timeout: Duration | None = None
    ) -> list[MessageModel]:
        """Unread messages to an agent, waiting up to ``timeout`` for one to arrive."""
        return self._run(lambda s: s.wait_for_messages(agent_id, timeout))

    def store_metric(self, metric: MetricModel) -> None:
        """Store a measurement."""
        self._run(lambda s: s.store_metric(metric))

    def store_metrics(self, metrics: Sequence[MetricModel]) -> None:
        """Store measurements atomically."""
        self._run(lambda s: s.store_metrics(metrics))

    def get_metrics_by_agent(
        self, agent_id: str, metric_type: str | None = None
    ) -> list[MetricModel]:
        """An agent's measurements (of a type), oldest first."""
        return self._run(lambda s: s.get_metrics_by_agent(agent_id, metric_type))

    def get_aggregated_metrics(
        self, metric_type: str, start: TimeArg, end: TimeArg
    ) -> list[MetricModel]:
        """The crate's aggregate: one row per agent and unit in ``[start, end]``.

        ``value`` is the mean; ``tags`` carry ``count``, ``min``, ``max`` and ``sum``.
        """
        return self._run(lambda s: s.get_aggregated_metrics(metric_type, start, end))

    def aggregate_metrics(
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
        return self._run(lambda s: s.aggregate_metrics(metric_type, start, end, group_by, bucket))

    def query(self, builder: QueryBuilder[T]) -> list[T]:
        """Run a query built with :class:`QueryBuilder`."""
        return self._run(lambda s: s.query(builder))

    def count(self, builder: QueryBuilder[Any]) -> int:
        """How many rows ``builder`` selects, its limit and offset applied.

        The database counts them: no row is read into Python.
        """
        return self._run(lambda s: s.count(builder))

    def count_by(self, builder: QueryBuilder[Any], *group_by: str) -> dict[Any, int]:
        """The rows ``builder`` selects, counted per value of the ``group_by`` fields.

        ``count_by(QueryBuilder(TaskModel), "status")`` → ``{"pending": 3, "completed": 5}``;
        ``count_by(q, "task_type", "status")`` → ``{("build", "pending"): 3, ...}``. Fields
        are text, integer or boolean ones; keys are the stored values (an enum's as text,
        ``None`` where the field is empty). Values no row has are absent.
        """
        return self._run(lambda s: s.count_by(builder, *group_by))

    def vacuum(self) -> None:
        """Reclaim free space."""
        self._run(lambda s: s.vacuum())

    def checkpoint(self) -> None:
        """Flush the write-ahead log into the database."""
        self._run(lambda s: s.checkpoint())

    def get_storage_size(self) -> int:
        """Bytes used by the stored data."""
        return self._run(lambda s: s.get_storage_size())

    def prune(
        self,
        events_before: TimeArg | None = None,
        metrics_before: TimeArg | None = None,
        read_messages_before: TimeArg | None = None,
    ) -> PruneResult:
        """Delete events, metrics and read messages older than the given times."""
        return self._run(lambda s: s.prune(events_before, metrics_before, read_messages_before))

    def apply_retention(
        self, policy: RetentionPolicy | Mapping[str, Any] | str | None = None
    ) -> PruneResult:
        """Run one retention pass now: the storage's policy (the ``retention`` option), or
        ``policy``; what it removed. See :mod:`ruv_swarm_persistence.retention`.

        A storage opened with a policy runs this by itself every ``policy.every``.
        """
        return self._run(lambda s: s.apply_retention(policy))

    def retention_report(self) -> RetentionReport:
        """This storage's policy, and when retention last ran (any process) and what it
        removed in all.
        """
        return self._run(lambda s: s.retention_report())

    def restore_retention_record(
        self, last_run: TimeArg | None, removed: Mapping[str, int]
    ) -> None:
        """Replace the record ``retention_report`` reads: when retention last ran and the
        rows it removed per table (``tasks``, ``events``, ``messages``, ``metrics``).

        For moving a database (``copy_storage`` carries the record over); retention passes
        keep it up to date by themselves.
        """
        self._run(lambda s: s.restore_retention_record(last_run, removed))

    def store_schedule(
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
        return self._run(
            lambda s: s.store_schedule(
                name, cron_or_interval, task_template, timezone=timezone, missed=missed
            )
        )

    def get_schedule(self, name: str) -> ScheduleModel | None:
        """The schedule, or ``None``."""
        return self._run(lambda s: s.get_schedule(name))

    def list_schedules(self) -> list[ScheduleModel]:
        """Every schedule, by name."""
        return self._run(lambda s: s.list_schedules())

    def restore_schedule(self, schedule: ScheduleModel) -> ScheduleModel:
        """Store a schedule exactly as ``get_schedule`` or ``list_schedules`` read it from
        another storage: its next and last due times, pause and times kept (where
        ``store_schedule`` would compute them afresh). A name already stored is a
        :class:`ConflictError`. For moving a database (``copy_storage`` uses it).
        """
        return self._run(lambda s: s.restore_schedule(schedule))

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule (idempotent); the tasks it enqueued stay."""
        self._run(lambda s: s.delete_schedule(name))

    def pause_schedule(self, name: str) -> ScheduleModel:
        """Stop a schedule enqueueing tasks; :class:`NotFoundError` for an unknown name."""
        return self._run(lambda s: s.pause_schedule(name))

    def resume_schedule(self, name: str) -> ScheduleModel:
        """Let a paused schedule run again, next at its first due time after now."""
        return self._run(lambda s: s.resume_schedule(name))

    def fire_due_schedules(self) -> list[str]:
        """One scheduler pass: enqueue a task for each schedule that is due; their ids.

        Safe to run from any number of processes at once: each due time is enqueued once.
        ``run_scheduler`` calls this in a loop.
        """
        return self._run(lambda s: s.fire_due_schedules())

    # END GENERATED STORAGE


class SyncStorage(_SyncAPI):
    """A storage whose methods block: the async storage run on a private event-loop thread.

    Create with :func:`open_storage`, or ``SyncStorage(opener)`` where ``opener`` is a
    zero-argument async callable returning an open :class:`Storage` (it runs on the loop
    thread, where the storage then lives). Safe to call from several threads.
    """

    __slots__ = ("__weakref__", "_finalizer", "_label", "_runner", "_state", "_storage")

    def __init__(self, opener: Callable[[], Awaitable[Storage]], *, label: str = "storage") -> None:
        if in_browser():
            raise StorageError(
                "the blocking API runs the storage on a thread, which a browser (Pyodide) does "
                "not have: use the async API there (storage = await init_storage())"
            )
        self._label = label
        self._state = _ThreadState()
        self._runner = _LoopThread(f"swarm-sync {label}")

        async def open_it() -> Storage:
            return await opener()

        try:
            self._storage: Storage = self._runner.run(open_it())
        except BaseException:
            self._runner.begin_close()
            self._runner.stop()
            raise
        self._finalizer = weakref.finalize(
            self, _abandon, self._runner, self._storage, f"SyncStorage({label})"
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<SyncStorage {self._label} ({type(self._storage).__name__}, {state})>"

    def _owner(self) -> SyncStorage:
        return self

    def _self(self) -> SyncStorage:
        return self

    def _target(self) -> Storage:
        ref = self._state.tx
        if ref is not None:
            tx = ref()
            if tx is not None and not tx._ended:
                return tx._tx
            self._state.tx = None
        return self._storage

    @property
    def storage(self) -> Storage:
        """The async storage underneath; use it only through :meth:`call`."""
        return self._storage

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the async storage lives on, on the facade's thread."""
        return self._runner.loop

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or the storage was collected)."""
        return not self._finalizer.alive

    def call(self, fn: Callable[[Storage], Awaitable[R]]) -> R:
        """Run ``fn(storage)`` on the loop thread and return its result.

        For what a backend offers beyond the Storage API, e.g.
        ``storage.call(lambda s: s.backup("copy.db"))`` on SQLite. Joins this thread's
        transaction like every other call.
        """
        return self._run(fn)

    def close(self) -> None:
        """Close the async storage (flushing pending writes) and stop the thread; idempotent."""
        if not self._finalizer.detach():
            return
        if not self._runner.begin_close():
            return
        try:
            self._runner.run(self._storage.close(), closing=True)
        finally:
            self._runner.stop()

    def __enter__(self) -> SyncStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncTransaction(_SyncAPI):
    """A transaction of a :class:`SyncStorage`; it has the whole blocking API.

    ``with`` commits on success and rolls back on an exception; or call :meth:`commit` /
    :meth:`rollback`.
    """

    __slots__ = ("__weakref__", "_ended", "_storage", "_tx")

    def __init__(self, storage: SyncStorage, tx: Transaction) -> None:
        self._storage = storage
        self._tx = tx
        self._ended = False

    def __repr__(self) -> str:
        return f"<SyncTransaction of {self._storage!r} active={self.is_active}>"

    def _owner(self) -> SyncStorage:
        return self._storage

    def _self(self) -> SyncTransaction:
        return self

    def _target(self) -> Storage:
        return self._tx

    def _finish(self, fn: Callable[[Transaction], Awaitable[None]]) -> None:
        try:
            self._storage._runner.run(_invoke(fn, self._tx))
        finally:
            if not self._tx.is_active:
                self._ended = True

    @property
    def is_active(self) -> bool:
        """True until the transaction commits, rolls back or times out."""
        return self._tx.is_active

    def commit(self) -> None:
        """Make every write of the transaction durable and visible."""
        self._finish(lambda t: t.commit())

    def rollback(self) -> None:
        """Undo every write of the transaction."""
        self._finish(lambda t: t.rollback())

    def close(self) -> None:
        """Roll back if still open."""
        self._finish(lambda t: t.close())

    def __enter__(self) -> SyncTransaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The async transaction decides (commit, rollback, or report a timeout).
        self._finish(lambda t: t.__aexit__(exc_type, exc, tb))


class SyncRepository(Generic[T]):
    """The blocking :class:`~ruv_swarm_persistence.repository.Repository` of one model."""

    __slots__ = ("model", "storage")

    def __init__(self, storage: SyncStorage | SyncTransaction, model: type[T]) -> None:
        self.storage = storage
        self.model = model

    def _run(self, call: Callable[[Repository[T]], Awaitable[R]]) -> R:
        model = self.model
        return self.storage._run(lambda s: call(Repository(s, model)))

    def builder(self) -> QueryBuilder[T]:
        """A query builder over this repository's model."""
        return QueryBuilder(self.model)

    # --- generated from Repository by scripts/gen_sync.py: do not edit by hand ------------
    # BEGIN GENERATED REPOSITORY
    def find_by_id(self, id: str) -> T | None:
        """The record with this id, or ``None`` (a point read where the storage has one)."""
        return self._run(lambda r: r.find_by_id(id))

    def find_all(self) -> list[T]:
        """Every record, ordered by id (creation order for generated ids)."""
        return self._run(lambda r: r.find_all())

    def save(self, entity: T) -> None:
        """Store a new record."""
        self._run(lambda r: r.save(entity))

    def update(self, entity: T) -> None:
        """Replace a stored record; a missing id raises NotFoundError."""
        self._run(lambda r: r.update(entity))

    def delete(self, id: str) -> None:
        """Delete a record (idempotent)."""
        self._run(lambda r: r.delete(id))

    def query(self, builder: QueryBuilder[T]) -> list[T]:
        """Run a builder over this repository's model."""
        return self._run(lambda r: r.query(builder))

    # END GENERATED REPOSITORY


class SyncSubscription(Iterator[EventModel]):
    """A blocking iterator over committed events (see :meth:`SyncStorage.subscribe`).

    One consumer at a time; :meth:`close` may be called from any thread and ends it.
    """

    def __init__(self, storage: SyncStorage, it: AsyncIterator[EventModel]) -> None:
        self._storage = storage
        self._it = it
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[EventModel] | None = None
        self._done = False

    def __iter__(self) -> SyncSubscription:
        return self

    def __next__(self) -> EventModel:
        with self._lock:
            if self._done:
                raise StopIteration
            runner = self._storage._runner
            if runner.loop.is_closed():
                self._done = True
                raise StopIteration
            try:
                fut = asyncio.run_coroutine_threadsafe(_next(self._it), runner.loop)
            except RuntimeError:  # the loop closed meanwhile
                self._done = True
                raise StopIteration from None
            self._pending = fut
        try:
            return fut.result()
        except (StopAsyncIteration, concurrent.futures.CancelledError):
            self._done = True
            raise StopIteration from None
        except BaseException:
            fut.cancel()
            self._done = True
            raise
        finally:
            self._pending = None

    def close(self) -> None:
        """Stop the subscription; a ``next()`` waiting in another thread ends the iteration."""
        self._done = True
        pending = self._pending
        if pending is not None:
            pending.cancel()
        with self._lock:
            runner = self._storage._runner
            if runner.loop.is_closed() or self._storage.closed:
                return
            aclose = getattr(self._it, "aclose", None)
            if aclose is not None:

                async def close_it(_: object) -> None:
                    await aclose()

                with contextlib.suppress(StorageError, RuntimeError):
                    runner.run(_invoke(close_it, None))

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _next(it: AsyncIterator[EventModel]) -> EventModel:
    return await it.__anext__()


def _label(url: object) -> str:
    """The URL for messages, without a password."""
    text = str(url)
    parts = urlsplit(text)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return text


def open_storage(url: str | os.PathLike[str] | None = None, **options: Any) -> SyncStorage:
    """Open the storage ``url`` names (as :func:`~ruv_swarm_persistence.init_storage`), blocking.

    ``None`` means ``$SWARM_DB_URL``, else ``./swarm.db``. Options are the backend's (``clock``,
    ``lease``, ``retry_policy``, ``limits``, ``transaction_timeout``, …).
    """
    from .urls import init_storage

    label = _label(url) if url is not None else "default"
    return SyncStorage(lambda: init_storage(url, **options), label=label)
