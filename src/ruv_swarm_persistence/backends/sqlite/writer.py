"""The group-commit writer: one connection, every caller's writes, one transaction per batch.

Writes from all coroutines queue here. Once per event-loop iteration the queue is drained
into one ``BEGIN IMMEDIATE … COMMIT``; every caller's future is resolved only after COMMIT
returned. Each operation is isolated: a single statement that fails is undone by SQLite
alone, operations of several statements use a savepoint (see :func:`savepoint`), and runs
of single-row inserts go through one ``executemany`` that resumes after a failing row.

The writer runs in the event loop, because a thread hop (~0.07 ms here) costs more than a
small indexed write and a loop-side batch needs no wake-up per operation. The slow parts go
to the writer's own thread: a batch that would wait for another process's lock (``BEGIN
IMMEDIATE`` is first tried without waiting), batches holding large operations, and the
maintenance work that owns the connection alone. WAL checkpoints never run on the commit
path: automatic checkpoints are off and :class:`Checkpointer` runs them on its own thread
and connection when the writer goes idle or the log grows.

A transaction (:meth:`GroupCommitWriter.hold`) takes the connection for its duration; the
queue waits behind it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Final

import apsw

from ...errors import DatabaseError, StorageError
from .errors import translate

__all__ = [
    "Bulk",
    "Checkpointer",
    "GroupCommitWriter",
    "Outcome",
    "WriteContext",
    "savepoint",
]

log = logging.getLogger(__name__)

#: Kinds of queued work.
_OP: Final = 0
_BULK: Final = 1
_HOLD: Final = 2
_ALONE: Final = 3


class WriteContext:
    """What a write operation sees: the connection, and what to announce after COMMIT."""

    __slots__ = ("conn", "events", "finished", "mail", "tasks")

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self.events = False
        self.mail: set[str] = set()
        # Set when a write may have made a task ready (stored, unblocked or requeued).
        self.tasks = False
        # Set when a task became completed, failed or cancelled, or was deleted.
        self.finished = False


#: A result or the exception to raise, per operation.
Outcome = tuple[bool, Any]
#: Runs a run of coalesced rows: ``(ctx, payloads) -> outcome per payload``.
Bulk = Callable[[WriteContext, list[Any]], list[Outcome]]


@contextmanager
def savepoint(conn: apsw.Connection) -> Iterator[None]:
    """Make a block of several statements all-or-nothing inside the open transaction."""
    conn.execute("SAVEPOINT op")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        raise
    conn.execute("RELEASE op")


class _Item:
    __slots__ = ("bulk", "future", "heavy", "kind", "op", "payload", "row_id", "row_kind")

    def __init__(
        self,
        kind: int,
        future: asyncio.Future[Any],
        op: Callable[[Any], Any] | None = None,
        *,
        bulk: Bulk | None = None,
        payload: Any = None,
        row_kind: str | None = None,
        row_id: str | None = None,
        heavy: bool = False,
    ) -> None:
        self.kind = kind
        self.future = future
        self.op = op
        self.bulk = bulk
        self.payload = payload
        self.row_kind = row_kind
        self.row_id = row_id
        self.heavy = heavy


class GroupCommitWriter:
    """Queues writes and commits them in batches on one connection.

    ``busy_timeout_ms`` is how long a batch waits for another process's write lock (on the
    writer's thread, never in the loop); ``on_commit`` is called in the loop with each
    committed batch's :class:`WriteContext`.
    """

    def __init__(
        self,
        conn: apsw.Connection,
        *,
        max_batch: int,
        busy_timeout_ms: int,
        on_commit: Callable[[WriteContext], None],
    ) -> None:
        self.conn = conn
        self._loop = asyncio.get_running_loop()
        self._max_batch = max_batch
        self._busy_ms = busy_timeout_ms
        self._on_commit = on_commit
        self._queue: deque[_Item] = deque()
        self._scheduled = False
        # None when idle; "thread" while a batch or maintenance runs on the thread;
        # "held" while a transaction owns the connection.
        self._owner: str | None = None
        self._idle: list[asyncio.Future[None]] = []
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="swarm-sqlite-writer")
        self._closed = False
        #: Batches committed so far (for tests and benchmarks).
        self.batches = 0
        conn.set_busy_timeout(0)

    # --- submitting -----------------------------------------------------------------------

    def submit(
        self,
        op: Callable[[WriteContext], Any],
        *,
        row_kind: str | None = None,
        row_id: str | None = None,
        heavy: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue ``op(ctx)`` for the next batch; the future resolves after COMMIT.

        ``row_kind``/``row_id`` name the row a uniqueness violation is about; ``heavy``
        sends the batch to the writer's thread so the loop is not held by it.
        """
        fut = self._loop.create_future()
        self._queue.append(_Item(_OP, fut, op, row_kind=row_kind, row_id=row_id, heavy=heavy))
        if not self._scheduled:
            self._schedule()
        return fut

    def submit_row(self, bulk: Bulk, payload: Any) -> asyncio.Future[Any]:
        """Queue one row; consecutive rows of the same ``bulk`` are written together."""
        fut = self._loop.create_future()
        self._queue.append(_Item(_BULK, fut, bulk=bulk, payload=payload))
        if not self._scheduled:
            self._schedule()
        return fut

    def submit_alone(self, op: Callable[[apsw.Connection], Any]) -> asyncio.Future[Any]:
        """Run ``op(conn)`` on the writer's thread with the connection to itself.

        No transaction is open for it: it opens its own (maintenance, migrations).
        """
        fut = self._loop.create_future()
        self._queue.append(_Item(_ALONE, fut, op))
        self._schedule()
        return fut

    async def hold(self) -> None:
        """Wait for the connection, then keep it in an open write transaction.

        The caller runs its operations with :meth:`run_held` and ends with :meth:`release`.
        """
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append(_Item(_HOLD, fut))
        self._schedule()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(commit=False)
            raise

    def run_held(
        self,
        ctx: WriteContext,
        op: Callable[[WriteContext], Any],
        *,
        row_kind: str | None = None,
        row_id: str | None = None,
    ) -> Any:
        """Run one operation inside the held transaction (in the loop)."""
        try:
            return op(ctx)
        except StorageError:
            raise
        except apsw.Error as exc:
            raise translate(exc, kind=row_kind, row_id=row_id) from exc

    def release(self, *, commit: bool) -> None:
        """End the held transaction with COMMIT or ROLLBACK and let the queue move."""
        try:
            if commit:
                self._end_transaction("COMMIT")
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except apsw.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise translate(exc) from exc
        finally:
            self._owner = None
            self._schedule()

    @property
    def holding(self) -> bool:
        """True while a transaction owns the connection."""
        return self._owner == "held"

    async def drain(self) -> None:
        """Wait until every queued write is committed and no transaction holds the writer."""
        while self._queue or self._owner is not None or self._scheduled:
            fut = self._loop.create_future()
            self._idle.append(fut)
            await fut

    def close(self) -> None:
        """Stop the writer's thread (call after :meth:`drain`); fails anything still queued."""
        self._closed = True
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(StorageError("storage is closed"))
        self._thread.shutdown(wait=True)

    # --- the batch loop ---------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and self._owner is None:
            if self._queue:
                self._scheduled = True
                self._loop.call_soon(self._flush)
            elif self._idle:
                idle, self._idle = self._idle, []
                for fut in idle:
                    if not fut.done():
                        fut.set_result(None)

    def _flush(self) -> None:
        self._scheduled = False
        queue = self._queue
        while queue and queue[0].future.cancelled():
            queue.popleft()
        if self._owner is not None or not queue:
            self._schedule()
            return
        kind = queue[0].kind
        if kind == _HOLD:
            self._start_hold(queue.popleft())
            return
        if kind == _ALONE:
            self._start_alone(queue.popleft())
            return
        batch: list[_Item] = []
        heavy = False
        while queue and len(batch) < self._max_batch and queue[0].kind <= _BULK:
            item = queue.popleft()
            if not item.future.cancelled():
                batch.append(item)
                heavy = heavy or item.heavy
        if not batch:
            self._schedule()
            return
        if not heavy:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except apsw.BusyError:
                heavy = True  # another process writes: wait for it off the loop
            except apsw.Error as exc:
                self._fail(batch, translate(exc))
                self._schedule()
                return
            else:
                ctx = WriteContext(self.conn)
                self._resolve(batch, self._run_batch(ctx, batch), ctx)
                self._schedule()
                return
        self._owner = "thread"
        done = self._loop.run_in_executor(self._thread, self._run_batch_blocking, batch)
        done.add_done_callback(lambda f: self._after_thread_batch(batch, f))

    def _run_batch_blocking(self, batch: list[_Item]) -> tuple[list[Outcome], WriteContext]:
        ctx = WriteContext(self.conn)
        self.conn.set_busy_timeout(self._busy_ms)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            err = translate(exc)
            return [(False, err)] * len(batch), ctx
        finally:
            self.conn.set_busy_timeout(0)
        return self._run_batch(ctx, batch), ctx

    def _after_thread_batch(
        self,
        batch: list[_Item],
        done: asyncio.Future[tuple[list[Outcome], WriteContext]],
    ) -> None:
        self._owner = None
        exc = done.exception()
        if exc is not None:
            self._fail(batch, translate(exc))
        else:
            outcomes, ctx = done.result()
            self._resolve(batch, outcomes, ctx)
        self._schedule()

    def _run_batch(self, ctx: WriteContext, batch: list[_Item]) -> list[Outcome]:
        """Run a batch inside the open transaction and commit it; one outcome per item."""
        conn = self.conn
        n = len(batch)
        outcomes: list[Outcome] = []
        try:
            i = 0
            while i < n:
                item = batch[i]
                if item.kind == _BULK:
                    bulk = item.bulk
                    j = i + 1
                    while j < n and batch[j].bulk is bulk:
                        j += 1
                    assert bulk is not None
                    outcomes.extend(bulk(ctx, [b.payload for b in batch[i:j]]))
                    i = j
                else:
                    assert item.op is not None
                    try:
                        outcomes.append((True, item.op(ctx)))
                    except Exception as exc:
                        outcomes.append(
                            (False, translate(exc, kind=item.row_kind, row_id=item.row_id))
                        )
                    i += 1
                if not conn.in_transaction:
                    # An I/O error, a full disk: SQLite rolled the whole batch back.
                    cause = next((v for ok, v in reversed(outcomes) if not ok), None)
                    err = DatabaseError(f"the batch was rolled back: {cause}")
                    err.__cause__ = cause
                    return [(False, err)] * n
            self._end_transaction("COMMIT")
            self.batches += 1
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not isinstance(exc, Exception):
                raise
            return [(False, translate(exc))] * n
        return outcomes

    def _end_transaction(self, sql: str) -> None:
        try:
            self.conn.execute(sql)
        except apsw.BusyError:
            # COMMIT in WAL mode waits only for a checkpoint's brief lock; wait properly.
            self.conn.set_busy_timeout(self._busy_ms)
            try:
                self.conn.execute(sql)
            finally:
                self.conn.set_busy_timeout(0)

    def _resolve(self, batch: Sequence[_Item], outcomes: list[Outcome], ctx: WriteContext) -> None:
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            fut = item.future
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if ctx.events or ctx.mail or ctx.tasks or ctx.finished:
            self._on_commit(ctx)

    def _fail(self, batch: Sequence[_Item], err: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(err)

    # --- transactions and maintenance -------------------------------------------------------

    def _start_hold(self, item: _Item) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:
            pass
        except apsw.Error as exc:
            item.future.set_exception(translate(exc))
            self._schedule()
            return
        else:
            self._owner = "held"
            item.future.set_result(None)
            return
        self._owner = "thread"

        def begin() -> None:
            self.conn.set_busy_timeout(self._busy_ms)
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            finally:
                self.conn.set_busy_timeout(0)

        def started(done: asyncio.Future[None]) -> None:
            exc = done.exception()
            if exc is not None:
                self._owner = None
                if not item.future.done():
                    item.future.set_exception(translate(exc))
                self._schedule()
            elif item.future.done():  # the waiter gave up meanwhile
                self.conn.execute("ROLLBACK")
                self._owner = None
                self._schedule()
            else:
                self._owner = "held"
                item.future.set_result(None)

        self._loop.run_in_executor(self._thread, begin).add_done_callback(started)

    def _start_alone(self, item: _Item) -> None:
        self._owner = "thread"
        op = item.op
        assert op is not None

        def run() -> Any:
            self.conn.set_busy_timeout(self._busy_ms)
            try:
                return op(self.conn)
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self.conn.set_busy_timeout(0)

        def finished(done: asyncio.Future[Any]) -> None:
            self._owner = None
            if not item.future.done():
                exc = done.exception()
                if exc is None:
                    item.future.set_result(done.result())
                else:
                    item.future.set_exception(translate(exc))
            self._schedule()

        self._loop.run_in_executor(self._thread, run).add_done_callback(finished)


class Checkpointer:
    """Runs WAL checkpoints on its own thread and connection, off the commit path.

    The writer's WAL hook reports each commit; a PASSIVE checkpoint runs once the writer has
    been idle for ``idle_s`` or the log holds ``pages`` pages more than at the last one. When
    a writer that never pauses keeps the log from ever being fully copied (SQLite restarts it
    only then), and it reaches ``catch_up_pages``, ``catch_up`` is asked to checkpoint
    between two batches: rare, and it delays the queued writes, never the loop.
    """

    def __init__(
        self,
        open_connection: Callable[[], apsw.Connection],
        *,
        pages: int = 1000,
        idle_s: float = 0.25,
        catch_up_pages: int = 10_000,
        catch_up: Callable[[], None] | None = None,
    ) -> None:
        self._open = open_connection
        self._pages_limit = pages
        self._idle_s = idle_s
        self._catch_up = catch_up
        self._catch_up_pages = catch_up_pages
        self._wake = threading.Event()
        self._stop = False
        self._dirty = False
        self._signalled = False
        self._pages = 0
        self._base = 0  # log size at the last checkpoint
        self._last_commit = 0.0
        self._thread = threading.Thread(
            target=self._run, name="swarm-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def wal_hook(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        """The writer connection's WAL hook: note the commit, wake the thread when useful."""
        self._pages = pages
        self._last_commit = time.monotonic()
        if pages < self._base:
            self._base = 0  # SQLite restarted the log from its beginning
        if not self._signalled and (not self._dirty or pages - self._base >= self._pages_limit):
            self._dirty = True
            self._signalled = True
            self._wake.set()
        return apsw.SQLITE_OK

    def close(self) -> None:
        """Stop the thread (it finishes a checkpoint in progress first)."""
        self._stop = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn: apsw.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                # Wait for the writer to go idle, unless the log has grown enough already.
                while not self._stop and self._pages - self._base < self._pages_limit:
                    idle_for = time.monotonic() - self._last_commit
                    if idle_for >= self._idle_s:
                        break
                    self._wake.wait(self._idle_s - idle_for)
                    self._wake.clear()
                if self._stop:
                    return
                self._dirty = False
                self._signalled = False
                try:
                    if conn is None:
                        conn = self._open()
                    log_frames, _copied = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                except apsw.BusyError:
                    continue  # another checkpoint runs (another process): it does the work
                except (apsw.Error, StorageError):
                    log.exception("background WAL checkpoint failed")
                    continue
                if log_frames < 0:
                    log.debug("background WAL checkpoint did not run")
                    continue
                self._base = log_frames
                if log_frames >= self._catch_up_pages and self._catch_up is not None:
                    # The log keeps growing under a busy writer: SQLite restarts it only once
                    # a checkpoint has copied all of it, which needs a pause in the writes.
                    self._catch_up()
        finally:
            if conn is not None:
                conn.close()
