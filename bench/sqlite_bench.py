"""SQLite backend beside raw ``apsw`` running the same statements in the same run.

Every raw baseline works on a file whose schema the storage itself created, with the same
journal mode, ``synchronous`` and foreign keys, on the same input (the same models with the
same time-ordered ids):

* ``a``: 64 producers each awaiting ``store_event`` (every call answered after its COMMIT) vs
  raw apsw committing every 64 rows (``executemany``) and committing every row; ``a.full``:
  the same producers under ``synchronous=full`` vs raw per-row commits under FULL.
* ``b``: ``store_events`` of 20,000 events in one call vs ``executemany`` in one transaction,
  rows built from the same models. For information: the same rows built by the codec, raw
  letting SQLite number the rows as the storage does, and raw with SQLite's automatic
  checkpoint off (the storage checkpoints on a thread of its own, not at COMMIT).
* ``c``: sequential awaited ``store_event`` latency vs one autocommitted INSERT per row.
* ``d``: claim → complete with 4 worker coroutines, 10,000 tasks, half with a dependency, vs
  apsw in 4 threads with a busy timeout, claiming in one ``UPDATE … RETURNING``.
* ``e``: ``get_agent`` point reads vs the same point SELECT decoded into the same model.
* ``f``: ``get_aggregated_metrics`` over 100,000 metric rows vs the same aggregate SQL.

Run: ``python -m bench.sqlite_bench [--json] [--quick] [--repeat N] [--only a|b|c|d|e|f]``.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import apsw
import orjson

from ruv_swarm_persistence import codec, rules
from ruv_swarm_persistence._time import now_us, to_us
from ruv_swarm_persistence.aggregate import crate_metric, crate_order
from ruv_swarm_persistence.models import AgentModel, EventModel, MetricModel, TaskModel
from ruv_swarm_persistence.storage import Storage

from .common import (
    Options,
    Result,
    Timing,
    best,
    drain,
    fill_ratios,
    main_for,
    make_tasks,
    timed,
    timed_async,
)

TITLE = "SQLite backend vs raw apsw (same statements, same ids, same run)"
PRODUCERS = 64
WORKERS = 4
BUSY_TIMEOUT_MS = 5_000

# --- files, connections, rows -----------------------------------------------------------------


async def open_storage(path: Path, **options: Any) -> Storage:
    from ruv_swarm_persistence.backends.sqlite import SqliteStorage

    storage: Storage = await SqliteStorage.open(str(path), **options)
    return storage


class Workdir:
    """Fresh database files in a temporary folder (on disk, like a user's)."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="swarm-bench-")
        self._n = 0

    def path(self, name: str) -> Path:
        self._n += 1
        return Path(self._tmp.name) / f"{self._n:03d}-{name}.db"

    def cleanup(self) -> None:
        self._tmp.cleanup()


async def schema_file(path: Path) -> Path:
    """A file with the storage's schema, created by the storage and closed again."""
    storage = await open_storage(path)
    await storage.close()
    return path


def raw_connection(path: Path, synchronous: str = "NORMAL") -> apsw.Connection:
    """A plain apsw connection set up as the storage sets up its own."""
    conn = apsw.Connection(str(path))
    conn.setbusytimeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def statements() -> Any:
    """The backend's own SQL (module ``sql``), so raw apsw runs the very same statements."""
    from ruv_swarm_persistence.backends.sqlite import sql

    return sql


S = statements()


def event_row(seq: int, ev: EventModel) -> tuple[Any, ...]:
    """The row raw apsw writes for an event: built plainly, without the codec's checks."""
    return (
        ev.id,
        ev.event_type,
        ev.agent_id,
        ev.task_id,
        _dumps(ev.payload),
        _dumps(ev.metadata),
        to_us(ev.timestamp),
        seq,
    )


def codec_event_row(seq: int, ev: EventModel) -> tuple[Any, ...]:
    """The same row built by the codec (with every check the storage makes)."""
    return (*codec.event_values(ev), seq)


def next_sequence(conn: apsw.Connection) -> int:
    last: Any = conn.execute(S.LAST_SEQUENCE).fetchall()[0][0]
    return int(last) + 1


def make_events(n: int) -> list[EventModel]:
    """``n`` events with time-ordered ids over 64 agents and 4 types."""
    return [
        EventModel.new(
            f"type-{i % 4}",
            {"n": i, "status": "ok", "tags": ["a", "b"]},
            agent_id=f"agent-{i % 64}",
        )
        for i in range(n)
    ]


def copy_events(events: Sequence[EventModel]) -> list[EventModel]:
    """Fresh copies (the storage sets ``sequence`` on what it stores)."""
    return [
        EventModel(e.id, e.event_type, e.agent_id, e.task_id, e.payload, e.metadata, e.timestamp)
        for e in events
    ]


# --- (a) 64 producers ---------------------------------------------------------------------------


async def storage_producers(storage: Storage, events: Sequence[EventModel]) -> None:
    async def producer(chunk: Sequence[EventModel]) -> None:
        store = storage.store_event
        for ev in chunk:
            await store(ev)

    await asyncio.gather(*(producer(events[p::PRODUCERS]) for p in range(PRODUCERS)))


def raw_commit_every(conn: apsw.Connection, events: Sequence[EventModel], every: int) -> None:
    seq = next_sequence(conn)
    if every == 1:
        for ev in events:
            conn.execute(S.INSERT_EVENT_AT, event_row(seq, ev))
            seq += 1
        return
    for i in range(0, len(events), every):
        rows = [event_row(seq + j, ev) for j, ev in enumerate(events[i : i + every])]
        seq += len(rows)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(S.INSERT_EVENT_AT, rows)
        conn.execute("COMMIT")


async def bench_a(opts: Options, work: Workdir) -> list[Result]:
    out: list[Result] = []
    for key, sync in (("a", "NORMAL"), ("a.full", "FULL")):
        if not opts.wants(key):
            continue
        n = opts.scale(64_000, 6_400) if sync == "NORMAL" else opts.scale(12_800, 3_200)
        n_row = opts.scale(12_000, 3_000) if sync == "NORMAL" else opts.scale(1_500, 400)
        events = make_events(n)
        runs: dict[str, list[Timing]] = {"storage": [], "raw64": [], "raw1": []}
        for _ in range(opts.repeat):
            if sync == "NORMAL":
                conn = raw_connection(await schema_file(work.path("raw64")), sync)
                runs["raw64"].append(timed(n, partial(raw_commit_every, conn, events, 64)))
                conn.close()
            conn = raw_connection(await schema_file(work.path("raw1")), sync)
            first = events[:n_row]
            runs["raw1"].append(timed(n_row, partial(raw_commit_every, conn, first, 1)))
            conn.close()
            storage = await open_storage(work.path("storage"), synchronous=sync.lower())
            fresh = copy_events(events)
            runs["storage"].append(await timed_async(n, partial(storage_producers, storage, fresh)))
            await storage.close()
        label = "synchronous=NORMAL" if sync == "NORMAL" else "synchronous=FULL"
        out.append(
            Result.of(key, "raw: commit every row", best(runs["raw1"]), unit="events", note=label)
        )
        if sync == "NORMAL":
            out.append(Result.of(key, "raw: commit every 64", best(runs["raw64"]), unit="events"))
            out.append(
                Result.of(
                    key,
                    "64 producers x store_event",
                    best(runs["storage"]),
                    unit="events",
                    baseline="raw: commit every 64",
                    target="≥ 50,000/s and ≥ 0.8x",
                )
            )
            out.append(
                Result.of(
                    key,
                    "  (same, vs commit every row)",
                    best(runs["storage"]),
                    unit="events",
                    baseline="raw: commit every row",
                )
            )
        else:
            out.append(
                Result.of(
                    key,
                    "64 producers x store_event",
                    best(runs["storage"]),
                    unit="events",
                    baseline="raw: commit every row",
                    target="≥ 4x",
                )
            )
    return out


# --- (b) store_events of 20,000 ---------------------------------------------------------------


def raw_batch(conn: apsw.Connection, events: Sequence[EventModel], build: Any) -> None:
    seq = next_sequence(conn)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(S.INSERT_EVENT_AT, [build(seq + i, ev) for i, ev in enumerate(events)])
    conn.execute("COMMIT")


def raw_batch_numbered_by_sqlite(conn: apsw.Connection, events: Sequence[EventModel]) -> None:
    """As the storage writes a run: the first row with its sequence, SQLite numbers the rest."""
    seq = next_sequence(conn)
    rows = [event_row(0, ev)[:-1] for ev in events]
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(S.INSERT_EVENT_AT, (*rows[0], seq))
    conn.executemany(S.INSERT_EVENT, rows[1:])
    conn.execute("COMMIT")


async def bench_b(opts: Options, work: Workdir) -> list[Result]:
    if not opts.wants("b"):
        return []
    n = opts.scale(20_000, 5_000)
    events = make_events(n)
    sides = ("raw", "codec", "numbered", "no-checkpoint", "storage")
    runs: dict[str, list[Timing]] = {side: [] for side in sides}
    # A run takes a fifth of a second: three times the usual rounds steady the best of each.
    for _ in range(3 * opts.repeat):
        for side, build in (("raw", event_row), ("codec", codec_event_row)):
            conn = raw_connection(await schema_file(work.path(side)))
            runs[side].append(timed(n, partial(raw_batch, conn, events, build)))
            conn.close()
        conn = raw_connection(await schema_file(work.path("numbered")))
        runs["numbered"].append(timed(n, partial(raw_batch_numbered_by_sqlite, conn, events)))
        conn.close()
        conn = raw_connection(await schema_file(work.path("no-checkpoint")))
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        runs["no-checkpoint"].append(timed(n, partial(raw_batch, conn, events, event_row)))
        conn.close()
        storage = await open_storage(work.path("storage"))
        fresh = copy_events(events)
        runs["storage"].append(await timed_async(n, partial(storage.store_events, fresh)))
        await storage.close()
    base = "raw: executemany, one transaction"
    informational = (
        ("codec", "  raw, rows built by the codec"),
        ("numbered", "  raw, SQLite numbering the rows"),
        ("no-checkpoint", "  raw, no checkpoint at COMMIT"),
    )
    return [
        Result.of("b", base, best(runs["raw"]), unit="events", note=f"{n:,} events in one call"),
        *(
            Result.of("b", label, best(runs[side]), unit="events", baseline=base)
            for side, label in informational
        ),
        Result.of(
            "b",
            "store_events",
            best(runs["storage"]),
            unit="events",
            baseline=base,
            target="≥ 0.8x",
        ),
    ]


# --- (c) sequential latency -----------------------------------------------------------------------


async def storage_latency(storage: Storage, events: Sequence[EventModel]) -> Timing:
    samples: list[float] = []
    clock = time.perf_counter
    store = storage.store_event
    c0, t0 = time.process_time(), clock()
    for ev in events:
        t = clock()
        await store(ev)
        samples.append(clock() - t)
    return Timing(len(events), clock() - t0, samples, time.process_time() - c0)


def raw_latency(conn: apsw.Connection, events: Sequence[EventModel]) -> Timing:
    samples: list[float] = []
    clock = time.perf_counter
    seq = next_sequence(conn)
    c0, t0 = time.process_time(), clock()
    for ev in events:
        t = clock()
        conn.execute(S.INSERT_EVENT_AT, event_row(seq, ev))
        samples.append(clock() - t)
        seq += 1
    return Timing(len(events), clock() - t0, samples, time.process_time() - c0)


async def bench_c(opts: Options, work: Workdir) -> list[Result]:
    if not opts.wants("c"):
        return []
    n = opts.scale(10_000, 2_000)
    events = make_events(n)
    raw_runs: list[Timing] = []
    storage_runs: list[Timing] = []
    for _ in range(opts.repeat):
        conn = raw_connection(await schema_file(work.path("raw")))
        raw_runs.append(raw_latency(conn, events))
        conn.close()
        storage = await open_storage(work.path("storage"))
        storage_runs.append(await storage_latency(storage, copy_events(events)))
        await storage.close()
    return [
        Result.of(
            "c",
            "raw: one commit per row",
            best(raw_runs),
            unit="events",
            note=f"{n:,} sequential awaited writes",
        ),
        Result.of(
            "c",
            "await store_event",
            best(storage_runs),
            unit="events",
            baseline="raw: one commit per row",
            target="p99 ≤ 1 ms, p99.9 ≤ 2 ms",
        ),
    ]


# --- (d) claim → complete -------------------------------------------------------------------------


RAW_CLAIM = S.claim_next(None)
#: The completion in one statement (the storage reads the task, then updates it).
RAW_COMPLETE = (
    S.task_update(tuple(rules.complete_changes(None, 0)))[: -len(" WHERE id = ?")]
    + " WHERE id = ? AND assigned_to = ? AND status IN ('assigned', 'running')"
    + " RETURNING "
    + ", ".join(codec.COLUMNS["tasks"])
)
#: Counting dependents down: a statement of its own, or done by a trigger of the schema.
RAW_RELEASE: str | None = getattr(S, "COMPLETE_DEPENDENCY", None)


def _task(row: Sequence[Any]) -> TaskModel:
    return codec.decode_task(dict(zip(codec.COLUMNS["tasks"], row, strict=True)))


def raw_drain(path: Path, total: int) -> None:
    """4 threads, each with its own connection, claim and complete until all are done."""
    done = 0
    lock = threading.Lock()
    lease_us = rules.DEFAULT_LEASE_US
    failures: list[BaseException] = []

    def worker(w: int) -> None:
        nonlocal done
        agent = f"worker-{w}"
        conn = raw_connection(path)
        try:
            while done < total:
                now = now_us()
                claim = (*rules.claim_changes(agent, now, lease_us).values(), now, now)
                conn.execute("BEGIN IMMEDIATE")
                rows = conn.execute(RAW_CLAIM, claim).fetchall()
                conn.execute("COMMIT")
                if not rows:
                    time.sleep(0)
                    continue
                task = _task(rows[0][:-1])  # the last column says whether a rate limit applies
                now = now_us()
                done_values = (*rules.complete_changes(None, now).values(), task.id, agent)
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(RAW_COMPLETE, done_values).fetchall()
                if RAW_RELEASE is not None:
                    conn.execute(RAW_RELEASE, (task.id,))
                conn.execute("COMMIT")
                _task(row[0])
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


async def storage_drain(storage: Storage, total: int) -> None:
    async def complete(task_id: str, agent: str) -> TaskModel:
        return await storage.complete_task(task_id, agent)

    await drain(storage.claim_next_task, complete, total, WORKERS)


async def bench_d(opts: Options, work: Workdir) -> list[Result]:
    if not opts.wants("d"):
        return []
    n = opts.scale(10_000, 1_000)
    raw_runs: list[Timing] = []
    storage_runs: list[Timing] = []
    for _ in range(opts.repeat):
        tasks = make_tasks(n)
        raw_path = work.path("raw")
        async with await open_storage(raw_path) as setup:
            await setup.store_tasks(tasks)
        raw_runs.append(timed(n, partial(raw_drain, raw_path, n)))
        storage = await open_storage(work.path("storage"))
        await storage.store_tasks(make_tasks(n))
        storage_runs.append(await timed_async(n, partial(storage_drain, storage, n)))
        await storage.close()
    return [
        Result.of(
            "d",
            "raw: 4 threads, UPDATE … RETURNING",
            best(raw_runs),
            unit="tasks",
            note=f"{n:,} tasks, half with a dependency, 4 workers",
        ),
        Result.of(
            "d",
            "4 coroutines: claim_next_task → complete_task",
            best(storage_runs),
            unit="tasks",
            baseline="raw: 4 threads, UPDATE … RETURNING",
            target="≥ 10,000/s and ≥ 0.9x",
        ),
    ]


# --- (e) point reads ------------------------------------------------------------------------------

AGENT_SELECT = S.GET_AGENT


async def bench_e(opts: Options, work: Workdir) -> list[Result]:
    if not opts.wants("e"):
        return []
    n = opts.scale(50_000, 5_000)
    agents = [
        AgentModel.new(f"agent {i}", "worker", ["search", "code"], metadata={"i": i, "zone": "a"})
        for i in range(1_000)
    ]
    ids = [agents[random.Random(i).randrange(len(agents))].id for i in range(n)]
    raw_path = work.path("raw")
    async with await open_storage(raw_path) as setup:
        for a in agents:
            await setup.store_agent(a)
    storage = await open_storage(work.path("storage"))
    for a in agents:
        await storage.store_agent(a)
    conn = raw_connection(raw_path)
    columns = codec.COLUMNS["agents"]

    def raw_reads() -> None:
        for agent_id in ids:
            row: Any = conn.execute(AGENT_SELECT, (agent_id,)).fetchone()
            codec.decode_agent(dict(zip(columns, row, strict=True)))

    async def storage_reads() -> None:
        get = storage.get_agent
        for agent_id in ids:
            await get(agent_id)

    raw_runs: list[Timing] = []
    storage_runs: list[Timing] = []
    try:
        for _ in range(opts.repeat):
            raw_runs.append(timed(n, raw_reads))
            storage_runs.append(await timed_async(n, storage_reads))
    finally:
        conn.close()
        await storage.close()
    return [
        Result.of(
            "e",
            "raw: point SELECT + decode_agent",
            best(raw_runs),
            unit="reads",
            note="1,000 agents, random ids",
        ),
        Result.of(
            "e",
            "await get_agent",
            best(storage_runs),
            unit="reads",
            baseline="raw: point SELECT + decode_agent",
            target="≥ 0.8x",
        ),
    ]


# --- (f) aggregated metrics ---------------------------------------------------------------------


def make_metrics(n: int, start: datetime) -> list[MetricModel]:
    rng = random.Random(6)
    out = []
    for i in range(n):
        m = MetricModel.new(
            "latency" if i % 4 else "throughput",
            rng.uniform(0.1, 250.0),
            "ms" if i % 4 else "ops",
            agent_id=f"agent-{i % 50}",
            tags={"zone": "a" if i % 3 else "b"},
        )
        m.timestamp = start + timedelta(microseconds=i * 10_000)
        out.append(m)
    return out


def raw_aggregate(conn: apsw.Connection, start: int, end: int) -> list[MetricModel]:
    """The crate's aggregate with the storage's SQL, built into the same models."""
    groups: list[Any] = conn.execute(S.AGGREGATE_BY_AGENT, ("latency", start, end)).fetchall()
    groups.sort(key=lambda g: crate_order(g[0], g[1]))
    return [crate_metric("latency", *g) for g in groups]


async def bench_f(opts: Options, work: Workdir) -> list[Result]:
    if not opts.wants("f"):
        return []
    n = opts.scale(100_000, 10_000)
    calls = opts.scale(10, 3)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    metrics = make_metrics(n, start)
    end = metrics[-1].timestamp
    raw_path = work.path("raw")
    async with await open_storage(raw_path) as setup:
        for i in range(0, n, 5_000):
            await setup.store_metrics(metrics[i : i + 5_000])
    storage = await open_storage(work.path("storage"))
    for i in range(0, n, 5_000):
        await storage.store_metrics(metrics[i : i + 5_000])
    conn = raw_connection(raw_path)
    s_us, e_us = to_us(start), to_us(end)

    def raw_calls() -> None:
        for _ in range(calls):
            raw_aggregate(conn, s_us, e_us)

    async def storage_calls() -> None:
        for _ in range(calls):
            await storage.get_aggregated_metrics("latency", start, end)

    raw_runs: list[Timing] = []
    storage_runs: list[Timing] = []
    try:
        expected = raw_aggregate(conn, s_us, e_us)
        got = await storage.get_aggregated_metrics("latency", start, end)
        assert [(m.agent_id, m.unit, m.tags["count"]) for m in got] == [
            (m.agent_id, m.unit, m.tags["count"]) for m in expected
        ], "storage and raw aggregates disagree"
        for _ in range(opts.repeat):
            raw_runs.append(timed(calls, raw_calls))
            storage_runs.append(await timed_async(calls, storage_calls))
    finally:
        conn.close()
        await storage.close()
    return [
        Result.of(
            "f",
            "raw: same aggregate SQL",
            best(raw_runs),
            unit="calls",
            note=f"{n:,} metric rows, {n * 3 // 4:,} of the type asked",
        ),
        Result.of(
            "f",
            "get_aggregated_metrics",
            best(storage_runs),
            unit="calls",
            baseline="raw: same aggregate SQL",
            target="≥ 0.8x",
        ),
    ]


# --- running ------------------------------------------------------------------------------------

BENCHES = (bench_a, bench_b, bench_c, bench_d, bench_e, bench_f)


async def run_all(opts: Options) -> list[Result]:
    """Every SQLite benchmark, as result rows with ratios filled."""
    work = Workdir()
    try:
        results: list[Result] = []
        for bench in BENCHES:
            results += await bench(opts, work)
        return fill_ratios(results)
    finally:
        work.cleanup()


def run(opts: Options) -> tuple[str, list[Result]]:
    """Run the module; returns its title and rows."""
    return TITLE, asyncio.run(run_all(opts))


if __name__ == "__main__":
    raise SystemExit(main_for(run, "python -m bench.sqlite_bench"))
