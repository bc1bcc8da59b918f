"""The task path beside the simplest code a user would write by hand, and the library they'd pick.

The other modules hold each backend to a raw driver running the library's own statements,
which hides what those statements cost. Here the baseline is what a new user writes with no
library: a minimal table of their own (an integer key numbered by the database, the columns a
queue needs, one index for the claim) and one statement per step, through the standard
library's ``sqlite3`` or plain ``asyncpg``. The peer is the Python library the same user would
pick instead, run in this process and bounded like the rest: huey (SqliteHuey) for a SQLite
queue, procrastinate for a PostgreSQL one, aiosqlite for async SQLite writes.

Rows (``--only`` keys; 10,000 tasks or events unless said, ``--quick`` a few hundred):

* ``sqlite.store``: one producer awaiting ``store_task(TaskModel.new(...))``; sqlite3 with one
  autocommitted ``INSERT`` per task; huey enqueueing a task per call.
* ``sqlite.claims``: 4 worker coroutines on one storage, ``claim_next_task`` → ``complete_task``;
  sqlite3 in 4 threads, a connection each, an ``UPDATE … RETURNING`` claim and an ``UPDATE``
  completion; huey's consumer with 4 worker threads, started and stopped in this process.
* ``sqlite.batches``: 4 worker coroutines on one storage, ``claim_next_tasks(agent, 16)`` →
  ``complete_tasks``; sqlite3 in 4 threads, a connection each, one ``UPDATE … WHERE id IN
  (SELECT … LIMIT 16) RETURNING`` claim and one ``UPDATE … WHERE id IN (…)`` completion per
  batch. Apart from ``sqlite.claims``: its ratio is batched against batched.
* ``pg.store``: the same producer on PostgreSQL; asyncpg with one ``INSERT`` per task;
  procrastinate's ``defer_async`` per job.
* ``pg.claims``: 4 coroutines on one storage; asyncpg on 4 connections, a
  ``FOR UPDATE SKIP LOCKED`` claim and an ``UPDATE`` completion; procrastinate's worker with
  concurrency 4 until the queue is empty.
* ``pg.batches``: as ``sqlite.batches`` on PostgreSQL; asyncpg on 4 connections, one
  ``FOR UPDATE SKIP LOCKED LIMIT 16`` claim and one ``UPDATE … WHERE id = ANY (…)``
  completion per batch.
* ``sqlite.get_task``, ``sqlite.tasks.find_by_id``, ``sqlite.events.find_by_id``: point reads
  (20,000 a run over 10,000 stored rows) beside sqlite3 running the same ``SELECT`` on the same
  file, its row decoded by hand (``json.loads``, ``datetime``) into the same model, and
  undecoded.
* ``sqlite.events_by_agent``: ``get_events_by_agent(agent, 100)`` beside the same ``SELECT``.
* ``pg.aggregate``: ``get_aggregated_metrics`` over a day of 100,000 metrics beside asyncpg
  running the aggregate in SQL (``GROUP BY``), built by hand into the same ``MetricModel``s.
* ``sqlite.events.64``: 64 producers awaiting ``store_event``; sqlite3 in 8 threads with one
  autocommitted ``INSERT`` per event; aiosqlite, 64 producers on one connection.
* ``sqlite.counts``, ``pg.counts``: statements, commits and round trips per operation, counted
  while a few dozen lone calls run: apsw's exec tracer and commit hook on every connection the
  storage opens, sqlite3's trace callback, and for PostgreSQL a wrapper over asyncpg's
  execution calls (statements) and the socket's writes (round trips), and over libpq's send
  calls for procrastinate (psycopg).

SQLite files are in WAL mode with ``synchronous=NORMAL`` in a temporary folder; PostgreSQL is
``$SWARM_BENCH_PG_URL``, else ``postgresql://postgres@127.0.0.1:5432/postgres``, where the run
creates a database of its own and drops it at the end. Every load loop stops at its count and
fails past a time limit. Missing peers (``pip install '.[bench]'``) leave their rows out and
say so.

Run: ``python -m bench.task_path_bench [--json] [--quick] [--repeat N] [--only KEY]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import random
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw

from ruv_swarm_persistence import init_storage
from ruv_swarm_persistence.models import (
    EventModel,
    MetricModel,
    TaskModel,
    TaskPriority,
    TaskStatus,
)
from ruv_swarm_persistence.storage import Storage

from .common import Options, Result, Timing, best, fill_ratios, timed, timed_async
from .pg_bench import NoServer, Procrastinate, _check_server, _server_url, bench_database
from .sqlite_bench import Workdir, open_storage

TITLE = "Task path vs the simplest hand-written code (sqlite3, asyncpg) and huey, procrastinate"
WORKERS = 4
PRODUCERS = 64
RAW_THREADS = 8
AGENTS = 64
BUSY_TIMEOUT_S = 5.0
#: A run of one side that takes longer than this fails (quick runs: QUICK_LIMIT_S).
LIMIT_S = 240.0
QUICK_LIMIT_S = 60.0
PRIORITIES = tuple(TaskPriority)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

log = logging.getLogger(__name__)


def tasks_n(opts: Options) -> int:
    return opts.scale(10_000, 200)


def limit_s(opts: Options) -> float:
    return QUICK_LIMIT_S if opts.quick else LIMIT_S


class Overrun(Exception):
    """A run went past its time limit."""


class Deadline:
    """The time a run must end by; loops check it every so often."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.at = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise Overrun(f"{self.what} did not finish within {self.seconds:g} s")

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())


def have(module: str) -> bool:
    """True when ``module`` can be imported (a peer of the ``bench`` extra)."""
    return importlib.util.find_spec(module) is not None


# --- sides, rounds, rows ---------------------------------------------------------------------

Run = Callable[[], Awaitable[Timing]]


@dataclass(slots=True)
class Side:
    """One contender of a benchmark: its row's name and one timed run."""

    name: str
    run: Run
    #: A peer: if it fails, its row is left out and the note says why.
    optional: bool = False


async def rounds(repeat: int, sides: Sequence[Side]) -> tuple[dict[str, Timing], dict[str, str]]:
    """Run the sides in turn, ``repeat`` rounds; the best run of each, and the peers that failed."""
    runs: dict[str, list[Timing]] = {s.name: [] for s in sides}
    failed: dict[str, str] = {}
    for _ in range(repeat):
        for side in sides:
            if side.name in failed:
                continue
            try:
                runs[side.name].append(await side.run())
            except Exception as exc:
                if not side.optional:
                    raise
                log.warning("%s failed: %s", side.name, exc, exc_info=True)
                failed[side.name] = f"{type(exc).__name__}: {exc}"
    return {name: best(ts) for name, ts in runs.items() if ts}, failed


def rows(
    key: str,
    unit: str,
    results: dict[str, Timing],
    failed: dict[str, str],
    *,
    raw: str,
    library: Sequence[tuple[str, str]],
    peer: str | None = None,
    peer_missing: str | None = None,
    note: str = "",
) -> list[Result]:
    """The rows of one benchmark: the raw baseline, the peer, then the library's rows.

    ``library`` pairs a row name with the baseline its ratio is taken against.
    """
    notes = [note] if note else []
    out = [Result.of(key, raw, results[raw], unit=unit)]
    for _name, base in library:
        if base != raw and base in results:
            out.append(Result.of(key, base, results[base], unit=unit))
    if peer is not None:
        if peer in results:
            out.append(Result.of(key, peer, results[peer], unit=unit, baseline=raw))
        elif peer in failed:
            notes.append(f"{peer} left out: {failed[peer]}")
    if peer_missing:
        notes.append(peer_missing)
    for name, base in library:
        out.append(Result.of(key, name, results[name], unit=unit, baseline=base))
    if peer is not None and peer in results:
        lib = results[library[0][0]].rate / results[peer].rate
        notes.append(f"library = {lib:.2f}x {peer.split(':')[0]}")
    out[0].note = "; ".join(notes)
    return out


# --- SQLite: files and hand-written code ----------------------------------------------------

#: What a new user writes for a queue and a log: the database numbers the rows.
RAW_SQLITE_SCHEMA = """
CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY,
    task_type    TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    assigned_to  TEXT,
    payload      TEXT NOT NULL,
    result       TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL,
    completed_at REAL
);
CREATE INDEX tasks_queue ON tasks (status, priority DESC, id);
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL,
    agent_id   TEXT,
    payload    TEXT NOT NULL,
    timestamp  REAL NOT NULL
);
CREATE INDEX events_by_agent ON events (agent_id, timestamp);
"""
SQLITE_INSERT_TASK = (
    "INSERT INTO tasks (task_type, priority, payload, created_at) VALUES (?, ?, ?, ?)"
)
SQLITE_CLAIM = (
    "UPDATE tasks SET status = 'running', assigned_to = ?, updated_at = ?"
    " WHERE id = (SELECT id FROM tasks WHERE status = 'pending'"
    " ORDER BY priority DESC, id LIMIT 1)"
    " RETURNING id, task_type, payload"
)
SQLITE_COMPLETE = "UPDATE tasks SET status = 'done', result = ?, completed_at = ? WHERE id = ?"
#: Batches of this many tasks (``sqlite.batches``, ``pg.batches``).
BATCH = 16
SQLITE_CLAIM_BATCH = (
    "UPDATE tasks SET status = 'running', assigned_to = ?, updated_at = ?"
    " WHERE id IN (SELECT id FROM tasks WHERE status = 'pending'"
    " ORDER BY priority DESC, id LIMIT ?)"
    " RETURNING id, task_type, payload"
)
SQLITE_COMPLETE_BATCH = (
    "UPDATE tasks SET status = 'done', result = NULL, completed_at = ?"
    " WHERE id IN (SELECT value FROM json_each(?))"
)
SQLITE_INSERT_EVENT = (
    "INSERT INTO events (event_type, agent_id, payload, timestamp) VALUES (?, ?, ?, ?)"
)


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A stdlib connection as a user opens one: autocommit, WAL, ``synchronous=NORMAL``."""
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def raw_file(path: Path) -> Path:
    """A file with the hand-written schema."""
    conn = sqlite_connect(path)
    try:
        conn.executescript(RAW_SQLITE_SCHEMA)
    finally:
        conn.close()
    return path


def new_task(i: int) -> TaskModel:
    return TaskModel.new("work", {"i": i}, PRIORITIES[i % 4])


def seed_raw_tasks(conn: sqlite3.Connection, n: int) -> None:
    now = time.time()
    conn.execute("BEGIN")
    conn.executemany(
        SQLITE_INSERT_TASK, (("work", i % 4, json.dumps({"i": i}), now) for i in range(n))
    )
    conn.execute("COMMIT")


async def seed_library_tasks(storage: Storage, n: int) -> list[TaskModel]:
    tasks = [new_task(i) for i in range(n)]
    for i in range(0, n, 2_000):
        await storage.store_tasks(tasks[i : i + 2_000])
    return tasks


# --- hand decoding: what a user without the library writes to get the same model ------------

TASK_SELECT = (
    "SELECT id, task_type, priority, status, assigned_to, payload, result, error, retry_count,"
    " max_retries, dependencies, created_at, updated_at, started_at, completed_at,"
    " lease_expires_at, run_after FROM tasks WHERE id = ?"
)
EVENT_COLUMNS = "sequence, id, event_type, agent_id, task_id, payload, metadata, timestamp"
EVENT_SELECT = f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?"
EVENTS_BY_AGENT_SELECT = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE agent_id = ?"
    " ORDER BY timestamp DESC, sequence DESC LIMIT ?"
)


def _when(us: int | None) -> datetime | None:
    return None if us is None else EPOCH + timedelta(microseconds=us)


def task_by_hand(r: Sequence[Any]) -> TaskModel:
    """A row of ``TASK_SELECT`` as a ``TaskModel``, with ``json`` and ``datetime``."""
    return TaskModel(
        id=r[0],
        task_type=r[1],
        priority=TaskPriority(r[2]),
        status=TaskStatus(r[3]),
        assigned_to=r[4],
        payload=json.loads(r[5]),
        result=None if r[6] is None else json.loads(r[6]),
        error=r[7],
        retry_count=r[8],
        max_retries=r[9],
        dependencies=json.loads(r[10]),
        created_at=EPOCH + timedelta(microseconds=r[11]),
        updated_at=EPOCH + timedelta(microseconds=r[12]),
        started_at=_when(r[13]),
        completed_at=_when(r[14]),
        lease_expires_at=_when(r[15]),
        run_after=_when(r[16]),
    )


def event_by_hand(r: Sequence[Any]) -> EventModel:
    """A row of ``EVENT_SELECT`` as an ``EventModel``."""
    return EventModel(
        id=r[1],
        event_type=r[2],
        agent_id=r[3],
        task_id=r[4],
        payload=json.loads(r[5]),
        metadata=json.loads(r[6]),
        timestamp=EPOCH + timedelta(microseconds=r[7]),
        sequence=r[0],
    )


# --- huey (SqliteHuey) ----------------------------------------------------------------------


class HueyQueue:
    """A huey app on its own file (WAL, ``synchronous=NORMAL``) with one task.

    The task returns its argument, so huey stores a result per task: its record of a
    completion. huey's worker deletes the message when it takes it (no lease): a task whose
    worker dies is lost, where the library's lease hands it to another worker.
    """

    def __init__(self, path: Path) -> None:
        from huey import Huey, signals
        from huey.storage import SqliteStorage

        class Storage(SqliteStorage):  # type: ignore[misc]
            def _create_connection(self) -> sqlite3.Connection:
                conn: sqlite3.Connection = super()._create_connection()
                conn.execute("PRAGMA synchronous=NORMAL")
                return conn

        self.huey: Any = Huey("bench", storage_class=Storage, filename=str(path))
        self.completed = 0
        self._lock = threading.Lock()
        self.all_done = threading.Event()
        self.expected = 0

        def work(i: int) -> int:
            return i

        self.work: Any = self.huey.task(name="work")(work)

        def on_complete(signal_name: str, task: Any, *args: Any) -> None:
            with self._lock:
                self.completed += 1
                if self.completed >= self.expected:
                    self.all_done.set()

        self.huey.signal(signals.SIGNAL_COMPLETE)(on_complete)

    def enqueue(self, n: int, deadline: Deadline) -> None:
        work = self.work
        for i in range(n):
            if not i & 255:
                deadline.check()
            work(i)

    def consume(self, n: int, deadline: Deadline) -> None:
        """Run huey's consumer (4 worker threads) in this process until ``n`` tasks completed."""
        self.completed = 0
        self.expected = n
        self.all_done.clear()
        consumer = self.huey.create_consumer(
            workers=WORKERS, worker_type="thread", periodic=False, check_worker_health=False
        )
        # start() installs the consumer's signal handlers: put the process's back afterwards.
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        consumer.start()
        try:
            if not self.all_done.wait(deadline.left()):
                raise Overrun(
                    f"huey's consumer completed {self.completed} of {n} tasks within "
                    f"{deadline.seconds:g} s"
                )
        finally:
            consumer.stop(graceful=True)
            for s, handler in saved.items():
                signal.signal(s, handler)

    def close(self) -> None:
        self.huey.storage.close()


# --- SQLite benchmarks ----------------------------------------------------------------------


async def bench_sqlite_store(opts: Options, work: Workdir, peers: bool) -> list[Result]:
    key = "sqlite.store"
    if not opts.wants(key):
        return []
    n = tasks_n(opts)
    limit = limit_s(opts)

    async def library() -> Timing:
        storage = await open_storage(work.path("lib-store"))
        try:

            async def produce() -> None:
                store = storage.store_task
                async with asyncio.timeout(limit):
                    for i in range(n):
                        await store(new_task(i))

            return await timed_async(n, produce)
        finally:
            await storage.close()

    async def raw() -> Timing:
        conn = sqlite_connect(raw_file(work.path("raw-store")))
        deadline = Deadline(limit, "sqlite3 inserts")

        def produce() -> None:
            execute = conn.execute
            for i in range(n):
                if not i & 255:
                    deadline.check()
                execute(SQLITE_INSERT_TASK, ("work", i % 4, json.dumps({"i": i}), time.time()))

        try:
            return timed(n, produce)
        finally:
            conn.close()

    async def huey() -> Timing:
        queue = HueyQueue(work.path("huey-store"))
        try:
            deadline = Deadline(limit, "huey enqueue")
            return timed(n, lambda: queue.enqueue(n, deadline))
        finally:
            queue.close()

    raw_name = "sqlite3: one autocommitted INSERT per task"
    lib_name = "await store_task(TaskModel.new(...))"
    peer_name = "huey (SqliteHuey): enqueue a task per call"
    sides = [Side(raw_name, raw), Side(lib_name, library)]
    missing = None
    if peers and have("huey"):
        sides.append(Side(peer_name, huey, optional=True))
    elif peers:
        missing = "huey is not installed (pip install '.[bench]')"
    results, failed = await rounds(opts.repeat, sides)
    return rows(
        key,
        "tasks",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        peer=peer_name if peers else None,
        peer_missing=missing,
        note=f"{n:,} tasks, one producer, each call answered after its commit",
    )


async def bench_sqlite_claims(opts: Options, work: Workdir, peers: bool) -> list[Result]:
    key = "sqlite.claims"
    if not opts.wants(key):
        return []
    n = tasks_n(opts)
    limit = limit_s(opts)

    async def library() -> Timing:
        storage = await open_storage(work.path("lib-claims"))
        try:
            await seed_library_tasks(storage, n)

            async def drain() -> None:
                done = 0

                async def worker(agent: str) -> None:
                    nonlocal done
                    claim, complete = storage.claim_next_task, storage.complete_task
                    while (task := await claim(agent)) is not None:
                        await complete(task.id, agent)
                        done += 1

                async with asyncio.timeout(limit):
                    await asyncio.gather(*(worker(f"worker-{w}") for w in range(WORKERS)))
                assert done == n, f"library completed {done} of {n}"

            return await timed_async(n, drain)
        finally:
            await storage.close()

    async def raw() -> Timing:
        path = raw_file(work.path("raw-claims"))
        conn = sqlite_connect(path)
        seed_raw_tasks(conn, n)
        conn.close()
        deadline = Deadline(limit, "sqlite3 claims")
        return timed(n, lambda: raw_drain(path, n, deadline))

    async def huey() -> Timing:
        queue = HueyQueue(work.path("huey-claims"))
        try:
            queue.enqueue(n, Deadline(limit, "huey enqueue"))
            deadline = Deadline(limit, "huey consumer")
            return timed(n, lambda: queue.consume(n, deadline))
        finally:
            queue.close()

    raw_name = "sqlite3: 4 threads, UPDATE … RETURNING claim + UPDATE"
    lib_name = "4 coroutines: claim_next_task → complete_task"
    peer_name = "huey: consumer with 4 worker threads"
    sides = [Side(raw_name, raw), Side(lib_name, library)]
    missing = None
    if peers and have("huey"):
        sides.append(Side(peer_name, huey, optional=True))
    elif peers:
        missing = "huey is not installed (pip install '.[bench]')"
    results, failed = await rounds(opts.repeat, sides)
    return rows(
        key,
        "tasks",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        peer=peer_name if peers else None,
        peer_missing=missing,
        note=f"{n:,} independent tasks, 4 priorities, 4 workers",
    )


def raw_drain(path: Path, total: int, deadline: Deadline) -> None:
    """4 threads, a connection each, claim and complete until the queue is empty."""
    done = 0
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker(w: int) -> None:
        nonlocal done
        agent = f"worker-{w}"
        conn = sqlite_connect(path)
        execute = conn.execute
        try:
            while True:
                deadline.check()
                got = execute(SQLITE_CLAIM, (agent, time.time())).fetchall()
                if not got:
                    return
                task_id, _task_type, payload = got[0]
                json.loads(payload)
                execute(SQLITE_COMPLETE, (None, time.time(), task_id))
                with lock:
                    done += 1
        except BaseException as exc:  # surfaced after join
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    assert done == total, f"sqlite3 completed {done} of {total}"


async def bench_sqlite_batches(opts: Options, work: Workdir) -> list[Result]:
    key = "sqlite.batches"
    if not opts.wants(key):
        return []
    n = tasks_n(opts)
    limit = limit_s(opts)

    async def library() -> Timing:
        storage = await open_storage(work.path("lib-batches"))
        try:
            await seed_library_tasks(storage, n)
            return await timed_async(n, lambda: drain_in_batches(storage, n, limit))
        finally:
            await storage.close()

    async def raw() -> Timing:
        path = raw_file(work.path("raw-batches"))
        conn = sqlite_connect(path)
        seed_raw_tasks(conn, n)
        conn.close()
        deadline = Deadline(limit, "sqlite3 batches")
        return timed(n, lambda: raw_drain_batches(path, n, deadline))

    raw_name = f"sqlite3: 4 threads, UPDATE … LIMIT {BATCH} RETURNING + one UPDATE per batch"
    lib_name = f"4 coroutines: claim_next_tasks({BATCH}) → complete_tasks"
    results, failed = await rounds(opts.repeat, [Side(raw_name, raw), Side(lib_name, library)])
    return rows(
        key,
        "tasks",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        note=f"{n:,} independent tasks, 4 priorities, 4 workers, batches of {BATCH}",
    )


async def drain_in_batches(storage: Storage, total: int, limit: float) -> None:
    """4 coroutines claim batches and complete each batch in one call, until none is left."""
    done = 0

    async def worker(agent: str) -> None:
        nonlocal done
        claim, complete = storage.claim_next_tasks, storage.complete_tasks
        while batch := await claim(agent, BATCH):
            await complete([(task.id, None) for task in batch], agent)
            done += len(batch)

    async with asyncio.timeout(limit):
        await asyncio.gather(*(worker(f"worker-{w}") for w in range(WORKERS)))
    assert done == total, f"library completed {done} of {total}"


def raw_drain_batches(path: Path, total: int, deadline: Deadline) -> None:
    """4 threads, a connection each, claim and complete batches until the queue is empty."""
    done = 0
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker(w: int) -> None:
        nonlocal done
        agent = f"worker-{w}"
        conn = sqlite_connect(path)
        execute = conn.execute
        try:
            while True:
                deadline.check()
                got = execute(SQLITE_CLAIM_BATCH, (agent, time.time(), BATCH)).fetchall()
                if not got:
                    return
                for _task_id, _task_type, payload in got:
                    json.loads(payload)
                ids = json.dumps([row[0] for row in got])
                execute(SQLITE_COMPLETE_BATCH, (time.time(), ids))
                with lock:
                    done += len(got)
        except BaseException as exc:  # surfaced after join
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    assert done == total, f"sqlite3 completed {done} of {total}"


@dataclass
class ReadFixture:
    """A library file with tasks and events, the storage on it, and a sqlite3 connection."""

    storage: Storage
    conn: sqlite3.Connection
    task_ids: list[str]
    event_ids: list[str]
    agents: list[str]

    async def close(self) -> None:
        self.conn.close()
        await self.storage.close()


def make_events(n: int) -> list[EventModel]:
    return [
        EventModel.new("step", {"i": i, "note": "progress"}, agent_id=f"agent-{i % AGENTS}")
        for i in range(n)
    ]


async def read_fixture(opts: Options, work: Workdir) -> ReadFixture:
    n = tasks_n(opts)
    path = work.path("reads")
    storage = await open_storage(path)
    tasks = await seed_library_tasks(storage, n)
    events = make_events(n)
    for i in range(0, n, 2_000):
        await storage.store_events(events[i : i + 2_000])
    conn = sqlite_connect(path)
    reads = opts.scale(20_000, 400)
    rng = random.Random(7)
    fixture = ReadFixture(
        storage,
        conn,
        [tasks[rng.randrange(n)].id for _ in range(reads)],
        [events[rng.randrange(n)].id for _ in range(reads)],
        [f"agent-{rng.randrange(AGENTS)}" for _ in range(opts.scale(2_000, 40))],
    )
    # The hand-written decoding gives the library's models.
    t = fixture.task_ids[0]
    assert task_by_hand(conn.execute(TASK_SELECT, (t,)).fetchone()) == await storage.get_task(t)
    e = fixture.event_ids[0]
    assert event_by_hand(conn.execute(EVENT_SELECT, (e,)).fetchone()) == (
        await storage.events.find_by_id(e)
    )
    a = fixture.agents[0]
    by_hand = [event_by_hand(r) for r in conn.execute(EVENTS_BY_AGENT_SELECT, (a, 100))]
    assert by_hand == await storage.get_events_by_agent(a, 100)
    return fixture


def point_reads(
    conn: sqlite3.Connection, select: str, ids: Sequence[str], decode: Callable[[Any], Any] | None
) -> Callable[[], None]:
    def reads() -> None:
        execute = conn.execute
        if decode is None:
            for i in ids:
                execute(select, (i,)).fetchone()
        else:
            for i in ids:
                decode(execute(select, (i,)).fetchone())

    return reads


def awaited_reads(get: Callable[[str], Awaitable[Any]], ids: Sequence[str]) -> Run:
    async def reads() -> None:
        for i in ids:
            await get(i)

    async def run() -> Timing:
        return await timed_async(len(ids), reads)

    return run


async def bench_sqlite_reads(opts: Options, work: Workdir) -> list[Result]:
    keys = (
        "sqlite.get_task",
        "sqlite.tasks.find_by_id",
        "sqlite.events.find_by_id",
        "sqlite.events_by_agent",
    )
    if not any(opts.wants(k) for k in keys):
        return []
    fx = await read_fixture(opts, work)
    out: list[Result] = []
    try:
        conn, storage = fx.conn, fx.storage
        decoded = "sqlite3: point SELECT, row decoded by hand into TaskModel"
        undecoded = "sqlite3: point SELECT, row left a tuple"
        for key, lib_name, get in (
            ("sqlite.get_task", "await get_task(id)", storage.get_task),
            ("sqlite.tasks.find_by_id", "await storage.tasks.find_by_id(id)", None),
        ):
            if not opts.wants(key):
                continue
            getter = get if get is not None else storage.tasks.find_by_id
            ids = fx.task_ids
            sides = [
                Side(
                    decoded,
                    _timed_sync(len(ids), point_reads(conn, TASK_SELECT, ids, task_by_hand)),
                ),
                Side(undecoded, _timed_sync(len(ids), point_reads(conn, TASK_SELECT, ids, None))),
                Side(lib_name, awaited_reads(getter, ids)),
            ]
            results, failed = await rounds(opts.repeat, sides)
            results["  (same, vs the undecoded row)"] = results[lib_name]
            out += rows(
                key,
                "reads",
                results,
                failed,
                raw=decoded,
                library=[(lib_name, decoded), ("  (same, vs the undecoded row)", undecoded)],
                note=f"{len(ids):,} reads of {tasks_n(opts):,} tasks, random ids",
            )
        if opts.wants("sqlite.events.find_by_id"):
            key = "sqlite.events.find_by_id"
            ids = fx.event_ids
            ev_decoded = "sqlite3: point SELECT, row decoded by hand into EventModel"
            lib_name = "await storage.events.find_by_id(id)"
            sides = [
                Side(
                    ev_decoded,
                    _timed_sync(len(ids), point_reads(conn, EVENT_SELECT, ids, event_by_hand)),
                ),
                Side(undecoded, _timed_sync(len(ids), point_reads(conn, EVENT_SELECT, ids, None))),
                Side(lib_name, awaited_reads(storage.events.find_by_id, ids)),
            ]
            results, failed = await rounds(opts.repeat, sides)
            results["  (same, vs the undecoded row)"] = results[lib_name]
            out += rows(
                key,
                "reads",
                results,
                failed,
                raw=ev_decoded,
                library=[(lib_name, ev_decoded), ("  (same, vs the undecoded row)", undecoded)],
                note=f"{len(ids):,} reads of {tasks_n(opts):,} events, random ids",
            )
        if opts.wants("sqlite.events_by_agent"):
            key = "sqlite.events_by_agent"
            agents = fx.agents
            ev_decoded = "sqlite3: same SELECT, 100 rows decoded by hand into EventModel"
            ev_undecoded = "sqlite3: same SELECT, rows left tuples"

            def by_agent(decode: bool) -> Callable[[], None]:
                def reads() -> None:
                    execute = conn.execute
                    for a in agents:
                        got = execute(EVENTS_BY_AGENT_SELECT, (a, 100)).fetchall()
                        if decode:
                            [event_by_hand(r) for r in got]

                return reads

            async def library_calls() -> None:
                get = storage.get_events_by_agent
                for a in agents:
                    await get(a, 100)

            async def library() -> Timing:
                return await timed_async(len(agents), library_calls)

            lib_name = "await get_events_by_agent(agent, 100)"
            sides = [
                Side(ev_decoded, _timed_sync(len(agents), by_agent(True))),
                Side(ev_undecoded, _timed_sync(len(agents), by_agent(False))),
                Side(lib_name, library),
            ]
            results, failed = await rounds(opts.repeat, sides)
            results["  (same, vs the undecoded rows)"] = results[lib_name]
            out += rows(
                key,
                "calls",
                results,
                failed,
                raw=ev_decoded,
                library=[(lib_name, ev_decoded), ("  (same, vs the undecoded rows)", ev_undecoded)],
                note=(
                    f"{len(agents):,} calls of 100 events each "
                    f"({tasks_n(opts):,} events over {AGENTS} agents)"
                ),
            )
    finally:
        await fx.close()
    return out


def _timed_sync(ops: int, fn: Callable[[], object]) -> Run:
    async def run() -> Timing:
        return timed(ops, fn)

    return run


async def bench_sqlite_events(opts: Options, work: Workdir, peers: bool) -> list[Result]:
    key = "sqlite.events.64"
    if not opts.wants(key):
        return []
    n = opts.scale(10_000, 640)
    limit = limit_s(opts)

    async def library() -> Timing:
        storage = await open_storage(work.path("lib-events"))
        try:

            async def produce() -> None:
                store = storage.store_event

                async def producer(p: int) -> None:
                    for i in range(p, n, PRODUCERS):
                        await store(
                            EventModel.new("step", {"i": i}, agent_id=f"agent-{i % AGENTS}")
                        )

                async with asyncio.timeout(limit):
                    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))

            return await timed_async(n, produce)
        finally:
            await storage.close()

    async def raw() -> Timing:
        path = raw_file(work.path("raw-events"))
        deadline = Deadline(limit, "sqlite3 event inserts")

        def produce() -> None:
            failures: list[BaseException] = []

            def thread(t: int) -> None:
                conn = sqlite_connect(path)
                try:
                    for i in range(t, n, RAW_THREADS):
                        if not i & 255:
                            deadline.check()
                        conn.execute(
                            SQLITE_INSERT_EVENT,
                            ("step", f"agent-{i % AGENTS}", json.dumps({"i": i}), time.time()),
                        )
                except BaseException as exc:
                    failures.append(exc)
                finally:
                    conn.close()

            threads = [threading.Thread(target=thread, args=(t,)) for t in range(RAW_THREADS)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            if failures:
                raise failures[0]

        return timed(n, produce)

    async def aiosqlite_side() -> Timing:
        import aiosqlite

        path = raw_file(work.path("aiosqlite-events"))
        db = await aiosqlite.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")

            async def produce() -> None:
                async def producer(p: int) -> None:
                    for i in range(p, n, PRODUCERS):
                        await db.execute(
                            SQLITE_INSERT_EVENT,
                            ("step", f"agent-{i % AGENTS}", json.dumps({"i": i}), time.time()),
                        )

                async with asyncio.timeout(limit):
                    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))

            return await timed_async(n, produce)
        finally:
            await db.close()

    raw_name = "sqlite3: 8 threads, one autocommitted INSERT per event"
    lib_name = "64 producers: await store_event(EventModel.new(...))"
    peer_name = "aiosqlite: 64 producers on one connection, one INSERT each"
    sides = [Side(raw_name, raw), Side(lib_name, library)]
    missing = None
    if peers and have("aiosqlite"):
        sides.append(Side(peer_name, aiosqlite_side, optional=True))
    elif peers:
        missing = "aiosqlite is not installed (pip install '.[bench]')"
    results, failed = await rounds(opts.repeat, sides)
    return rows(
        key,
        "events",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        peer=peer_name if peers else None,
        peer_missing=missing,
        note=f"{n:,} events over {AGENTS} agents, each built in the loop",
    )


# --- PostgreSQL: the run's objects and hand-written code ------------------------------------

RAW_PG_SCHEMA = """
CREATE TABLE tasks (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_type    TEXT NOT NULL,
    priority     SMALLINT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    assigned_to  TEXT,
    payload      JSONB NOT NULL,
    result       JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ,
    completed_at TIMESTAMPTZ
);
CREATE INDEX tasks_queue ON tasks (status, priority DESC, id);
"""
PG_INSERT_TASK = "INSERT INTO tasks (task_type, priority, payload) VALUES ($1, $2, $3)"
PG_CLAIM = """
UPDATE tasks SET status = 'running', assigned_to = $1, updated_at = now()
WHERE id = (
    SELECT id FROM tasks WHERE status = 'pending'
    ORDER BY priority DESC, id
    LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING id, task_type, payload
"""
PG_COMPLETE = "UPDATE tasks SET status = 'done', result = $2, completed_at = now() WHERE id = $1"
PG_CLAIM_BATCH = """
UPDATE tasks SET status = 'running', assigned_to = $1, updated_at = now()
WHERE id IN (
    SELECT id FROM tasks WHERE status = 'pending'
    ORDER BY priority DESC, id
    LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING id, task_type, payload
"""
PG_COMPLETE_BATCH = (
    "UPDATE tasks SET status = 'done', result = NULL, completed_at = now()"
    " WHERE id = ANY ($1::bigint[])"
)
PG_AGGREGATE = """
SELECT agent_id, unit, count(*), sum(value), min(value), max(value), max(timestamp)
FROM metrics
WHERE metric_type = $1 AND timestamp BETWEEN $2 AND $3
GROUP BY agent_id, unit
ORDER BY agent_id NULLS FIRST, unit
"""


class Peer(Procrastinate):
    """procrastinate on the run's database (its schema in ``public``), one no-op task."""

    async def clear(self) -> None:
        await self._execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")


@dataclass
class PgEnv:
    """The run's database, the schemas of the library and the hand-written code, the peer."""

    url: str
    lib_schema: str
    raw_schema: str
    admin: Any  # asyncpg connection to the run's database
    peer: Peer | None
    peer_missing: str | None

    async def open_storage(self) -> Storage:
        storage: Storage = await init_storage(self.url, schema=self.lib_schema)
        return storage

    async def connect(self, schema: str) -> Any:
        import asyncpg

        return await asyncpg.connect(self.url, server_settings={"search_path": schema}, timeout=10)

    async def truncate_library(self, *tables: str) -> None:
        await self.admin.execute(
            f"TRUNCATE {', '.join(f'{self.lib_schema}.{t}' for t in tables)} CASCADE"
        )

    async def truncate_raw(self) -> None:
        await self.admin.execute(f"TRUNCATE {self.raw_schema}.tasks RESTART IDENTITY")


@contextlib.asynccontextmanager
async def pg_env(peers: bool, database_url: str | None) -> AsyncIterator[PgEnv]:
    """The run's PostgreSQL objects, dropped at the end.

    Without ``database_url`` the run makes a database of its own (procrastinate installs its
    schema in ``public``) and drops it; with one (a test's), only schemas of its own, and no
    peer.
    """
    import asyncpg

    async with contextlib.AsyncExitStack() as stack:
        url = database_url or await stack.enter_async_context(bench_database())
        suffix = secrets.token_hex(4)
        lib_schema, raw_schema = f"task_path_lib_{suffix}", f"task_path_raw_{suffix}"
        admin = await asyncpg.connect(url, timeout=10)
        stack.push_async_callback(admin.close)

        async def drop() -> None:
            await admin.execute(
                f"DROP SCHEMA IF EXISTS {lib_schema} CASCADE;"
                f"DROP SCHEMA IF EXISTS {raw_schema} CASCADE"
            )

        stack.push_async_callback(drop)
        await admin.execute(f"CREATE SCHEMA {raw_schema}")
        await admin.execute(f"SET search_path = {raw_schema}; {RAW_PG_SCHEMA}; RESET search_path")
        storage = await init_storage(url, schema=lib_schema)  # creates the library's schema
        await storage.close()
        peer: Peer | None = None
        missing: str | None = None
        if peers and database_url is None:
            if have("procrastinate"):
                peer = Peer(url, WORKERS + 2)
                await peer.open(apply_schema=True)
                stack.push_async_callback(peer.close)
            else:
                missing = "procrastinate is not installed (pip install '.[bench]')"
        yield PgEnv(url, lib_schema, raw_schema, admin, peer, missing)


async def bench_pg_store(opts: Options, env: PgEnv) -> list[Result]:
    key = "pg.store"
    if not opts.wants(key):
        return []
    n = tasks_n(opts)
    limit = limit_s(opts)

    async def library() -> Timing:
        await env.truncate_library("tasks")
        storage = await env.open_storage()
        try:

            async def produce() -> None:
                store = storage.store_task
                async with asyncio.timeout(limit):
                    for i in range(n):
                        await store(new_task(i))

            return await timed_async(n, produce)
        finally:
            await storage.close()

    async def raw() -> Timing:
        await env.truncate_raw()
        conn = await env.connect(env.raw_schema)
        try:

            async def produce() -> None:
                execute = conn.execute
                async with asyncio.timeout(limit):
                    for i in range(n):
                        await execute(PG_INSERT_TASK, "work", i % 4, json.dumps({"i": i}))

            return await timed_async(n, produce)
        finally:
            await conn.close()

    peer = env.peer

    async def procrastinate() -> Timing:
        assert peer is not None
        await peer.clear()

        async def produce() -> None:
            defer = peer.noop.defer_async
            async with asyncio.timeout(limit):
                for i in range(n):
                    await defer(i=i)

        return await timed_async(n, produce)

    raw_name = "asyncpg: one INSERT per task"
    lib_name = "await store_task(TaskModel.new(...))"
    peer_name = "procrastinate: await defer_async(...) per job"
    sides = [Side(raw_name, raw), Side(lib_name, library)]
    if peer is not None:
        sides.append(Side(peer_name, procrastinate, optional=True))
    results, failed = await rounds(opts.repeat, sides)
    return rows(
        key,
        "tasks",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        peer=peer_name if peer is not None else None,
        peer_missing=env.peer_missing,
        note=f"{n:,} tasks, one producer, TCP loopback, synchronous_commit=on",
    )


async def bench_pg_claims(opts: Options, env: PgEnv) -> list[Result]:
    key = "pg.claims"
    if not opts.wants(key):
        return []
    n = tasks_n(opts)
    limit = limit_s(opts)

    async def library() -> Timing:
        await env.truncate_library("tasks", "task_dependencies")
        storage = await env.open_storage()
        try:
            await seed_library_tasks(storage, n)
            await env.admin.execute(f"ANALYZE {env.lib_schema}.tasks")

            async def drain() -> None:
                done = 0

                async def worker(agent: str) -> None:
                    nonlocal done
                    claim, complete = storage.claim_next_task, storage.complete_task
                    while (task := await claim(agent)) is not None:
                        await complete(task.id, agent)
                        done += 1

                async with asyncio.timeout(limit):
                    await asyncio.gather(*(worker(f"worker-{w}") for w in range(WORKERS)))
                assert done == n, f"library completed {done} of {n}"

            return await timed_async(n, drain)
        finally:
            await storage.close()

    async def raw() -> Timing:
        await env.truncate_raw()
        await env.admin.executemany(
            f"INSERT INTO {env.raw_schema}.tasks (task_type, priority, payload)"
            " VALUES ($1, $2, $3)",
            [("work", i % 4, json.dumps({"i": i})) for i in range(n)],
        )
        await env.admin.execute(f"ANALYZE {env.raw_schema}.tasks")
        conns = [await env.connect(env.raw_schema) for _ in range(WORKERS)]
        try:

            async def drain() -> None:
                done = 0

                async def worker(conn: Any, agent: str) -> None:
                    nonlocal done
                    while (row := await conn.fetchrow(PG_CLAIM, agent)) is not None:
                        json.loads(row["payload"])
                        await conn.execute(PG_COMPLETE, row["id"], None)
                        done += 1

                async with asyncio.timeout(limit):
                    await asyncio.gather(*(worker(c, f"worker-{w}") for w, c in enumerate(conns)))
                assert done == n, f"asyncpg completed {done} of {n}"

            return await timed_async(n, drain)
        finally:
            for c in conns:
                await c.close()

    peer = env.peer

    async def procrastinate() -> Timing:
        assert peer is not None
        await peer.defer(n)

        async def drain() -> None:
            async with asyncio.timeout(limit):
                await peer.drain(WORKERS)

        t = await timed_async(n, drain)
        done = await peer.succeeded()
        assert done == n, f"procrastinate ran {done} of {n} jobs"
        return t

    raw_name = "asyncpg: 4 connections, SKIP LOCKED claim + UPDATE"
    lib_name = "4 coroutines on one storage: claim_next_task → complete_task"
    peer_name = "procrastinate: worker, concurrency 4, until the queue is empty"
    sides = [Side(raw_name, raw), Side(lib_name, library)]
    if peer is not None:
        sides.append(Side(peer_name, procrastinate, optional=True))
    results, failed = await rounds(opts.repeat, sides)
    return rows(
        key,
        "tasks",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        peer=peer_name if peer is not None else None,
        peer_missing=env.peer_missing,
        note=f"{n:,} independent tasks, 4 priorities, 4 workers",
    )


async def bench_pg_batches(opts: Options, env: PgEnv) -> list[Result]:
    key = "pg.batches"
    if not opts.wants(key):
        return []
    n = tasks_n(opts)
    limit = limit_s(opts)

    async def library() -> Timing:
        await env.truncate_library("tasks", "task_dependencies")
        storage = await env.open_storage()
        try:
            await seed_library_tasks(storage, n)
            await env.admin.execute(f"ANALYZE {env.lib_schema}.tasks")
            return await timed_async(n, lambda: drain_in_batches(storage, n, limit))
        finally:
            await storage.close()

    async def raw() -> Timing:
        await env.truncate_raw()
        await env.admin.executemany(
            f"INSERT INTO {env.raw_schema}.tasks (task_type, priority, payload)"
            " VALUES ($1, $2, $3)",
            [("work", i % 4, json.dumps({"i": i})) for i in range(n)],
        )
        await env.admin.execute(f"ANALYZE {env.raw_schema}.tasks")
        conns = [await env.connect(env.raw_schema) for _ in range(WORKERS)]
        try:

            async def drain() -> None:
                done = 0

                async def worker(conn: Any, agent: str) -> None:
                    nonlocal done
                    while rows := await conn.fetch(PG_CLAIM_BATCH, agent, BATCH):
                        for row in rows:
                            json.loads(row["payload"])
                        await conn.execute(PG_COMPLETE_BATCH, [row["id"] for row in rows])
                        done += len(rows)

                async with asyncio.timeout(limit):
                    await asyncio.gather(*(worker(c, f"worker-{w}") for w, c in enumerate(conns)))
                assert done == n, f"asyncpg completed {done} of {n}"

            return await timed_async(n, drain)
        finally:
            for c in conns:
                await c.close()

    raw_name = f"asyncpg: 4 connections, SKIP LOCKED LIMIT {BATCH} claim + one UPDATE per batch"
    lib_name = f"4 coroutines on one storage: claim_next_tasks({BATCH}) → complete_tasks"
    results, failed = await rounds(opts.repeat, [Side(raw_name, raw), Side(lib_name, library)])
    return rows(
        key,
        "tasks",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        note=f"{n:,} independent tasks, 4 priorities, 4 workers, batches of {BATCH}",
    )


def make_metrics(n: int, start: datetime) -> list[MetricModel]:
    """``n`` metrics spread evenly over one day: 50 agents, 3 in 4 of them ``latency``."""
    rng = random.Random(6)
    step = timedelta(days=1) / n
    out = []
    for i in range(n):
        m = MetricModel.new(
            "latency" if i % 4 else "throughput",
            rng.uniform(0.1, 250.0),
            "ms" if i % 4 else "ops",
            agent_id=f"agent-{i % 50}",
            tags={"zone": "a" if i % 3 else "b"},
        )
        m.timestamp = start + i * step
        out.append(m)
    return out


def metric_by_hand(metric_type: str, r: Sequence[Any]) -> MetricModel:
    """An aggregate row as the library's ``get_aggregated_metrics`` shapes it."""
    agent_id, unit, count, total, low, high, latest = r
    return MetricModel(
        id=f"{metric_type}:{agent_id if agent_id is not None else '*'}:{unit}",
        metric_type=metric_type,
        value=total / count,
        unit=unit,
        agent_id=agent_id,
        tags={"count": str(count), "min": repr(low), "max": repr(high), "sum": repr(total)},
        timestamp=EPOCH + timedelta(microseconds=latest),
    )


async def bench_pg_aggregate(opts: Options, env: PgEnv) -> list[Result]:
    key = "pg.aggregate"
    if not opts.wants(key):
        return []
    n = opts.scale(100_000, 2_000)
    calls = opts.scale(10, 2)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=1)
    await env.truncate_library("metrics")
    storage = await env.open_storage()
    conn = await env.connect(env.lib_schema)
    try:
        metrics = make_metrics(n, start)
        for i in range(0, n, 5_000):
            await storage.store_metrics(metrics[i : i + 5_000])
        await env.admin.execute(f"ANALYZE {env.lib_schema}.metrics")
        s_us = (start - EPOCH) // timedelta(microseconds=1)
        e_us = (end - EPOCH) // timedelta(microseconds=1)

        async def by_hand() -> list[MetricModel]:
            return [
                metric_by_hand("latency", r)
                for r in await conn.fetch(PG_AGGREGATE, "latency", s_us, e_us)
            ]

        got = await storage.get_aggregated_metrics("latency", start, end)
        expected = await by_hand()
        assert [(m.id, m.tags["count"]) for m in got] == [
            (m.id, m.tags["count"]) for m in expected
        ], "library and hand-written aggregates disagree"

        async def raw_calls() -> None:
            for _ in range(calls):
                await by_hand()

        async def library_calls() -> None:
            for _ in range(calls):
                await storage.get_aggregated_metrics("latency", start, end)

        async def raw() -> Timing:
            return await timed_async(calls, raw_calls)

        async def library() -> Timing:
            return await timed_async(calls, library_calls)

        raw_name = "asyncpg: the aggregate in SQL (GROUP BY), built into MetricModel"
        lib_name = "await get_aggregated_metrics(type, start, end)"
        results, failed = await rounds(opts.repeat, [Side(raw_name, raw), Side(lib_name, library)])
    finally:
        await conn.close()
        await storage.close()
    return rows(
        key,
        "calls",
        results,
        failed,
        raw=raw_name,
        library=[(lib_name, raw_name)],
        note=f"{n:,} metrics over one day, {n * 3 // 4:,} of the type asked, 50 agents",
    )


# --- counting statements, commits and round trips -------------------------------------------


@dataclass(slots=True)
class OpCount:
    """What one operation sends, averaged over ``calls`` lone calls."""

    backend: str
    side: str
    op: str
    calls: int
    statements: float
    commits: float
    round_trips: float | None = None
    #: Each distinct statement (its start) with how often one call runs it.
    shapes: list[tuple[str, float]] = field(default_factory=list)


_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|MERGE)\b", re.IGNORECASE)


#: Literals sqlite3's trace callback writes into the statements it reports.
_LITERALS = re.compile(r"[xX]'[0-9a-fA-F]*'|'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b")


def shape(sql: str, width: int = 72) -> str:
    """A statement's start, on one line."""
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def commits_in(log_: Sequence[tuple[int, str]]) -> int:
    """Commits among statements: each ``COMMIT`` and each write outside a transaction."""
    open_tx: set[int] = set()
    commits = 0
    for conn, sql in log_:
        words = sql.split(None, 1)
        word = words[0].upper().rstrip(";") if words else ""
        if word in ("BEGIN", "START"):
            open_tx.add(conn)
        elif word in ("COMMIT", "END"):
            if conn in open_tx:
                commits += 1
            open_tx.discard(conn)
        elif word == "ROLLBACK":
            open_tx.discard(conn)
        elif conn not in open_tx and _WRITES.search(sql):
            commits += 1
    return commits


class StatementLog:
    """Statements (with the connection that ran them) while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.log: list[tuple[int, str]] = []
        self.commits = 0  # from a commit hook, where there is one
        self.round_trips = 0

    def add(self, conn: object, sql: str) -> None:
        if self.active:
            self.log.append((id(conn), sql))

    def reset(self) -> None:
        self.log.clear()
        self.commits = 0
        self.round_trips = 0

    async def measure(
        self,
        backend: str,
        side: str,
        op: str,
        calls: int,
        call: Callable[[int], Awaitable[object] | object],
        *,
        hook_commits: bool = False,
        round_trips: bool = False,
    ) -> OpCount:
        """Run ``call(i)`` ``calls`` times, one after another, and count what it sent."""
        self.reset()
        self.active = True
        try:
            for i in range(calls):
                got = call(i)
                if asyncio.iscoroutine(got):
                    await got
        finally:
            self.active = False
        statements = [sql for _, sql in self.log if sql.strip()]
        commits = self.commits if hook_commits else commits_in(self.log)
        by_shape = Counter(shape(s) for s in statements)
        return OpCount(
            backend,
            side,
            op,
            calls,
            len(statements) / calls,
            commits / calls,
            self.round_trips / calls if round_trips else None,
            [(s, c / calls) for s, c in by_shape.items()],
        )


@contextlib.contextmanager
def apsw_traced(trace: StatementLog) -> Iterator[None]:
    """Every apsw connection opened meanwhile reports its statements and commits."""

    def exec_trace(cursor: Any, sql: str, bindings: Any) -> bool:
        trace.add(cursor.connection, sql)
        return True

    def commit_hook() -> bool:
        if trace.active:
            trace.commits += 1
        return False  # let it commit

    def hook(conn: apsw.Connection) -> None:
        conn.exec_trace = exec_trace
        conn.set_commit_hook(commit_hook)

    apsw.connection_hooks.append(hook)
    try:
        yield
    finally:
        apsw.connection_hooks.remove(hook)


def sqlite3_traced(conn: sqlite3.Connection, trace: StatementLog) -> None:
    """Log ``conn``'s statements; the values it writes into them are made ``?`` again."""
    conn.set_trace_callback(lambda sql: trace.add(conn, _LITERALS.sub("?", sql)))


async def count_sqlite_library(
    trace: StatementLog, k: int, work: Workdir, out: list[OpCount]
) -> None:
    """The storage's statements and commits per lone call (apsw's tracer on its connections)."""
    storage = await open_storage(work.path("count-lib"))
    try:
        tasks = await seed_library_tasks(storage, k)
        events = make_events(k)
        await storage.store_events(events)
        claimed: list[TaskModel] = []

        async def claim(i: int) -> None:
            task = await storage.claim_next_task("worker-0")
            assert task is not None
            claimed.append(task)

        async def store_event(i: int) -> None:
            await storage.store_event(EventModel.new("step", {"i": i}, agent_id="agent-0"))

        m = trace.measure
        lib = "library"
        for op, call in (
            ("store_task", lambda i: storage.store_task(new_task(i))),
            ("claim_next_task", claim),
            ("complete_task", lambda i: storage.complete_task(claimed[i].id, "worker-0")),
            ("get_task", lambda i: storage.get_task(tasks[i].id)),
            ("tasks.find_by_id", lambda i: storage.tasks.find_by_id(tasks[i].id)),
            ("events.find_by_id", lambda i: storage.events.find_by_id(events[i].id)),
            ("get_events_by_agent(limit 100)", lambda i: storage.get_events_by_agent("agent-0")),
            ("store_event", store_event),
        ):
            out.append(await m("sqlite", lib, op, k, call, hook_commits=True))
    finally:
        await storage.close()


async def count_sqlite(opts: Options, work: Workdir, peers: bool) -> list[OpCount]:
    """Statements and commits per lone call: the storage, sqlite3 and huey."""
    k = opts.scale(50, 10)
    out: list[OpCount] = []
    trace = StatementLog()
    with apsw_traced(trace):
        await count_sqlite_library(trace, k, work, out)

    conn = sqlite_connect(raw_file(work.path("count-raw")))
    try:
        sqlite3_traced(conn, trace)
        seed_raw_tasks(conn, k)
        ids: list[int] = []

        def raw_claim(i: int) -> None:
            ids.append(conn.execute(SQLITE_CLAIM, ("worker-0", time.time())).fetchall()[0][0])

        for op, call in (
            ("INSERT task", lambda i: conn.execute(
                SQLITE_INSERT_TASK, ("work", 1, json.dumps({"i": i}), time.time()))),
            ("claim (UPDATE … RETURNING)", raw_claim),
            ("complete (UPDATE)", lambda i: conn.execute(
                SQLITE_COMPLETE, (None, time.time(), ids[i]))),
        ):  # fmt: skip
            out.append(await trace.measure("sqlite", "sqlite3", op, k, call))
    finally:
        conn.close()

    if peers and have("huey"):
        queue = HueyQueue(work.path("count-huey"))
        try:
            sqlite3_traced(queue.huey.storage.conn, trace)
            work_task = queue.work
            out.append(await trace.measure("sqlite", "huey", "enqueue", k, lambda i: work_task(i)))

            def take_and_run(i: int) -> None:
                task = queue.huey.dequeue()
                assert task is not None
                queue.huey.execute(task)

            out.append(
                await trace.measure("sqlite", "huey", "worker: dequeue + execute", k, take_and_run)
            )
        finally:
            queue.close()
    return out


@contextlib.contextmanager
def asyncpg_traced(trace: StatementLog) -> Iterator[None]:
    """Count what asyncpg sends: statements by its execution calls, round trips by socket writes.

    After a warm-up (statements prepared and cached), every round trip is one write.
    """
    import asyncio.selector_events as selector_events

    from asyncpg.connection import Connection
    from asyncpg.protocol import Protocol

    transport_cls: Any = selector_events._SelectorSocketTransport
    write = transport_cls.write
    execute = Connection.execute
    do_execute = Connection._do_execute

    def counting_write(self: Any, data: Any) -> None:
        if trace.active and isinstance(self.get_protocol(), Protocol):
            trace.round_trips += 1
        write(self, data)

    async def counting_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if not args:  # the simple protocol; with arguments it goes through _do_execute
            trace.add(self, query)
        return await execute(self, query, *args, **kwargs)

    async def counting_do_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        trace.add(self, query)
        return await do_execute(self, query, *args, **kwargs)

    transport_cls.write = counting_write
    Connection.execute = counting_execute  # type: ignore[method-assign]
    Connection._do_execute = counting_do_execute  # type: ignore[method-assign]
    try:
        yield
    finally:
        transport_cls.write = write
        Connection.execute = execute  # type: ignore[method-assign]
        Connection._do_execute = do_execute  # type: ignore[method-assign]


@contextlib.contextmanager
def libpq_traced(trace: StatementLog) -> Iterator[None]:
    """Count what psycopg (procrastinate's driver) sends: every libpq send is a round trip."""
    from psycopg import pq

    cls: Any = pq.PGconn
    names = ("send_query", "send_query_params", "send_prepare", "send_query_prepared")
    saved = {name: getattr(cls, name) for name in names}
    prepared: dict[bytes, str] = {}

    def wrap(name: str) -> Callable[..., Any]:
        original = saved[name]

        def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            if trace.active:
                trace.round_trips += 1
                if name == "send_prepare":
                    prepared[args[0]] = args[1].decode()
                elif name == "send_query_prepared":
                    trace.add(self, prepared.get(args[0], "(prepared statement)"))
                else:
                    trace.add(self, args[0].decode())
            elif name == "send_prepare":
                prepared[args[0]] = args[1].decode()
            return original(self, *args, **kwargs)

        return counting

    for name in names:
        setattr(cls, name, wrap(name))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(cls, name, original)


async def count_pg(opts: Options, env: PgEnv) -> list[OpCount]:
    """Statements, commits and round trips per lone call: the storage, asyncpg, procrastinate."""
    k = opts.scale(50, 10)
    out: list[OpCount] = []
    trace = StatementLog()
    await env.truncate_library("tasks", "task_dependencies", "metrics")
    storage = await env.open_storage()
    try:
        await storage.store_metrics(make_metrics(400, datetime(2024, 1, 1, tzinfo=UTC)))
        start = datetime(2024, 1, 1, tzinfo=UTC)
        end = start + timedelta(days=1)
        # Warm up: every statement prepared on the connection the next calls get.
        for i in range(3):
            await storage.store_task(new_task(i))
            task = await storage.claim_next_task("worker-0")
            assert task is not None
            await storage.complete_task(task.id, "worker-0")
            await storage.get_task(task.id)
            await storage.get_aggregated_metrics("latency", start, end)
        tasks = [new_task(i) for i in range(k)]
        claimed: list[TaskModel] = []

        async def claim(i: int) -> None:
            task = await storage.claim_next_task("worker-0")
            assert task is not None
            claimed.append(task)

        with asyncpg_traced(trace):
            m = trace.measure
            for op, call in (
                ("store_task", lambda i: storage.store_task(tasks[i])),
                ("claim_next_task", claim),
                ("complete_task", lambda i: storage.complete_task(claimed[i].id, "worker-0")),
                ("get_task", lambda i: storage.get_task(tasks[i].id)),
                (
                    "get_aggregated_metrics",
                    lambda i: storage.get_aggregated_metrics("latency", start, end),
                ),
            ):
                out.append(await m("postgresql", "library", op, k, call, round_trips=True))
    finally:
        await storage.close()

    await env.truncate_raw()
    conn = await env.connect(env.raw_schema)
    try:
        for i in range(2):  # prepare the statements
            await conn.execute(PG_INSERT_TASK, "work", 1, json.dumps({"i": i}))
            row = await conn.fetchrow(PG_CLAIM, "worker-0")
            await conn.execute(PG_COMPLETE, row["id"], None)
        ids: list[int] = []

        async def raw_claim(i: int) -> None:
            row = await conn.fetchrow(PG_CLAIM, "worker-0")
            ids.append(row["id"])

        with asyncpg_traced(trace):
            for op, call in (
                ("INSERT task",
                 lambda i: conn.execute(PG_INSERT_TASK, "work", 1, json.dumps({"i": i}))),
                ("claim (SKIP LOCKED)", raw_claim),
                ("complete (UPDATE)", lambda i: conn.execute(PG_COMPLETE, ids[i], None)),
            ):  # fmt: skip
                out.append(
                    await trace.measure("postgresql", "asyncpg", op, k, call, round_trips=True)
                )
    finally:
        await conn.close()

    if env.peer is not None:
        out += await count_procrastinate(opts, env.url, trace)
    return out


async def count_procrastinate(opts: Options, url: str, trace: StatementLog) -> list[OpCount]:
    """procrastinate's statements per deferred job and per job a worker runs.

    A fresh app, traced from its first connection, so the statements psycopg prepares are
    seen being prepared (and named in the counts).
    """
    k = opts.scale(50, 10)
    with libpq_traced(trace):
        peer = Peer(url, WORKERS + 2)
        await peer.open(apply_schema=False)
        try:
            await peer.clear()
            for i in range(3):  # warm up the pool and psycopg's prepared statements
                await peer.noop.defer_async(i=i)
            deferred = await trace.measure(
                "postgresql",
                "procrastinate",
                "defer_async",
                k,
                lambda i: peer.noop.defer_async(i=i),
                round_trips=True,
            )
            jobs = k + 3

            async def drain(i: int) -> None:  # one worker run takes every job
                await asyncio.wait_for(peer.drain(1), limit_s(opts))

            ran = await trace.measure(
                "postgresql", "procrastinate", "worker", 1, drain, round_trips=True
            )
        finally:
            await peer.close()
    per_job = 1 / jobs
    return [
        deferred,
        OpCount(
            ran.backend,
            ran.side,
            f"worker, concurrency 1 (per job, over {jobs} jobs)",
            jobs,
            ran.statements * per_job,
            ran.commits * per_job,
            None if ran.round_trips is None else ran.round_trips * per_job,
            [(s, c * per_job) for s, c in ran.shapes],
        ),
    ]


def count_notes(counts: Sequence[OpCount]) -> dict[str, str]:
    """A short line per benchmark key from the counts, for the rows' notes."""

    def fmt(c: OpCount) -> str:
        rt = f", round trips {c.round_trips:.2g}" if c.round_trips is not None else ""
        return f"{c.side} {c.op}: statements {c.statements:.2g}, commits {c.commits:.2g}{rt}"

    by = {(c.backend, c.side, c.op): c for c in counts}
    wanted = {
        "sqlite.store": [("sqlite", "library", "store_task"), ("sqlite", "huey", "enqueue")],
        "sqlite.claims": [
            ("sqlite", "library", "claim_next_task"),
            ("sqlite", "library", "complete_task"),
        ],
        "pg.store": [
            ("postgresql", "library", "store_task"),
            ("postgresql", "procrastinate", "defer_async"),
        ],
        "pg.claims": [
            ("postgresql", "library", "claim_next_task"),
            ("postgresql", "library", "complete_task"),
        ],
    }
    return {
        key: "per lone call: " + "; ".join(fmt(by[w]) for w in want if w in by)
        for key, want in wanted.items()
        if any(w in by for w in want)
    }


# --- the run --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything one run measured."""

    title: str
    results: list[Result]
    counts: list[OpCount]


async def run_all(opts: Options, *, peers: bool = True, pg_url: str | None = None) -> Outcome:
    """Every benchmark ``--only`` selects; PostgreSQL's only when a server answers."""
    title = TITLE
    results: list[Result] = []
    counts: list[OpCount] = []
    work = Workdir()
    try:
        results += await bench_sqlite_store(opts, work, peers)
        results += await bench_sqlite_claims(opts, work, peers)
        results += await bench_sqlite_batches(opts, work)
        pg_keys = ("pg.store", "pg.claims", "pg.batches", "pg.aggregate", "pg.counts")
        pg_results: list[Result] = []
        if any(opts.wants(k) for k in pg_keys):
            try:
                if pg_url is None:
                    await _check_server()
            except NoServer as exc:
                title += f" (PostgreSQL rows skipped: no server at {_server_url()}: {exc})"
            else:
                async with pg_env(peers, pg_url) as env:
                    pg_results += await bench_pg_store(opts, env)
                    pg_results += await bench_pg_claims(opts, env)
                    pg_results += await bench_pg_batches(opts, env)
                    pg_results += await bench_pg_aggregate(opts, env)
                    if opts.wants("pg.counts"):
                        counts += await count_pg(opts, env)
        results += [r for r in pg_results if r.bench != "pg.aggregate"]
        results += await bench_sqlite_reads(opts, work)
        results += [r for r in pg_results if r.bench == "pg.aggregate"]
        results += await bench_sqlite_events(opts, work, peers)
        if opts.wants("sqlite.counts"):
            counts += await count_sqlite(opts, work, peers)
    finally:
        work.cleanup()
    notes = count_notes(counts)
    for r in results:
        if r.note and r.bench in notes:
            r.note += "; " + notes[r.bench]
    return Outcome(title, fill_ratios(results), counts)


def run(opts: Options) -> tuple[str, list[Result]]:
    """Run the module; returns its title and rows (the counts go into the rows' notes)."""
    outcome = asyncio.run(run_all(opts))
    return outcome.title, outcome.results


def print_counts(counts: Sequence[OpCount], *, file: Any = None) -> None:
    """The counts as a table: per operation, then each statement it runs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Statements, commits and round trips per lone call")
    for name in ("backend", "side", "operation"):
        table.add_column(name)
    for name in ("statements", "commits", "round trips"):
        table.add_column(name, justify="right")
    table.add_column("what it runs (per call)")
    for c in counts:
        what = "\n".join(f"{n:.2g} x {s}" for s, n in c.shapes)
        rt = "" if c.round_trips is None else f"{c.round_trips:.2f}"
        table.add_row(c.backend, c.side, c.op, f"{c.statements:.2f}", f"{c.commits:.2f}", rt, what)
    Console(file=file or sys.stdout, width=200).print(table)


def _main(argv: Sequence[str] | None = None) -> int:
    from .common import machine_info, parse_args, print_results

    opts = parse_args(argv, prog="python -m bench.task_path_bench")
    started = time.perf_counter()
    outcome = asyncio.run(run_all(opts))
    out = sys.stderr if opts.json else None
    if outcome.results or not outcome.counts:
        print_results(outcome.title, outcome.results, file=out)
    if outcome.counts:
        print_counts(outcome.counts, file=out)
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if opts.json:
        print(
            json.dumps(
                {
                    "title": outcome.title,
                    "machine": machine_info(),
                    "results": [asdict(r) for r in outcome.results],
                    "counts": [asdict(c) for c in outcome.counts],
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
