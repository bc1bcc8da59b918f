"""The browser engine: the memory engine, written through to IndexedDB at every commit.

:class:`BrowserEngine` is :class:`~..memory.engine.MemoryEngine` with tables that note what
each write changed (:class:`_TrackedTables`): per store, the records put and the ids deleted,
the events appended and dropped, the last event sequence. After a call that changed something
outside a transaction — or at a transaction's commit — the engine writes those changes to
IndexedDB in one IndexedDB transaction and returns once its ``complete`` event has fired.
Calls that change things while a write is in flight wait together for the next one, so
concurrent writers share IndexedDB transactions (group commit), as SQLite's writer does.
Waiters are woken only after the IndexedDB transaction completed.

Layout in IndexedDB (schema version :data:`SCHEMA_VERSION`), every value JSON text:

- ``agents``, ``tasks``, ``messages``, ``metrics``: one record per key, the record's id;
- ``events``: segments, each a JSON list of the events one write appended (at most
  :data:`SEGMENT` of them), keyed by the sequence of the first; ``prune`` rewrites or deletes
  the segments it touches (a put per event costs many times a put per segment: bench/README.md);
- ``meta``: ``event_seq``, the last sequence handed out (pruning every event must not let
  sequences start again), and the record of retention passes (``retention.ran_at``,
  ``retention.<table>``: rows removed);
- ``queue_limits``: a key's ``[max_running, rate_limit, rate_period]``, by key;
- ``queue_claims``: a rate-limited key's claims within its window, by key;
- ``schedules``: one schedule record per name.

Version 1 had no queue-control stores (limits and schedules lived in memory only): opening
such a database creates them, empty, in its upgrade to version 2.

The derived state (dependency counts, dependents, the event indexes, the task queue) is not
stored: :meth:`BrowserEngine.load` rebuilds it at open.

A write that IndexedDB refuses (its quota reached, the database closed or deleted by another
page) fails its callers with a :class:`~ruv_swarm_persistence.errors.DatabaseError`, and every
later call fails the same way: memory may then hold changes that IndexedDB does not, so the
storage must be reopened, which loads what IndexedDB holds.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import inspect
import json
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Final

from ... import rules
from ...codec import Record
from ...errors import DatabaseError, SerializationError
from .._wake import Wakeups
from ..engine import Engine
from ..memory.engine import MemoryEngine
from ..memory.tables import Tables as _Tables
from .idb import Connection, IdbError

__all__ = ["SCHEMA_VERSION", "SEGMENT", "STORES", "BrowserEngine"]

log = logging.getLogger(__name__)

#: The IndexedDB version of the layout above; a database of a higher one is refused.
SCHEMA_VERSION: Final = 2
#: Object stores of :data:`SCHEMA_VERSION`.
STORES: Final = (
    "agents", "tasks", "events", "messages", "metrics", "meta",
    "queue_limits", "queue_claims", "schedules",
)  # fmt: skip
#: Most events in one segment (one IndexedDB value).
SEGMENT: Final = 1000

_RECORD_STORES: Final = ("agents", "tasks", "messages", "metrics")
#: Prefix of the retention record's keys in the ``meta`` store.
_RETENTION: Final = "retention."
_COMPLETED = rules.COMPLETED


def _dump(value: Any) -> str:
    # ASCII output: a lone surrogate cannot reach JavaScript's strings half-converted.
    return json.dumps(value, separators=(",", ":"))


class _Changes:
    """What writes changed since the last IndexedDB transaction took the changes."""

    __slots__ = ("dropped_events", "event_seq", "events", "records", "wakes")

    def __init__(self) -> None:
        #: ``(store, id)`` → the record now, or ``None`` when deleted.
        self.records: dict[tuple[str, str], Record | None] = {}
        #: Events appended, in sequence order.
        self.events: list[Record] = []
        #: Sequences of events dropped (``prune``).
        self.dropped_events: set[int] = set()
        self.event_seq: int | None = None
        #: Wake-up keys to move once IndexedDB has the changes.
        self.wakes: set[str] = set()

    def __bool__(self) -> bool:
        return bool(
            self.records
            or self.events
            or self.dropped_events
            or self.event_seq is not None
            or self.wakes
        )

    def absorb(self, later: _Changes) -> None:
        """Add the changes made after these (a committed transaction's)."""
        self.records.update(later.records)
        self.events += later.events
        self.dropped_events |= later.dropped_events
        if later.event_seq is not None:
            self.event_seq = later.event_seq
        self.wakes |= later.wakes


class _TrackedTables(_Tables):
    """The memory tables, noting what each write changes.

    Changes made inside a transaction go to ``tx_changes`` (kept at its commit, dropped at
    its rollback, whose undo log restores the tables without passing through here); the
    others to ``changes``, and move ``stamp``.
    """

    def __init__(self, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.changes = _Changes()
        self.tx_changes = _Changes()
        self.stamp = 0

    def _target(self) -> _Changes:
        if self.undo is not None:
            return self.tx_changes
        self.stamp += 1
        return self.changes

    def _store(self, table: object) -> str | None:
        # Identity, not equality: two empty tables are equal.
        if table is self.tasks:
            return "tasks"
        if table is self.event_ids:
            return "events"
        if table is self.agents:
            return "agents"
        if table is self.messages:
            return "messages"
        if table is self.metrics:
            return "metrics"
        if table is self.claim_log:
            return "queue_claims"
        if table is self.limits:
            return "queue_limits"
        if table is self.schedules:
            return "schedules"
        return None  # derived state (dependency counts, indexes): rebuilt at load

    def put(self, table: dict[str, Any], key: str, value: Any) -> None:
        super().put(table, key, value)
        store = self._store(table)
        if store == "events":
            self._target().events.append(value)
        elif store is not None:
            self._target().records[(store, key)] = value

    def drop(self, table: dict[str, Any], key: str) -> None:
        old = table.get(key)
        super().drop(table, key)
        store = self._store(table) if old is not None else None
        if store == "events":
            self._target().dropped_events.add(old["sequence"])  # type: ignore[index]
        elif store is not None:
            self._target().records[(store, key)] = None

    def set_attr(self, name: str, value: Any) -> None:
        if name == "event_seq":  # once per event appended: the short way
            super().set_attr(name, value)
            self._target().event_seq = value
            return
        old = getattr(self, name)
        super().set_attr(name, value)
        if name == "meta":  # the retention record, replaced whole
            records = self._target().records
            for key in old.keys() - value.keys():
                records[("meta", _RETENTION + key)] = None
            for key, number in value.items():
                records[("meta", _RETENTION + key)] = number
        elif name == "event_ids":
            self._target().dropped_events.update(
                rec["sequence"] for key, rec in old.items() if key not in value
            )
        elif name in _RECORD_STORES:
            # A table replaced whole: note its difference from the one it replaced.
            records = self._target().records
            for key in old.keys() - value.keys():
                records[(name, key)] = None
            for key, rec in value.items():
                if old.get(key) is not rec:
                    records[(name, key)] = rec

    def take(self) -> _Changes:
        """The changes made outside transactions so far; later ones start afresh."""
        changes, self.changes = self.changes, _Changes()
        return changes


class _WakeAfterWrite(Wakeups):
    """The memory engine's wake-ups, held back until IndexedDB has the change."""

    __slots__ = ("tables",)

    def __init__(self, tables: _TrackedTables) -> None:
        super().__init__()
        # The tables, not the engine: a reference back to the engine would make a cycle, and
        # a closed storage's whole swarm would wait for the cyclic garbage collector.
        self.tables = tables

    def wake(self, key: str) -> None:
        # The memory engine wakes outside transactions, or at a commit once the undo log is
        # gone: either way the key belongs with the changes the next write takes.
        self.tables.changes.wakes.add(key)


class _Waiter:
    """One caller's wait for an IndexedDB transaction: a minimal future, answered in batches.

    asyncio wakes each task awaiting a future with a ``call_soon`` of its own. Under Pyodide
    each of those is a browser task of its own, which costs more than an event write: 64
    writers answered one by one would spend longer being woken than IndexedDB spent on their
    transaction. A task can await any object that follows the future protocol (asyncio's
    ``_asyncio_future_blocking``, ``add_done_callback``, ``result``, ``cancel``…); the writer
    answers every waiter of a transaction in one turn of the loop
    (:meth:`BrowserEngine._answer`), where the waiting tasks resume one after the other.
    Cancelling one waiter answers it alone, at once.
    """

    # asyncio.isfuture() and Task look for this; True while a task awaits the waiter.
    _asyncio_future_blocking = False

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._done = False
        self._cancelled = False
        self._error: BaseException | None = None
        self._callbacks: list[tuple[Callable[[Any], object], contextvars.Context | None]] = []

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return self._cancelled

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        if self._done:
            self._loop.call_soon(fn, self, context=context)
        else:
            self._callbacks.append((fn, context))

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        kept = [(f, c) for f, c in self._callbacks if f != fn]
        removed = len(self._callbacks) - len(kept)
        self._callbacks = kept
        return removed

    def cancel(self, msg: Any = None) -> bool:
        if self._done:
            return False
        self._done = self._cancelled = True
        self._loop.call_soon(self._run_callbacks)
        return True

    def exception(self) -> BaseException | None:
        if self._cancelled:
            raise asyncio.CancelledError
        return self._error

    def result(self) -> None:
        if self._cancelled:
            raise asyncio.CancelledError
        if self._error is not None:
            raise self._error

    def answer(self, error: BaseException | None) -> None:
        """Settle the wait; the waiting task resumes at once, inside this call."""
        if not self._done:
            self._done = True
            self._error = error
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn, context in callbacks:
            try:
                if context is None:
                    fn(self)
                else:
                    context.run(fn, self)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as the loop reports a failing callback
                self._loop.call_exception_handler(
                    {"message": "callback of a write's waiter failed", "exception": exc}
                )

    def __await__(self) -> Generator[Any, None, None]:
        if not self._done:
            self._asyncio_future_blocking = True
            yield self
        self.result()


class BrowserEngine(MemoryEngine):
    """The memory engine over an IndexedDB :class:`~.idb.Connection` (see the module)."""

    tables: _TrackedTables

    def __init__(
        self,
        now: Callable[[], int],
        policy: rules.RetryPolicy,
        wake: Wakeups,
        connection: Connection,
        *,
        durability: str = "relaxed",
        read_only: bool = False,
    ) -> None:
        tables = _TrackedTables(read_only=read_only)
        super().__init__(now, policy, _WakeAfterWrite(tables), read_only=read_only)
        self.tables = tables
        #: The front's wake-ups: moved once a change is in IndexedDB.
        self._front_wake = wake
        self._connection = connection
        self._durability = durability
        # Event segments as IndexedDB holds them: first sequence → events, and the sorted
        # first sequences (a dropped event's segment is found by bisection).
        self._segments: dict[int, list[Record]] = {}
        self._starts: list[int] = []
        # Group commit: the callers the next IndexedDB transaction answers; whether one is
        # being written (or about to be).
        self._next: list[_Waiter] | None = None
        self._writing = False
        self._failure: DatabaseError | None = None
        #: IndexedDB transactions written, and the writes they carried (for the curious).
        self.commits = 0

    # --- loading --------------------------------------------------------------------------

    async def load(self) -> None:
        """Fill the tables from IndexedDB and rebuild the derived state."""
        try:
            stored = dict(zip(STORES, await self._connection.load(STORES), strict=True))
        except IdbError as exc:
            raise DatabaseError(f"could not read the IndexedDB database: {exc}") from exc
        t = self.tables
        for store in ("agents", "messages", "metrics"):
            table: dict[str, Record] = getattr(t, store)
            for key, text in zip(*stored[store], strict=True):
                table[key] = _load(store, key, text)
        tasks = sorted(
            (_load("tasks", key, text) for key, text in zip(*stored["tasks"], strict=True)),
            key=lambda r: (r["created_at"], r["id"]),
        )
        t.tasks = {rec["id"]: rec for rec in tasks}
        for rec in tasks:
            # Tasks written before the queue controls existed carry no keys.
            rec.setdefault("dedup_key", None)
            rec.setdefault("concurrency_key", None)
            try:
                deps: list[str] = json.loads(rec["dependencies"])
                t.unfinished[rec["id"]] = sum(t.tasks[d]["status"] != _COMPLETED for d in deps)
            except (ValueError, TypeError, KeyError) as exc:
                raise SerializationError("tasks", rec["id"], f"dependencies: {exc!r}") from exc
            for d in deps:
                t.dependents.setdefault(d, []).append(rec["id"])
        for key, text in sorted(zip(*stored["events"], strict=True)):
            segment = _load("events", key, text)
            if not isinstance(segment, list) or not segment:
                raise SerializationError("events", str(key), "a segment is a list of events")
            self._segments[int(key)] = segment
            self._starts.append(int(key))
            for rec in segment:
                t.events.append(rec)
                t.event_ids[rec["id"]] = rec
                if rec["agent_id"] is not None:
                    t.events_by_agent.setdefault(rec["agent_id"], []).append(rec)
                t.events_by_type.setdefault(rec["event_type"], []).append(rec)
        meta = dict(zip(*stored["meta"], strict=True))
        last = t.events[-1]["sequence"] if t.events else 0
        t.event_seq = max(last, int(_load("meta", "event_seq", meta.get("event_seq", "0"))))
        for key, text in meta.items():
            if isinstance(key, str) and key.startswith(_RETENTION):
                t.meta[key.removeprefix(_RETENTION)] = _number("meta", key, text)
        for key, text in zip(*stored["queue_limits"], strict=True):
            limit = _load("queue_limits", key, text)
            if not isinstance(limit, list) or len(limit) != 3:
                raise SerializationError("queue_limits", str(key), "a limit is a list of three")
            t.limits[key] = (limit[0], limit[1], limit[2])
        for key, text in zip(*stored["queue_claims"], strict=True):
            t.claim_log[key] = _load("queue_claims", key, text)
        for key, text in zip(*stored["schedules"], strict=True):
            t.schedules[key] = _load("schedules", key, text)
        t.rebuild_queue()

    # --- events ---------------------------------------------------------------------------

    def _append_event(self, rec: Record) -> int:
        """The memory engine's append, noted for IndexedDB: outside a transaction it goes the
        short way, past the primitives that note changes, so the event is noted here."""
        t = self.tables
        noted = len(t.changes.events)
        seq = super()._append_event(rec)
        if t.undo is None and len(t.changes.events) == noted:
            t.stamp += 1
            t.changes.events.append(rec)
            t.changes.event_seq = seq
        return seq

    # --- transactions ---------------------------------------------------------------------

    def finish(self, commit: bool) -> None:
        """End the transaction in memory; its changes wait for :meth:`flush` if committed."""
        t = self.tables
        changes, t.tx_changes = t.tx_changes, _Changes()
        super().finish(commit)
        if commit and changes:
            t.stamp += 1
            t.changes.absorb(changes)

    # --- writing --------------------------------------------------------------------------

    def check_usable(self) -> None:
        """Raise the failure of an earlier IndexedDB write, if one failed."""
        if self._failure is not None:
            raise DatabaseError(str(self._failure)) from self._failure.__cause__

    async def flush(self) -> None:
        """Return once every change made so far is in IndexedDB (group commit)."""
        if not self.tables.changes and not self._writing:
            return
        # Changes already taken by the write in flight are in IndexedDB once the next one
        # (which comes after it) completed.
        await self._join()

    async def drain(self) -> None:
        """Wait for the writes in flight to end (closing); their failure was told already."""
        if self._writing:
            with contextlib.suppress(Exception):
                await self._join()

    def _join(self) -> _Waiter:
        """A wait for the next IndexedDB transaction, which starts in a later turn of the loop
        if none is in flight (the writers of this turn join it) or once the one in flight
        completed. A waiter per caller: one cancelled caller cannot cancel the others' answer."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        if self._next is None:
            self._next = [waiter]
            if not self._writing:
                self._writing = True
                loop.call_soon(self._write)
        else:
            self._next.append(waiter)
        return waiter

    def _write(self) -> None:
        """Write what the waiting callers changed in one IndexedDB transaction.

        No task runs the writes: the connection calls back once the transaction completed,
        and :meth:`_committed` answers its callers, then starts the next write at once with
        what they and the others changed meanwhile. Under Pyodide every turn of the loop is
        a browser task of its own, costlier than an event write; the chain costs one turn
        per IndexedDB transaction.
        """
        while (batch := self._next) is not None:
            self._next = None
            changes = self.tables.take()
            try:
                self.check_usable()
                stores, ops = self._ops(changes)
                if ops:
                    self._connection.commit(
                        stores, ops, self._durability, self._completion(batch, changes)
                    )
                    return
            except BaseException as exc:
                self._refuse(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            self._answer(batch, changes)
        self._writing = False

    def _completion(
        self, batch: list[_Waiter], changes: _Changes
    ) -> Callable[[BaseException | None], None]:
        loop = asyncio.get_running_loop()

        def done(error: BaseException | None) -> None:
            # Called by the browser outside the loop's callbacks: continue in one of them.
            loop.call_soon(self._committed, batch, changes, error)

        return done

    def _committed(
        self, batch: list[_Waiter], changes: _Changes, error: BaseException | None
    ) -> None:
        if error is not None:
            self._refuse(batch, error)
            return
        self.commits += 1
        self._answer(batch, changes)
        self._write()

    def _answer(self, batch: list[_Waiter], changes: _Changes) -> None:
        """Wake what waits for the changes, then answer the callers: all in this turn."""
        for key in changes.wakes:
            self._front_wake.wake(key)
        for waiter in batch:
            waiter.answer(None)

    def _refuse(self, batch: list[_Waiter], exc: BaseException) -> None:
        """Fail the callers of a write IndexedDB did not take, and those queued behind it:
        memory has their changes, IndexedDB never will."""
        error = self._fail(exc)
        waiting = [*batch, *(self._next or ())]
        self._next = None
        self._writing = False
        for waiter in waiting:
            # An exception of its own per caller: one object raised in every caller would
            # gather all their tracebacks.
            own = DatabaseError(str(error))
            own.__cause__ = error.__cause__
            waiter.answer(own)

    def _fail(self, exc: BaseException) -> DatabaseError:
        """The storage's failure: the first write IndexedDB did not take."""
        if self._failure is None:
            detail = str(exc) if isinstance(exc, IdbError) else f"{type(exc).__name__}: {exc}"
            failure = DatabaseError(
                f"IndexedDB did not take a write ({detail}); the storage is closed: "
                "reopen it to go on from what IndexedDB holds"
            )
            failure.__cause__ = exc
            self._failure = failure
            log.error("%s", failure)
            # Waiters read again, and meet the failure.
            self._front_wake.wake_all()
        return self._failure

    def _ops(self, ch: _Changes) -> tuple[list[str], list[Any]]:
        """The stores and the flat ``store, key, value`` list that write ``ch``."""
        ops: list[Any] = []
        stores: set[str] = set()
        for (store, key), rec in ch.records.items():
            ops += (store, key, None if rec is None else _dump(rec))
            stores.add(store)
        new = ch.events
        dropped = ch.dropped_events
        if dropped:
            new = [r for r in new if r["sequence"] not in dropped]
            rewrites = self._rewrite_segments(dropped)
            if rewrites:
                ops += rewrites
                stores.add("events")
        if new:
            stores.add("events")
        for i in range(0, len(new), SEGMENT):
            segment = new[i : i + SEGMENT]
            start = segment[0]["sequence"]
            self._segments[start] = segment
            self._starts.append(start)  # sequences only grow: the list stays sorted
            ops += ("events", start, _dump(segment))
        if ch.event_seq is not None:
            ops += ("meta", "event_seq", str(ch.event_seq))
            stores.add("meta")
        return sorted(stores), ops

    def _rewrite_segments(self, dropped: set[int]) -> list[Any]:
        """Ops that take the ``dropped`` events out of the segments holding them."""
        starts = self._starts
        touched = sorted({starts[i - 1] for s in dropped if (i := bisect.bisect_right(starts, s))})
        ops: list[Any] = []
        for start in touched:
            old = self._segments[start]
            keep = [r for r in old if r["sequence"] not in dropped]
            if len(keep) == len(old):
                continue  # the dropped events were past it, not yet written
            if keep:
                self._segments[start] = keep
                ops += ("events", start, _dump(keep))
            else:
                del self._segments[start]
                del starts[bisect.bisect_left(starts, start)]
                ops += ("events", start, None)
        return ops

    def close(self) -> None:
        """Close the IndexedDB connection (after :meth:`drain`)."""
        self._connection.close()


def _number(store: str, key: Any, text: Any) -> int:
    """A stored integer; anything else is a ``SerializationError``."""
    value = _load(store, key, text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SerializationError(store, str(key), f"expected an integer, found {value!r}")
    return value


def _load(store: str, key: Any, text: Any) -> Any:
    """One stored value; one that is not JSON is a ``SerializationError``."""
    try:
        if not isinstance(text, str):
            raise TypeError(f"expected JSON text, found {type(text).__name__}")
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        raise SerializationError(store, str(key), f"{type(exc).__name__}: {exc}") from exc


# --- every engine call: refused after a failed write, written through after a change ---------


def _written_through(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    inner = getattr(MemoryEngine, name)

    async def call(self: BrowserEngine, tx: Any, *args: Any) -> Any:
        self.check_usable()
        tables = self.tables
        stamp = tables.stamp
        try:
            return await inner(self, tx, *args)
        finally:
            # Inside a transaction the commit writes; a call that changed nothing (a read)
            # does not wait for other callers' writes.
            if tx is None and tables.stamp != stamp:
                await self.flush()

    call.__name__ = call.__qualname__ = name
    call.__doc__ = inner.__doc__
    return call


#: The engine operations, as the front calls them: every coroutine of the Engine protocol.
ENGINE_CALLS: Final = tuple(
    name
    for name, member in vars(Engine).items()
    if inspect.iscoroutinefunction(member) and hasattr(MemoryEngine, name)
)

for _name in ENGINE_CALLS:
    setattr(BrowserEngine, _name, _written_through(_name))
del _name
