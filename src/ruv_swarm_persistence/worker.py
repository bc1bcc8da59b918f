"""Workers: the agent loop every swarm needs, written once.

A :class:`Worker` is one agent working the task queue::

    async def summarize(task: TaskModel, ctx: TaskContext) -> dict[str, Any]:
        texts = ctx.dependency_results          # results of the task's dependencies
        return {"summary": ...}                 # stored as the task's result

    worker = Worker(storage, "summarizer-1", {"summarize": summarize}, concurrency=4)
    await worker.run()                          # until worker.stop() (or run() is cancelled)

It registers the agent (or reuses a stored one, marking it active), heartbeats it, and claims
ready tasks of the types it has handlers for, up to ``concurrency`` at once. It sleeps in
``storage.wait_for_tasks`` when there is nothing to do, so a new task, a completed dependency
or a requeued task wakes it at once, in this process or another; the wait is bounded
(``idle_check``) as a safety net, and that is also how soon an idle worker notices a task whose
lease ran out elsewhere (nothing announces an expired lease; the next claim requeues it).

Each claimed task is started (``start_task``), its dependencies' results are read in one query
(only when it has dependencies), and its handler runs as an asyncio task of its own; a plain
function runs in a thread (``asyncio.to_thread``). While it runs the worker renews the lease
every third of it (``heartbeat_task``). Then:

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
:attr:`TaskContext.cancel_requested` turns true, which a long sync handler should check.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
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

__all__ = [
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

#: Seconds a cancelled handler gets to unwind before the worker goes on without it.
UNWIND_S: Final = 1.0
#: Longest pause between attempts to claim while the storage keeps failing.
MAX_BACKOFF_S: Final = 5.0
#: An error text longer than this is cut (the storage refuses strings past its limit).
MAX_ERROR_CHARS: Final = 4000

#: How each outcome reads in the log (``again`` and ``retry`` say whether a failure is final).
_LOG_PHRASES: Final = {
    "completed": "completed (attempt {attempt}, {ms:.1f} ms)",
    "failed": "{again} (attempt {attempt}{retry}): {error}",
    "lease_lost": "lost its lease (attempt {attempt}): another worker has it, nothing written",
    "cancelled": "was cancelled while running (attempt {attempt}): handler stopped",
    "released": "released unfinished (attempt {attempt}): pending again for any worker",
    "unrecorded": "",
}

#: Storage errors that may pass: the claim loop pauses and tries again.
_TRANSIENT: Final = (DatabaseError, PoolError)


class Outcome(StrEnum):
    """How one attempt at a task ended, as far as this worker is concerned."""

    #: The handler returned and its result was stored: the task is completed.
    Completed = "completed"
    #: The handler raised (or returned a value that is not JSON) and the attempt was recorded
    #: as failed: the task is pending for a retry, or failed for good (``task.status`` says).
    Failed = "failed"
    #: The worker no longer held the task (its lease ran out and another worker took it):
    #: nothing was written.
    LeaseLost = "lease_lost"
    #: The task was cancelled while this worker held it: the handler was cancelled (or its
    #: result refused), and the task stays cancelled.
    Cancelled = "cancelled"
    #: The worker stopped before the handler finished and gave the task back: pending again,
    #: no attempt counted.
    Released = "released"
    #: The outcome could not be written (the storage failed): the task stays leased until its
    #: lease runs out, which counts as a failed attempt, and is then retried.
    Unrecorded = "unrecorded"


@dataclass(frozen=True, slots=True)
class TaskReport:
    """One finished attempt, handed to ``on_outcome``."""

    outcome: Outcome
    #: The task as stored after the worker's write (completed, failed or pending for a retry,
    #: released); when nothing was written, the task as this worker last saw it.
    task: TaskModel
    agent_id: str
    #: What the handler returned (``None`` unless it returned).
    result: Any = None
    #: The error recorded for a failed attempt (or why nothing was written).
    error: str | None = None
    #: Seconds the handler ran (0 when it never started).
    duration: float = 0.0


@dataclass(slots=True)
class WorkerStats:
    """What a worker has done so far (:attr:`Worker.stats` returns a copy)."""

    claimed: int = 0
    running: int = 0
    completed: int = 0
    #: Failed attempts recorded (each retried after backoff, or the task failed for good).
    failed: int = 0
    lease_lost: int = 0
    cancelled: int = 0
    released: int = 0
    unrecorded: int = 0


class TaskContext:
    """What a handler gets besides its task.

    ``task`` (as started), ``agent_id``, ``storage``, ``dependency_results`` (the results of
    the task's completed dependencies by id, read before the handler runs), :meth:`renew` to
    extend the lease now, and :attr:`cancel_requested`.
    """

    __slots__ = ("_cancel", "_job", "_lease", "agent_id", "dependency_results", "storage", "task")

    def __init__(
        self,
        task: TaskModel,
        agent_id: str,
        storage: Storage,
        dependency_results: dict[str, Any],
        *,
        lease: timedelta = timedelta(seconds=30),
        job: _Job | None = None,
    ) -> None:
        self.task = task
        self.agent_id = agent_id
        self.storage = storage
        self.dependency_results = dependency_results
        self._lease = lease
        self._job = job
        # A threading.Event so that a handler running in a thread can read it.
        self._cancel = threading.Event()

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
        return self._cancel.is_set()

    async def renew(self) -> TaskModel:
        """Extend the lease now (the worker also does so every third of the lease).

        Raises :class:`LeaseLostError` if the worker no longer holds the task; the worker then
        cancels the handler and writes nothing for this attempt. Call it from the handler's
        event loop (an async handler), not from a thread.
        """
        try:
            return await self.storage.heartbeat_task(self.task.id, self.agent_id, self._lease)
        except LeaseLostError:
            if self._job is not None:
                self._job.lose()
            raise


class _Job:
    """One claimed task on its way through the worker."""

    __slots__ = ("began", "ctx", "handler_task", "interrupt", "lost", "runner", "task")

    def __init__(self, task: TaskModel, loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        #: Resolved with why the worker stops waiting for the handler: "stop" (grace over) or
        #: "lost" (a renewal by the handler itself found the lease gone).
        self.interrupt: asyncio.Future[str] = loop.create_future()
        self.lost = False
        self.ctx: TaskContext | None = None
        self.handler_task: asyncio.Task[Any] | None = None
        self.runner: asyncio.Task[None] | None = None
        self.began: float | None = None

    def stop(self, reason: str) -> None:
        if not self.interrupt.done():
            self.interrupt.set_result(reason)

    def lose(self) -> None:
        self.lost = True
        self.stop("lost")


def _error_text(exc: BaseException) -> str:
    """``Type: message`` as the storage accepts it: cut to a sane length, no NUL, no lone
    surrogates (an exception's message may hold anything)."""
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    text = text.replace("\x00", "\\0")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _is_async(handler: Handler) -> bool:
    """Whether calling ``handler`` gives a coroutine (functions, partials, async __call__)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - an instance's async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _seconds(value: Duration, field: str) -> float:
    return codec.duration_arg(value, field) / 1e6


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve an abandoned handler's outcome, so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


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
      event), in the task's slot; what it raises is logged and ignored.

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
        self._handlers = {t: handlers[t] for t in types}
        self._async = {t: _is_async(h) for t, h in self._handlers.items()}
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
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._slot = asyncio.Event()
        # Claims in flight; when the worker stops, what they took is released on the way out.
        self._claims: set[asyncio.Future[TaskModel | None]] = set()
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
        return self._stopping.is_set()

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming at once; running handlers get ``grace`` to finish (``now``: none),
        then are cancelled and their tasks released. :meth:`run` returns when that is done.

        Call it from the worker's event loop (``loop.call_soon_threadsafe(worker.stop)`` from
        another thread). Calling it again with ``now=True`` cuts the grace short.
        """
        self._stopping.set()
        if now:
            self._hurry.set()

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
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await self._claim_loop(stopped)
        except BaseException:
            # Cancelled, or failing: no grace, but still release what is held.
            self.stop(now=True)
            raise
        finally:
            self._stopping.set()
            stopped.cancel()
            try:
                await self._drain()
            finally:
                if beat is not None:
                    beat.cancel()
                    await asyncio.gather(beat, return_exceptions=True)
                await self._unregister()
                await self._event("worker.stopped", self._stats_payload())
                counts = ", ".join(f"{k} {v}" for k, v in self._stats_payload().items() if v)
                log.info("worker %s stopped: %s", self._agent_id, counts or "nothing done")

    # --- claiming -------------------------------------------------------------------------

    async def _claim_loop(self, stopped: asyncio.Future[Any]) -> None:
        # Claims run side by side while they keep finding work: the number in flight doubles
        # after a claim that found a task (up to the free slots) and falls back to one after a
        # claim that found none, so a busy queue is drained by concurrent claims (committed
        # together on SQLite, on several connections on PostgreSQL) and an idle worker wakes
        # up to a single claim, not ``concurrency`` of them.
        s, me, types, lease = self._storage, self._agent_id, self._types, self._lease
        loop = asyncio.get_running_loop()
        claims = self._claims
        failures = 0
        want = 1
        while not self._stopping.is_set():
            room = self._concurrency - len(self._jobs) - len(claims)
            while room > 0 and len(claims) < want:
                # A claim is never cancelled (it may have taken a task): if the worker stops
                # or run() is cancelled meanwhile, _drain() waits for it and releases its task.
                claims.add(asyncio.ensure_future(s.claim_next_task(me, types, lease)))
                room -= 1
            if not claims:
                self._slot.clear()
                await self._until_stopped(self._slot.wait(), stopped)
                continue
            await asyncio.wait({*claims, stopped}, return_when=asyncio.FIRST_COMPLETED)
            found = empty = False
            trouble: BaseException | None = None
            for claim in [c for c in claims if c.done()]:
                claims.discard(claim)
                exc = claim.exception()
                if isinstance(exc, _TRANSIENT):
                    trouble = exc
                    continue
                if exc is not None:
                    raise exc
                task = claim.result()
                if task is None:
                    empty = True
                    continue
                found = True
                job = self._begin(task, loop)
                if self._stopping.is_set():  # told to stop while claiming: give it back
                    job.stop("stop")
            if trouble is not None:
                failures += 1
                want = 1
                pause = min(0.1 * 2 ** min(failures, 16), MAX_BACKOFF_S)
                log.warning(
                    "worker %s: storage error, trying again in %.1fs: %s", me, pause, trouble
                )
                await self._until_stopped(asyncio.sleep(pause), stopped)
                continue
            if found or empty:
                failures = 0
            if found:
                want = min(self._concurrency, want * 2)
            elif empty:
                want = 1
                if not claims:
                    await self._until_stopped(s.wait_for_tasks(self._idle_check, types), stopped)

    async def _until_stopped(self, aw: Awaitable[Any], stopped: asyncio.Future[Any]) -> None:
        """Await ``aw`` unless the worker is told to stop first (then ``aw`` is cancelled)."""
        fut = asyncio.ensure_future(aw)
        try:
            await asyncio.wait({fut, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not fut.done():
                fut.cancel()
                await asyncio.wait({fut})
        if not fut.cancelled():
            fut.result()  # what it raised, raised here

    def _begin(self, task: TaskModel, loop: asyncio.AbstractEventLoop) -> _Job:
        job = _Job(task, loop)
        self._jobs.add(job)
        self._stats.claimed += 1
        self._stats.running += 1
        job.runner = asyncio.create_task(self._run_job(job), name=f"worker task {task.id}")
        return job

    # --- one task -------------------------------------------------------------------------

    async def _run_job(self, job: _Job) -> None:
        try:
            await self._attempt(job)
        except Exception:
            log.exception("worker %s: task %s: unexpected error", self._agent_id, job.task.id)
        finally:
            self._jobs.discard(job)
            self._stats.running -= 1
            self._slot.set()

    async def _attempt(self, job: _Job) -> None:
        s, me = self._storage, self._agent_id
        task = job.task
        if job.interrupt.done():  # claimed as the worker was told to stop: not started at all
            await self._release(job)
            return
        try:
            job.task = task = await s.start_task(task.id, me)
            deps = await s.get_dependency_results(task.id) if task.dependencies else {}
        except LeaseLostError:
            await self._lost(job)
            return
        except SerializationError as exc:
            # A dependency's stored result cannot be read: the same on every try, so the
            # attempt fails (and the task, once its retries are used) instead of looping.
            await self._fail(job, _error_text(exc), None)
            return
        except _TRANSIENT as exc:
            log.warning("worker %s: task %s could not start: %s", me, task.id, exc)
            await self._release(job)
            return
        if job.interrupt.done():  # stopped past the grace before the handler began
            await self._release(job)
            return
        ctx = job.ctx = TaskContext(task, me, s, deps, lease=self._lease, job=job)
        loop = asyncio.get_running_loop()
        job.began = loop.time()
        handler = job.handler_task = asyncio.create_task(
            self._call(task.task_type, task, ctx), name=f"handler {task.id}"
        )
        handler.add_done_callback(_consume)
        why = await self._watch(job, handler)
        if why == "stop":
            await self._cancel_handler(job)
            await self._release(job)
        elif why == "lost" or job.lost:
            await self._cancel_handler(job)
            await self._lost(job)
        elif handler.cancelled():
            # Cancelled by someone else than this worker (it cancels only after "stop" or
            # "lost"): the attempt failed.
            await self._fail(job, "CancelledError: the handler was cancelled", None)
        elif (raised := handler.exception()) is not None:
            await self._fail(job, _error_text(raised), None)
        else:
            await self._complete(job, handler.result())

    async def _call(self, task_type: str, task: TaskModel, ctx: TaskContext) -> Any:
        handler = self._handlers[task_type]
        if self._async[task_type]:
            return await handler(task, ctx)
        result = await asyncio.to_thread(handler, task, ctx)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            result = await result
        return result

    async def _watch(self, job: _Job, handler: asyncio.Task[Any]) -> str:
        """Renew the lease until the handler is done ("done"), or why not: "stop", "lost"."""
        s, me, task = self._storage, self._agent_id, job.task
        waits = {handler, job.interrupt}
        while True:
            done, _ = await asyncio.wait(
                waits, timeout=self._renew_every, return_when=asyncio.FIRST_COMPLETED
            )
            if handler.done():
                return "done"
            if job.interrupt.done():
                return job.interrupt.result()
            if done:
                continue
            try:
                await s.heartbeat_task(task.id, me, self._lease)
            except LeaseLostError:
                job.lost = True
                return "lost"
            except StorageError as exc:
                # The next renewal tries again; if the lease runs out meanwhile, that one
                # raises LeaseLostError.
                log.warning("worker %s: lease of task %s not renewed: %s", me, task.id, exc)

    async def _cancel_handler(self, job: _Job) -> None:
        if job.ctx is not None:
            job.ctx._cancel.set()
        handler = job.handler_task
        if handler is None or handler.done():
            return
        handler.cancel()
        done, _ = await asyncio.wait({handler}, timeout=UNWIND_S)
        if not done:
            log.warning(
                "worker %s: the handler of task %s ignored its cancellation; going on without it",
                self._agent_id,
                job.task.id,
            )

    def _duration(self, job: _Job) -> float:
        if job.began is None:
            return 0.0
        return asyncio.get_running_loop().time() - job.began

    # --- writing the outcome (once; a refused write is never retried) ---------------------

    async def _complete(self, job: _Job, result: Any) -> None:
        if self._dead:
            return
        try:
            stored = await self._storage.complete_task(job.task.id, self._agent_id, result)
        except LeaseLostError:
            await self._lost(job, result)
        except ValidationError as exc:  # the result is not strict JSON
            await self._fail(job, _error_text(exc), result)
        except StorageError as exc:
            await self._unrecorded(job, exc, result)
        else:
            ms = round(self._duration(job) * 1000, 3)
            payload = {"attempt": job.task.retry_count + 1, "ms": ms}
            await self._finish(job, Outcome.Completed, stored, payload, result=result)

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
            final = stored.status == TaskStatus.Failed
            payload = {"attempt": job.task.retry_count + 1, "error": error, "final": final}
            await self._finish(job, Outcome.Failed, stored, payload, result=result, error=error)

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
            payload = {"attempt": job.task.retry_count + 1}
            await self._finish(job, Outcome.Released, stored, payload)

    async def _lost(self, job: _Job, result: Any = None) -> None:
        """The worker no longer holds the task: say whether it was cancelled or taken."""
        if self._dead:
            return
        task = job.task
        try:
            current = await self._storage.get_task(task.id)
        except StorageError:
            current = None
        payload = {"attempt": task.retry_count + 1}
        if current is not None and current.status == TaskStatus.Cancelled:
            await self._finish(job, Outcome.Cancelled, current, payload, result=result)
        else:
            await self._finish(job, Outcome.LeaseLost, current or task, payload, result=result)

    async def _unrecorded(self, job: _Job, exc: StorageError, result: Any) -> None:
        log.warning(
            "worker %s: the outcome of task %s was not recorded (its lease will run out): %s",
            self._agent_id,
            job.task.id,
            exc,
        )
        report = TaskReport(
            Outcome.Unrecorded, job.task, self._agent_id, result, str(exc), self._duration(job)
        )
        self._stats.unrecorded += 1
        await self._report(report)

    async def _finish(
        self,
        job: _Job,
        outcome: Outcome,
        stored: TaskModel,
        payload: dict[str, Any],
        *,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        stats = self._stats
        if outcome is Outcome.Completed:
            stats.completed += 1
        elif outcome is Outcome.Failed:
            stats.failed += 1
        elif outcome is Outcome.LeaseLost:
            stats.lease_lost += 1
        elif outcome is Outcome.Cancelled:
            stats.cancelled += 1
        elif outcome is Outcome.Released:
            stats.released += 1
        # Info, all of them: a failing task is the application's business (the task records
        # it); warnings are kept for the worker's own trouble (a write that did not happen).
        if log.isEnabledFor(logging.INFO):
            log.info(
                "worker %s: task %s (%s) %s",
                self._agent_id,
                stored.id,
                stored.task_type,
                _LOG_PHRASES[outcome].format(
                    attempt=job.task.retry_count + 1,
                    ms=self._duration(job) * 1000,
                    error=error,
                    again="failed for good" if stored.status == TaskStatus.Failed else "failed",
                    retry="" if stored.status == TaskStatus.Failed else ", will be retried",
                ),
            )
        # The callback first, with no await since the write: what it counts is counted before
        # anyone (a retry of this very task) can run.
        await self._report(
            TaskReport(outcome, stored, self._agent_id, result, error, self._duration(job))
        )
        await self._event(f"task.{outcome.value}", payload, stored.id)

    async def _report(self, report: TaskReport) -> None:
        if self._on_outcome is None:
            return
        try:
            returned = self._on_outcome(report)
            if inspect.isawaitable(returned):
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

    async def _drain(self) -> None:
        """Give running handlers the grace, then interrupt them (their tasks are released)."""
        loop = asyncio.get_running_loop()
        claims, self._claims = self._claims, set()
        if claims:
            await asyncio.wait(claims)
            for claim in claims:
                if not claim.cancelled() and claim.exception() is None:
                    task = claim.result()
                    if task is not None:  # taken by a claim still in flight as it stopped
                        self._begin(task, loop).stop("stop")
        if self._jobs and not self._hurry.is_set():
            log.info(
                "worker %s stopping: waiting up to %gs for %d running task(s)",
                self._agent_id,
                self._grace,
                len(self._jobs),
            )
            deadline = loop.time() + self._grace
            hurry = asyncio.ensure_future(self._hurry.wait())
            try:
                while self._jobs and not self._hurry.is_set():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    runners = {j.runner for j in self._jobs if j.runner is not None}
                    await asyncio.wait(
                        {*runners, hurry}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
            finally:
                hurry.cancel()
        for job in list(self._jobs):
            job.stop("stop")
        runners = {j.runner for j in self._jobs if j.runner is not None}
        if runners:
            await asyncio.wait(runners)

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

    def _stats_payload(self) -> dict[str, Any]:
        st = self._stats
        return {
            "claimed": st.claimed,
            "completed": st.completed,
            "failed": st.failed,
            "lease_lost": st.lease_lost,
            "cancelled": st.cancelled,
            "released": st.released,
            "unrecorded": st.unrecorded,
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
