"""The blocking twin of :class:`~ruv_swarm_persistence.worker.Worker`, for code that is not async.

::

    from ruv_swarm_persistence.sync import Worker, open_storage

    def summarize(task: TaskModel, ctx: TaskContext) -> dict[str, Any]:
        return {"summary": ...}                 # a plain function: it runs in a thread

    with open_storage("swarm.db") as storage:
        Worker(storage, "summarizer-1", {"summarize": summarize}, concurrency=4).run()

There is no second copy of the worker: this one runs the async :class:`Worker` on the event-loop
thread of the :class:`~ruv_swarm_persistence.sync.SyncStorage` it is given, beside the storage
itself, and only waits for it. Every option and behaviour is the async worker's. Plain handler
functions run in threads, where they may call the blocking storage (the one they close over);
``ctx.storage`` is the async storage, for async handlers, which run on the loop thread.

:meth:`Worker.run` blocks until :meth:`Worker.stop` (from any thread, a handler's too), or a
Ctrl-C: the first stops gracefully (running handlers get the grace), a second at once. ``with
Worker(...) as worker:`` runs it in the background for the block and stops it at the end. Stop
the worker before closing the storage: closing first cancels it without releasing its tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Protocol

from .errors import StorageError
from .models import AgentModel
from .storage import Storage
from .worker import Handler
from .worker import Worker as AsyncWorker
from .worker_reports import TaskReport, WorkerStats

__all__ = ["Worker"]


class LoopStorage(Protocol):
    """What the blocking worker needs of a :class:`~ruv_swarm_persistence.sync.SyncStorage`."""

    @property
    def storage(self) -> Storage:
        """The async storage."""
        ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the async storage lives on (on a thread of its own)."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the storage is closed."""
        ...


class Worker:
    """An agent working the task queue through a blocking storage.

    Takes a :class:`~ruv_swarm_persistence.sync.SyncStorage` and the arguments of the async
    :class:`~ruv_swarm_persistence.worker.Worker` (``concurrency``, ``lease``, ``grace``,
    ``on_outcome``, …). ``on_outcome`` is called on the loop thread: keep it short.
    """

    def __init__(
        self,
        storage: LoopStorage,
        agent: str | AgentModel,
        handlers: Mapping[str, Handler],
        *,
        on_outcome: Callable[[TaskReport], object] | None = None,
        **options: Any,
    ) -> None:
        self._sync = storage
        self._worker = AsyncWorker(
            storage.storage, agent, handlers, on_outcome=on_outcome, **options
        )
        self._running: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()

    @property
    def agent_id(self) -> str:
        """The id of the agent this worker works as."""
        return self._worker.agent_id

    @property
    def task_types(self) -> list[str]:
        """The task types this worker claims."""
        return self._worker.task_types

    @property
    def stats(self) -> WorkerStats:
        """A copy of the worker's counts (as of a moment while it runs)."""
        return replace(self._worker._stats)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._worker.stopping

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the worker has stopped."""
        return self._running is not None and not self._running.done()

    def start(self) -> None:
        """Start the worker in the background (on the storage's loop thread) and return."""
        with self._lock:
            if self._running is not None:
                raise RuntimeError("a Worker runs once; make a new one")
            if self._sync.closed:
                raise StorageError("storage is closed")
            self._running = asyncio.run_coroutine_threadsafe(self._worker.run(), self._sync.loop)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; running handlers get the grace (``now``: none), then are cancelled
        and their tasks released. Returns at once; :meth:`join` waits for the end. Safe from
        any thread."""
        loop = self._sync.loop
        if _on(loop):
            self._worker.stop(now=now)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(functools.partial(self._worker.stop, now=now))

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has stopped (``False`` if ``timeout`` passed first); raise
        what made it stop, if anything did."""
        running = self._running
        if running is None:
            raise RuntimeError("the worker was not started")
        if _on(self._sync.loop):
            raise RuntimeError(
                "join() was called on the storage's event-loop thread (this would wait forever)"
            )
        try:
            running.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        except concurrent.futures.CancelledError:
            # The loop was shut down under the worker: the storage was closed.
            raise StorageError("storage is closed while the worker ran") from None
        return True

    def run(self) -> None:
        """Start the worker and block until it has stopped (a Ctrl-C stops it: see the module
        docstring); raise what made it stop, if anything did."""
        self.start()
        interrupts = 0
        while True:
            try:
                self.join()
                return
            except KeyboardInterrupt:
                interrupts += 1
                self.stop(now=interrupts > 1)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(now=exc_type is not None)
        self.join()


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is the one running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
