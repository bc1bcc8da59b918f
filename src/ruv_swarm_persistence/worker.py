"""Workers: the agent loop every swarm needs, written once.

A :class:`Worker` is one agent working the task queue::

    async def summarize(task: TaskModel, ctx: TaskContext) -> dict[str, Any]:
        texts = ctx.dependency_results          # results of the task's dependencies
        return {"summary": ...}                 # stored as the task's result

    worker = Worker(storage, "summarizer-1", {"summarize": summarize}, concurrency=4)
    await worker.run()                          # until worker.stop() (or run() is cancelled)

It registers the agent (or reuses a stored one, marking it active), heartbeats it, and claims
ready tasks of the types it has handlers for, up to ``concurrency`` at once. It works in
``concurrency`` lanes, asyncio tasks that each do what a hand-written loop does: claim a task,
run it, write its outcome, claim the next. While tasks keep coming every lane claims for
itself; when a claim finds none, one lane sleeps in ``storage.wait_for_tasks`` and the others
sleep until it finds work (each lane that finds a task wakes one more), so an idle worker makes
one claim per wake-up, not ``concurrency`` of them. A new task, a completed dependency, a
requeued task or the end of a retry backoff wakes it at once, in this process or another, and
so does the end of the earliest lease of a task of its types (nothing announces an expired
lease, but the wait knows when it is due: a task whose worker died is taken over then). The
wait is bounded (``idle_check``) as a safety net.

Each claimed task is started (``start_task``), its dependencies' results are read in one query
(only when it has dependencies), and its handler runs in the lane; a plain function runs in a
thread (``asyncio.to_thread``). While it runs the worker renews the lease every third of it
(``heartbeat_task``, from one timer for the worker: a renewal costs nothing until due). Then:

* the handler returns: ``complete_task`` with its return value (a value that is not strict
  JSON fails the attempt with the ``ValidationError``'s text instead);
* the handler raises: ``fail_task`` with ``"ExceptionType: message"``; the storage retries the
  task after its backoff or fails it for good once ``max_retries`` are used;
* the lease is lost (a renewal or the final write raises :class:`LeaseLostError`: the lease ran
  out and another worker took the task, or the task was cancelled): the handler is cancelled and
  nothing is written, ever, for that attempt: its late result is refused, not retried. A handler
  that overruns its lease without renewal (renewal off, or an event loop blocked for longer than
  the lease) learns it when its result is refused;
* the task is cancelled (``cancel_task``) while its handler runs: the next renewal raises
  :class:`LeaseLostError`, the worker reads the task, sees ``cancelled`` and cancels the handler
  (which sees :class:`asyncio.CancelledError`). The task's final state is ``cancelled``; a
  result the handler produces anyway is refused;
* the worker stops: see below.

Stopping (:meth:`Worker.stop`, or cancelling :meth:`Worker.run`): the worker claims nothing
more at once; running handlers get ``grace`` seconds to finish and write their outcome as
usual; those still running then are cancelled and their tasks released (``release_task``):
pending again at once for any worker, without counting a failed attempt. No task stays leased
by a stopped worker. ``stop(now=True)`` (a second Ctrl-C) skips what is left of the grace; so
does cancelling ``run()``. Finally the agent is marked ``shutdown`` (the models' "offline"), if
it is still marked ``active``: a status someone else set meanwhile (``error`` after the agent
was reaped as stale, ``paused`` by an operator) is left alone.

Events. The library appends no events of its own, but a worker does unless told not to
(``events=False``), a few and cheap ones, each naming the agent and, for a task, the task:
``worker.started`` and ``worker.stopped`` (with the worker's counts), and one per finished
attempt: ``task.completed``, ``task.failed`` (``final`` says whether it will be retried),
``task.lease_lost``, ``task.cancelled`` and ``task.released``. ``on_outcome`` hands the same
facts to a callback as :class:`TaskReport` objects, and :attr:`Worker.stats` counts them.

Each worker needs an agent id of its own: leases are held by agent id, so two workers sharing
one could complete each other's tasks.

Cancellation and threads: a handler running in a thread cannot be interrupted; when the worker
cancels it, the worker goes on without it (its result is ignored) and
:attr:`TaskContext.cancel_requested` turns true, which a long sync handler should check. An
async handler that swallows its cancellation keeps its lane until it returns; a stopping worker
waits for it ``UNWIND_S`` at most, then releases its task and goes on without it.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Final

from . import codec
from .errors import (
    ConflictError,
    DatabaseError,
    LeaseLostError,
    PoolError,
    SerializationError,
    StorageError,
    ValidationError,
)
from .models import AgentModel, AgentStatus, EventModel, TaskModel, TaskStatus
from .storage import Duration, Storage
from .worker_reports import (
    LOG_PHRASES,
    MAX_ERROR_CHARS,
    Outcome,
    TaskReport,
    WorkerStats,
    error_text,
    new_report,
)

__all__ = [
    "MAX_ERROR_CHARS",
    "Handler",
    "Outcome",
    "TaskContext",
    "TaskReport",
    "Worker",
    "WorkerStats",
]

log = logging.getLogger(__name__)

#: A task handler: ``async def handle(task, ctx) -> result`` or a plain function (run in a
#: thread). Its return value is the task's result (strict JSON).
Handler = Callable[[TaskModel, "TaskContext"], Any]

#: Seconds a cancelled handler gets to unwind before a stopping worker goes on without it.
UNWIND_S: Final = 1.0
#: Longest pause between attempts to claim while the storage keeps failing.
MAX_BACKOFF_S: Final = 5.0

#: Storage errors that may pass: the lane pauses and tries again.
_TRANSIENT: Final = (DatabaseError, PoolError)

# Where a job is: the lane is writing to the storage (never interrupted there), or running the
# handler (where an interruption cancels it).
_STORAGE: Final = 0
_HANDLER: Final = 1

#: When a handler began and when its lease was renewed: the same clock as asyncio's loops, read
#: without a method call.
_clock: Final = time.monotonic

# Why the worker gave up on a job: it stops (past the grace), or it lost the lease.
_STOP: Final = "stop"
_LOST: Final = "lost"


class TaskContext:
    """What a handler gets besides its task.

    ``task`` (as started), ``agent_id``, ``storage``, ``dependency_results`` (the results of
    the task's completed dependencies by id, read before the handler runs), :meth:`renew` to
    extend the lease now, and :attr:`cancel_requested`.
    """

    __slots__ = (
        "_cancel",
        "_lease",
        "_worker",
        "agent_id",
        "dependency_results",
        "storage",
        "task",
    )

    def __init__(
        self,
        task: TaskModel,
        agent_id: str,
        storage: Storage,
        dependency_results: dict[str, Any],
        *,
        lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self.task = task
        self.agent_id = agent_id
        self.storage = storage
        self.dependency_results = dependency_results
        self._lease = lease
        #: The worker running the attempt (``None``: a context made by hand).
        self._worker: Worker | None = None
        # A plain flag: a handler running in a thread reads it (one attribute read is atomic).
        self._cancel = False

    @property
    def attempt(self) -> int:
        """Which attempt this is: 1 for the first, 2 for the first retry, …"""
        return self.task.retry_count + 1

    @property
    def lease(self) -> timedelta:
        """How long each renewal extends the lease."""
        return self._lease

    @property
    def cancel_requested(self) -> bool:
        """True once the worker has given up on this attempt (lease lost, task cancelled,
        worker stopping past its grace). An async handler is cancelled as well; a handler
        running in a thread cannot be, and should return soon after this turns true."""
        return self._cancel

    async def renew(self) -> TaskModel:
        """Extend the lease now (the worker also does so every third of the lease).

        Raises :class:`LeaseLostError` if the worker no longer holds the task; the worker then
        cancels the handler and writes nothing for this attempt. Call it from the handler's
        event loop (an async handler), not from a thread.
        """
        try:
            return await self.storage.heartbeat_task(self.task.id, self.agent_id, self._lease)
        except LeaseLostError:
            if self._worker is not None and isinstance(self, _Job):
                self._worker._interrupt(self, _LOST)
            raise


class _Job(TaskContext):
    """One claimed task on its way through a lane; its handler gets it as its context (one
    object per task, not two pointing at each other)."""

    __slots__ = (
        "began",
        "cancelled",
        "lane",
        "phase",
        "reason",
        "renewed",
        "renewing",
        "settled",
    )

    def __init__(self, task: TaskModel, worker: Worker, lane: asyncio.Task[Any]) -> None:
        self.task = task
        self.agent_id = worker._agent_id
        self.storage = worker._storage
        #: Filled in once the task is started, if it has dependencies.
        self.dependency_results = {}
        self._lease = worker._lease
        self._worker = worker
        self._cancel = False
        #: The lane's asyncio task: cancelled (only while in the handler) to interrupt it.
        self.lane = lane
        self.phase = _STORAGE
        #: Why the worker gave up on the attempt (``_STOP``, ``_LOST``), or ``None``.
        self.reason: str | None = None
        #: Whether this worker cancelled the lane (then it owes one ``uncancel()``).
        self.cancelled = False
        #: Whether the outcome was written by someone else than the lane (a stopping worker
        #: giving up on a handler that ignores its cancellation): the lane writes nothing.
        self.settled = False
        #: When the handler began (``_clock``); ``None`` before.
        self.began: float | None = None
        #: When the lease was last renewed (``_clock``), and whether a renewal is in flight.
        self.renewed = 0.0
        self.renewing = False


def _is_async(handler: Handler) -> bool:
    """Whether calling ``handler`` gives a coroutine (functions, partials, async __call__)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - an instance's async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _seconds(value: Duration, field: str) -> float:
    return codec.duration_arg(value, field) / 1e6


async def _in_thread(handler: Handler, task: TaskModel, ctx: TaskContext) -> Any:
    result = await asyncio.to_thread(handler, task, ctx)
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        result = await result
    return result


class Worker:
    """An agent working the task queue: claim, run the handler, renew, complete or fail.

    ``agent``: an agent id (registered as a ``worker`` agent whose capabilities are the task
    types, if no agent has that id) or an :class:`AgentModel` (stored if missing). An agent
    already stored is reused: only its status changes (``active``, then ``shutdown`` on stop).
    ``handlers`` maps task types to handlers; ``task_types`` (default: every type with a
    handler) narrows what is claimed. Durations take seconds or a ``timedelta``:

    * ``lease`` (30 s): each claim's lease, renewed every third of it while the handler runs
      (``renew=False``: not renewed; the handler may call :meth:`TaskContext.renew`).
    * ``grace`` (5 s): how long a stopping worker lets running handlers finish. Keep it shorter
      than whatever kills the process after asking it to stop (``docker stop``: 10 s).
    * ``heartbeat`` (10 s): how often the agent's liveness is stamped (``None``: never, when
      the application heartbeats the agent itself).
    * ``idle_check`` (5 s): the longest an idle worker waits for a wake-up before trying to
      claim anyway (see the module docstring).
    * ``events`` (True): record ``worker.*`` and ``task.*`` events (see the module docstring).
    * ``on_outcome``: called (or awaited, if it returns an awaitable) with a
      :class:`TaskReport` after each attempt, as soon as its outcome is written (before its
      event), in the task's lane; what it raises is logged and ignored.

    :meth:`run` does the work; :meth:`stop` ends it. A worker runs once.
    """

    def __init__(
        self,
        storage: Storage,
        agent: str | AgentModel,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 1,
        task_types: Sequence[str] | None = None,
        lease: Duration = 30.0,
        grace: Duration = 5.0,
        heartbeat: Duration | None = 10.0,
        idle_check: Duration = 5.0,
        renew: bool = True,
        events: bool = True,
        on_outcome: Callable[[TaskReport], object] | None = None,
    ) -> None:
        if isinstance(agent, AgentModel):
            self._agent_id = codec.check_id(agent.id, "agent.id")
            self._agent_model: AgentModel | None = agent
        else:
            self._agent_id = codec.check_id(agent, "agent")
            self._agent_model = None
        if not handlers:
            raise ValueError("a worker needs at least one handler")
        for name, handler in handlers.items():
            codec.check_text(name, "handlers (task type)")
            if not callable(handler):
                raise TypeError(f"the handler of {name!r} is not callable")
        types = list(handlers) if task_types is None else list(task_types)
        if isinstance(task_types, str):
            raise TypeError("task_types must be a sequence of task types, not one string")
        if not types:
            raise ValueError("task_types must name at least one task type")
        missing = [t for t in types if t not in handlers]
        if missing:
            raise ValueError(f"no handler for task type(s) {', '.join(map(repr, missing))}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        self._storage = storage
        # Each type's handler and whether it is async, looked up once per task.
        self._handlers = {t: (handlers[t], _is_async(handlers[t])) for t in types}
        self._types = types
        self._concurrency = concurrency
        self._lease = timedelta(seconds=_seconds(lease, "lease"))
        self._lease_s = self._lease.total_seconds()
        self._grace = codec.duration_arg(grace, "grace", allow_zero=True) / 1e6
        self._heartbeat = None if heartbeat is None else _seconds(heartbeat, "heartbeat")
        self._idle_check = _seconds(idle_check, "idle_check")
        self._renew_every = self._lease_s / 3 if renew else None
        self._events = events
        self._on_outcome = on_outcome
        self._stats = WorkerStats()
        self._jobs: set[_Job] = set()
        self._started = False
        self._stop_requested = False
        self._hurry_requested = False
        # Made by run() on its loop; stop() resolves them.
        self._stopped: asyncio.Future[None] | None = None
        self._hurry: asyncio.Future[None] | None = None
        # Lanes asleep until a claim finds work (each holds a future to resolve), and whether
        # one lane is waiting in wait_for_tasks for all of them.
        self._sleepers: collections.deque[asyncio.Future[None]] = collections.deque()
        self._watching = False
        self._failures = 0
        # Lease renewals in flight (held so they are not collected while they run).
        self._renewals: set[asyncio.Task[None]] = set()
        # Set by _crash(): the worker writes nothing more, as after a killed process.
        self._dead = False

    # --- public surface -------------------------------------------------------------------

    @property
    def agent_id(self) -> str:
        """The id of the agent this worker works as."""
        return self._agent_id

    @property
    def task_types(self) -> list[str]:
        """The task types this worker claims."""
        return list(self._types)

    @property
    def stats(self) -> WorkerStats:
        """A copy of the worker's counts."""
        return replace(self._stats)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or :meth:`run` was cancelled)."""
        return self._stop_requested

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming at once; running handlers get ``grace`` to finish (``now``: none),
        then are cancelled and their tasks released. :meth:`run` returns when that is done.

        Call it from the worker's event loop (``loop.call_soon_threadsafe(worker.stop)`` from
        another thread). Calling it again with ``now=True`` cuts the grace short.
        """
        self._stop_requested = True
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        while self._sleepers:
            fut = self._sleepers.popleft()
            if not fut.done():
                fut.set_result(None)
        if now:
            self._hurry_requested = True
            if self._hurry is not None and not self._hurry.done():
                self._hurry.set_result(None)

    async def run(self) -> None:
        """Work until :meth:`stop`: register, claim, run handlers; then stop as documented.

        Cancelling the call stops the worker too, without grace (handlers are cancelled and
        their tasks released), and re-raises :class:`asyncio.CancelledError`. Storage errors
        that may pass (a lost connection) pause the claiming and are retried; any other error
        stops the worker the same way and is raised.
        """
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._hurry = loop.create_future()
        if self._stop_requested:  # stopped before it ran
            self.stop(now=self._hurry_requested)
        await self._register()
        await self._event("worker.started", self._start_payload())
        log.info(
            "worker %s started: types %s, concurrency %d, lease %gs",
            self._agent_id,
            ", ".join(self._types),
            self._concurrency,
            self._lease_s,
        )
        beat = asyncio.create_task(self._heartbeats()) if self._heartbeat is not None else None
        every = self._renew_every
        renewer = None if every is None else loop.create_task(self._renewer(every))
        lanes = [
            loop.create_task(self._lane(), name=f"worker {self._agent_id} lane {i}")
            for i in range(self._concurrency)
        ]
        error: BaseException | None = None
        try:
            await asyncio.wait({self._stopped, *lanes}, return_when=asyncio.FIRST_COMPLETED)
            for lane in lanes:
                if lane.done() and not lane.cancelled() and lane.exception() is not None:
                    error = lane.exception()
                    self.stop(now=True)
                    break
        except BaseException:
            # Cancelled: no grace, but still release what is held.
            self.stop(now=True)
            raise
        finally:
            self.stop(now=self._hurry_requested)
            try:
                await self._drain(lanes)
            finally:
                for helper in (beat, renewer):
                    if helper is not None:
                        helper.cancel()
                        await asyncio.gather(helper, return_exceptions=True)
                await self._unregister()
                stats = self._stats.payload()
                await self._event("worker.stopped", stats)
                counts = ", ".join(f"{k} {v}" for k, v in stats.items() if v)
                log.info("worker %s stopped: %s", self._agent_id, counts or "nothing done")
        if error is not None:
            raise error

    # --- lanes ----------------------------------------------------------------------------

    async def _lane(self) -> None:
        """Claim, run and write one task at a time until the worker stops.

        One coroutine for all of it, the attempt written inline: on a fast storage a coroutine
        more per task is a measurable share of what the worker adds to a hand-written loop."""
        s, me, types, lease = self._storage, self._agent_id, self._types, self._lease
        jobs, stats, handlers = self._jobs, self._stats, self._handlers
        lane = asyncio.current_task()
        assert lane is not None
        # "while True" and not "while not stopping": CPython 3.11 warms a loop up for its
        # specializing interpreter only on an unconditional jump back, and a lane runs once.
        while True:
            if self._stop_requested:
                return
            try:
                # Never cancelled (it may have taken a task): a worker that stops meanwhile
                # gives back what it took (below).
                task = await s.claim_next_task(me, types, lease)
            except _TRANSIENT as exc:
                await self._pause(exc)
                continue
            self._failures = 0
            if task is None:
                try:
                    await self._idle()
                except _TRANSIENT as exc:
                    await self._pause(exc)
                continue
            if self._sleepers:  # there may be more: one more lane claims
                fut = self._sleepers.popleft()
                if not fut.done():
                    fut.set_result(None)
            job = _Job(task, self, lane)
            jobs.add(job)
            stats.claimed += 1
            stats.running += 1
            try:
                if self._stop_requested:  # claimed as the worker was told to stop: not started
                    await self._release(job)
                    continue
                try:
                    job.task = task = await s.start_task(task.id, me)
                    if task.dependencies:
                        job.dependency_results = await s.get_dependency_results(task.id)
                except LeaseLostError:
                    await self._lost(job)
                    continue
                except SerializationError as exc:
                    # A dependency's stored result cannot be read: the same on every try, so
                    # the attempt fails (and the task, once its retries are used) instead of
                    # looping.
                    await self._fail(job, error_text(exc), None)
                    continue
                except _TRANSIENT as exc:
                    log.warning("worker %s: task %s could not start: %s", me, task.id, exc)
                    await self._release(job)
                    continue
                if job.reason is not None:  # given up on before the handler began
                    await (self._release(job) if job.reason == _STOP else self._lost(job))
                    continue
                handler, is_async = handlers[task.task_type]
                failure: BaseException | None = None
                result: Any = None
                job.began = job.renewed = _clock()
                job.phase = _HANDLER
                try:
                    if is_async:
                        result = await handler(task, job)
                    else:
                        result = await _in_thread(handler, task, job)
                except asyncio.CancelledError as exc:
                    job.phase = _STORAGE
                    if job.cancelled:
                        lane.uncancel()
                    elif job.reason is None and lane.cancelling():
                        raise  # the lane itself is cancelled: the loop is going away
                    failure = exc
                except Exception as exc:
                    job.phase = _STORAGE
                    if job.cancelled:
                        lane.uncancel()
                    failure = exc
                else:
                    job.phase = _STORAGE
                    if job.cancelled:
                        lane.uncancel()
                if job.settled:
                    continue
                if job.reason is None and failure is None:
                    if self._dead:
                        continue
                    try:
                        stored = await s.complete_task(task.id, me, result)
                    except LeaseLostError:
                        await self._lost(job, result)
                    except ValidationError as exc:  # the result is not strict JSON
                        await self._fail(job, error_text(exc), result)
                    except StorageError as exc:
                        await self._unrecorded(job, exc, result)
                    else:
                        rest = self._settle(job, Outcome.Completed, stored, result, None)
                        if rest is not None:
                            await rest
                elif job.reason == _STOP:
                    await self._release(job)
                elif job.reason == _LOST:
                    await self._lost(job, result)
                elif isinstance(failure, asyncio.CancelledError):
                    # Cancelled by someone else than this worker (the handler itself, a task it
                    # awaited): the attempt failed.
                    await self._fail(job, "CancelledError: the handler was cancelled", None)
                else:
                    assert failure is not None
                    await self._fail(job, error_text(failure), None)
            except Exception:
                log.exception("worker %s: task %s: unexpected error", me, job.task.id)
            finally:
                if job in jobs:  # else a stopping worker gave up on it (_drain)
                    jobs.discard(job)
                    stats.running -= 1

    async def _idle(self) -> None:
        """Nothing to claim: watch for work, or sleep while another lane watches."""
        if self._stop_requested:  # a claim that was in flight as the worker stopped
            return
        if self._watching:
            fut = asyncio.get_running_loop().create_future()
            self._sleepers.append(fut)
            try:
                await fut
            finally:
                if not fut.done():  # the lane is cancelled (the loop is closing)
                    fut.cancel()
            return
        self._watching = True
        try:
            await self._until_stopped(self._storage.wait_for_tasks(self._idle_check, self._types))
        finally:
            self._watching = False

    async def _pause(self, trouble: BaseException) -> None:
        self._failures += 1
        pause = min(0.1 * 2 ** min(self._failures, 16), MAX_BACKOFF_S)
        log.warning(
            "worker %s: storage error, trying again in %.1fs: %s", self._agent_id, pause, trouble
        )
        await self._until_stopped(asyncio.sleep(pause))

    async def _until_stopped(self, aw: Awaitable[Any]) -> None:
        """Await ``aw`` unless the worker is told to stop first (then ``aw`` is cancelled)."""
        stopped = self._stopped
        assert stopped is not None
        fut = asyncio.ensure_future(aw)
        try:
            await asyncio.wait({fut, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not fut.done():
                fut.cancel()
                await asyncio.wait({fut})
        if not fut.cancelled():
            fut.result()  # what it raised, raised here

    def _interrupt(self, job: _Job, reason: str) -> None:
        """Give up on a job: its handler is cancelled, its outcome decided by ``reason``."""
        if job.reason is None:
            job.reason = reason
        job._cancel = True
        # Soon, not now: this may run inside the handler (a renewal it made), which is told by
        # the LeaseLostError it gets; the lane is cancelled only if still in the handler then.
        asyncio.get_running_loop().call_soon(self._cancel_handler, job)

    def _cancel_handler(self, job: _Job) -> None:
        if job.phase == _HANDLER and not job.cancelled and not job.settled:
            job.cancelled = True
            job.lane.cancel()

    async def _renewer(self, every: float) -> None:
        """Renew the lease of every handler running for ``every`` seconds since its last
        renewal: one timer for the worker, a renewal task only when one is due."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every / 4)
            now = _clock()
            for job in list(self._jobs):
                if (
                    job.phase == _HANDLER
                    and job.reason is None
                    and not job.renewing
                    and now - job.renewed >= every
                ):
                    job.renewing = True
                    renewal = loop.create_task(self._renew(job))
                    self._renewals.add(renewal)
                    renewal.add_done_callback(self._renewals.discard)

    async def _renew(self, job: _Job) -> None:
        me, task_id = self._agent_id, job.task.id
        try:
            await self._storage.heartbeat_task(task_id, me, self._lease)
        except LeaseLostError:
            if job.phase == _HANDLER:  # else the lane's own write finds out
                self._interrupt(job, _LOST)
        except Exception as exc:
            # The next renewal tries again; if the lease runs out meanwhile, that one raises
            # LeaseLostError.
            log.warning("worker %s: lease of task %s not renewed: %s", me, task_id, exc)
        finally:
            job.renewed = _clock()
            job.renewing = False

    def _duration(self, job: _Job) -> float:
        if job.began is None:
            return 0.0
        return _clock() - job.began

    # --- writing the outcome (once; a refused write is never retried) ---------------------

    async def _fail(self, job: _Job, error: str, result: Any) -> None:
        if self._dead:
            return
        try:
            stored = await self._storage.fail_task(job.task.id, self._agent_id, error)
        except LeaseLostError:
            await self._lost(job, result)
        except StorageError as exc:
            await self._unrecorded(job, exc, result)
        else:
            await self._finish(job, Outcome.Failed, stored, result=result, error=error)

    async def _release(self, job: _Job) -> None:
        if self._dead:
            return
        try:
            stored = await self._storage.release_task(job.task.id, self._agent_id)
        except LeaseLostError:
            await self._lost(job)
        except StorageError as exc:
            await self._unrecorded(job, exc, None)
        else:
            await self._finish(job, Outcome.Released, stored)

    async def _lost(self, job: _Job, result: Any = None) -> None:
        """The worker no longer holds the task: say whether it was cancelled or taken."""
        if self._dead:
            return
        task = job.task
        try:
            current = await self._storage.get_task(task.id)
        except StorageError:
            current = None
        if current is not None and current.status == TaskStatus.Cancelled:
            await self._finish(job, Outcome.Cancelled, current, result=result)
        else:
            await self._finish(job, Outcome.LeaseLost, current or task, result=result)

    async def _unrecorded(self, job: _Job, exc: StorageError, result: Any) -> None:
        log.warning(
            "worker %s: the outcome of task %s was not recorded (its lease will run out): %s",
            self._agent_id,
            job.task.id,
            exc,
        )
        self._stats.count(Outcome.Unrecorded)
        if self._on_outcome is not None:
            report = TaskReport(
                Outcome.Unrecorded, job.task, self._agent_id, result, str(exc), self._duration(job)
            )
            await self._report(report)

    async def _finish(
        self,
        job: _Job,
        outcome: Outcome,
        stored: TaskModel,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        rest = self._settle(job, outcome, stored, result, error)
        if rest is not None:
            await rest

    def _settle(
        self, job: _Job, outcome: Outcome, stored: TaskModel, result: Any, error: str | None
    ) -> Awaitable[None] | None:
        """Count, log and report a written outcome; what is left to await (an awaitable
        ``on_outcome`` returned, the event), if anything. No await before the callback: what
        it counts is counted before anyone (a retry of this very task) can run."""
        stats = self._stats
        if outcome is Outcome.Completed:
            stats.completed += 1
        else:
            stats.count(outcome)
        duration = 0.0 if job.began is None else _clock() - job.began
        # Info, all of them: a failing task is the application's business (the task records
        # it); warnings are kept for the worker's own trouble (a write that did not happen).
        if log.isEnabledFor(logging.INFO):
            final = stored.status == TaskStatus.Failed
            log.info(
                "worker %s: task %s (%s) %s",
                self._agent_id,
                stored.id,
                stored.task_type,
                LOG_PHRASES[outcome].format(
                    attempt=job.task.retry_count + 1,
                    ms=duration * 1000,
                    error=error,
                    again="failed for good" if final else "failed",
                    retry="" if final else ", will be retried",
                ),
            )
        returned: Any = None
        if self._on_outcome is not None:
            report = new_report(outcome, stored, self._agent_id, result, error, duration)
            try:
                returned = self._on_outcome(report)
            except Exception:
                log.exception("worker %s: on_outcome failed", self._agent_id)
                returned = None
            else:
                if returned is not None and not inspect.isawaitable(returned):
                    returned = None
        if not self._events:
            return None if returned is None else self._await_callback(returned)
        payload: dict[str, Any] = {"attempt": job.task.retry_count + 1}
        if outcome is Outcome.Completed:
            payload["ms"] = round(duration * 1000, 3)
        elif outcome is Outcome.Failed:
            payload["error"] = error
            payload["final"] = stored.status == TaskStatus.Failed
        return self._then_event(returned, f"task.{outcome.value}", payload, stored.id)

    async def _await_callback(self, returned: Awaitable[Any]) -> None:
        try:
            await returned
        except Exception:
            log.exception("worker %s: on_outcome failed", self._agent_id)

    async def _then_event(
        self, returned: Awaitable[Any] | None, event_type: str, payload: Any, task_id: str
    ) -> None:
        if returned is not None:
            await self._await_callback(returned)
        await self._event(event_type, payload, task_id)

    async def _report(self, report: TaskReport) -> None:
        assert self._on_outcome is not None
        try:
            returned = self._on_outcome(report)
            if returned is not None and inspect.isawaitable(returned):
                await returned
        except Exception:
            log.exception("worker %s: on_outcome failed", self._agent_id)

    # --- the agent ------------------------------------------------------------------------

    async def _register(self) -> None:
        s, me = self._storage, self._agent_id
        stored = await s.get_agent(me)
        if stored is None:
            if self._agent_model is not None:
                new = replace(self._agent_model)
            else:
                new = AgentModel.new(me, "worker", list(self._types), id=me)
            new.set_status(AgentStatus.Active)
            new.update_heartbeat()
            try:
                await s.store_agent(new)
                return
            except ConflictError:  # registered meanwhile by someone else
                stored = await s.get_agent(me)
                if stored is None:
                    raise
        stored.set_status(AgentStatus.Active)
        stored.update_heartbeat()
        await s.update_agent(stored)

    async def _unregister(self) -> None:
        if self._dead:
            return
        try:
            stored = await self._storage.get_agent(self._agent_id)
            # Only the status this worker set is undone: "error" (reaped as stale) or
            # "paused" (an operator) says something the worker must not overwrite.
            if stored is not None and stored.status == AgentStatus.Active:
                stored.set_status(AgentStatus.Shutdown)
                await self._storage.update_agent(stored)
        except StorageError as exc:
            log.warning("worker %s: agent status not updated on stop: %s", self._agent_id, exc)

    async def _heartbeats(self) -> None:
        assert self._heartbeat is not None
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                await self._storage.heartbeat(self._agent_id)
            except StorageError as exc:
                log.warning("worker %s: heartbeat failed: %s", self._agent_id, exc)

    # --- stopping -------------------------------------------------------------------------

    async def _drain(self, lanes: list[asyncio.Task[None]]) -> None:
        """Give running handlers the grace, then interrupt them (their tasks are released)."""
        loop = asyncio.get_running_loop()
        hurry = self._hurry
        assert hurry is not None
        busy = {lane for lane in lanes if not lane.done()}
        if self._jobs and not hurry.done():
            log.info(
                "worker %s stopping: waiting up to %gs for %d running task(s)",
                self._agent_id,
                self._grace,
                len(self._jobs),
            )
            deadline = loop.time() + self._grace
            while busy and not hurry.done():
                left = deadline - loop.time()
                if left <= 0:
                    break
                await asyncio.wait(
                    {*busy, hurry}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                busy = {lane for lane in busy if not lane.done()}
        for job in list(self._jobs):
            self._interrupt(job, _STOP)
        if busy:
            await asyncio.wait(busy, timeout=UNWIND_S)
            busy = {lane for lane in busy if not lane.done()}
        # A handler that ignored its cancellation keeps its lane: its task is given back here
        # and the lane, if it ever returns, writes nothing. Lanes busy with the storage (a
        # claim, a write) are waited for.
        stuck = [job for job in self._jobs if job.phase == _HANDLER and job.lane in busy]
        for job in stuck:
            log.warning(
                "worker %s: the handler of task %s ignored its cancellation; going on without it",
                self._agent_id,
                job.task.id,
            )
            job.settled = True
            busy.discard(job.lane)
            self._jobs.discard(job)
            self._stats.running -= 1
        for job in stuck:
            await self._release(job)
        if busy:
            await asyncio.wait(busy)
        if self._renewals:
            await asyncio.gather(*self._renewals, return_exceptions=True)

    def _crash(self) -> None:
        """Stop as a killed process would: handlers cancelled, nothing more written (tasks
        stay leased until their leases run out, the agent keeps its status). For simulations
        (the demo's crashed agent); never what a real worker should do."""
        self._dead = True
        self._events = False
        self.stop(now=True)

    # --- events ---------------------------------------------------------------------------

    def _start_payload(self) -> dict[str, Any]:
        return {
            "task_types": list(self._types),
            "concurrency": self._concurrency,
            "lease_s": self._lease_s,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    async def _event(self, event_type: str, payload: Any, task_id: str | None = None) -> None:
        if not self._events:
            return
        event = EventModel.new(event_type, payload, agent_id=self._agent_id, task_id=task_id)
        try:
            await self._storage.store_event(event)
        except StorageError as exc:
            # The event log is a record, not the outcome: the task's state is already written.
            log.warning("worker %s: event %s not recorded: %s", self._agent_id, event_type, exc)
