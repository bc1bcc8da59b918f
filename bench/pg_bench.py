"""PostgreSQL backend: claim → complete, event appends and point reads.

Each beside raw ``asyncpg`` running the same statements on the same tables in the same run,
and the claim → complete cycle also beside procrastinate (the PostgreSQL task queue a Python
user would pick), when it is installed (``pip install procrastinate``; only this benchmark
imports it).

* ``claims.4`` / ``claims.16``: 4 / 16 worker coroutines drain independent tasks
  (``claim_next_task`` → ``complete_task``); raw asyncpg runs a ``FOR UPDATE SKIP LOCKED``
  claim and a completion that also releases dependents, one round trip each; procrastinate
  defers as many no-op jobs and runs a worker with the same concurrency until the queue is
  empty.
* ``events.64``: 64 producers each awaiting ``store_event``; raw asyncpg inserts each event
  in its own autocommitted statement that takes its sequence from the same counter row.
* ``batch``: ``store_events`` of 20,000 events in one call; raw asyncpg takes the sequences
  and ``copy_records_to_table`` (or ``executemany``) in one transaction, rows built from the
  same models.
* ``reads``: ``get_agent`` point reads; raw asyncpg ``fetchrow`` of the same ``SELECT``
  decoded into the same model.

Server: ``$SWARM_BENCH_PG_URL``, else ``postgresql://postgres@127.0.0.1:5432/postgres``. The
benchmark works in a database of its own (``swarm_bench_<random>``) and drops it afterwards.

Run: ``python -m bench.pg_bench [--json] [--quick] [--repeat N] [--only KEY]`` with KEY one
of ``claims``, ``claims.4``, ``claims.16``, ``events``, ``batch``, ``reads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from ruv_swarm_persistence import codec, init_storage, rules
from ruv_swarm_persistence._time import now_us, to_us
from ruv_swarm_persistence.models import AgentModel, EventModel, TaskModel, TaskPriority
from ruv_swarm_persistence.storage import Storage

from .common import Options, Result, Timing, best, fill_ratios, timed_async

TITLE = "PostgreSQL backend vs raw asyncpg (same statements) and procrastinate"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "swarm"
PRODUCERS = 64
POOL_SIZE = 16  # connections for the storage and for the raw pool alike

# --- the database of one run ----------------------------------------------------------------


def _server_url() -> str:
    return os.environ.get("SWARM_BENCH_PG_URL") or DEFAULT_URL


def _with_database(url: str, database: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + database, p.query, p.fragment))


@contextlib.asynccontextmanager
async def bench_database() -> AsyncIterator[str]:
    """A fresh database for the run, dropped at the end; yields its URL."""
    import asyncpg

    admin_url = _server_url()
    name = "swarm_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class Env:
    """What every benchmark of the run shares: the database and a raw pool on its schema."""

    url: str
    raw: Any  # asyncpg.Pool with search_path set to the storage's schema
    procrastinate: bool  # installed, and its schema applied in the run's database

    async def open_storage(self) -> Storage:
        """A fresh storage on the run's schema (empties the tables first)."""
        await self.reset()
        return await init_storage(self.url, schema=SCHEMA, max_size=POOL_SIZE, min_size=4)

    async def reset(self) -> None:
        """Empty every table and restart the event counter, so each side starts alike."""
        async with self.raw.acquire() as conn:
            await conn.execute(
                "TRUNCATE task_dependencies, tasks, events, agents, messages, metrics, raw_events;"
                "UPDATE swarm_counters SET value = 0 WHERE name = 'events'"
            )
            await conn.execute("VACUUM ANALYZE")


async def open_env(url: str) -> Env:
    import asyncpg

    # Opening a storage once creates the schema (the migrations run then).
    storage = await init_storage(url, schema=SCHEMA)
    await storage.close()
    raw = await asyncpg.create_pool(
        url, min_size=4, max_size=POOL_SIZE, server_settings={"search_path": SCHEMA}
    )
    # The same table with an identity column: what a naive event log would use.
    await raw.execute(
        "CREATE TABLE raw_events (LIKE events INCLUDING INDEXES);"
        "ALTER TABLE raw_events ALTER COLUMN sequence ADD GENERATED BY DEFAULT AS IDENTITY"
    )
    try:
        pc = Procrastinate(url, 4)
    except ModuleNotFoundError:
        return Env(url, raw, procrastinate=False)
    await pc.open(apply_schema=True)
    await pc.close()
    return Env(url, raw, procrastinate=True)


async def alternate(
    repeat: int, sides: Sequence[Callable[[], Awaitable[Timing]]]
) -> list[list[Timing]]:
    """Run each side ``repeat`` times, alternating, so noise hits every side alike."""
    runs: list[list[Timing]] = [[] for _ in sides]
    for _ in range(repeat):
        for i, side in enumerate(sides):
            runs[i].append(await side())
    return runs


# --- claim → complete -----------------------------------------------------------------------

RAW_CLAIM = """
UPDATE tasks SET status = 'assigned', assigned_to = $1, lease_expires_at = $2 + $3,
       updated_at = $2
WHERE id = (
    SELECT id FROM tasks
    WHERE status = 'pending' AND unfinished_deps = 0 AND (run_after IS NULL OR run_after <= $2)
    ORDER BY priority DESC, created_at, id
    LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING id, task_type, priority, status, assigned_to, payload, result, error, retry_count,
          max_retries, dependencies, created_at, updated_at, started_at, completed_at,
          lease_expires_at, run_after, dedup_key, concurrency_key
"""
RAW_COMPLETE = """
WITH done AS (
    UPDATE tasks SET status = 'completed', result = $3, completed_at = $4, updated_at = $4,
           lease_expires_at = NULL
    WHERE id = $1 AND assigned_to = $2 AND status IN ('assigned', 'running')
    RETURNING id, task_type, priority, status, assigned_to, payload, result, error,
              retry_count, max_retries, dependencies, created_at, updated_at, started_at,
              completed_at, lease_expires_at, run_after, dedup_key, concurrency_key
), released AS (
    UPDATE tasks SET unfinished_deps = unfinished_deps - 1
    WHERE id IN (SELECT d.task_id FROM task_dependencies d JOIN done ON d.depends_on = done.id)
)
SELECT * FROM done
"""


def make_tasks(n: int) -> list[TaskModel]:
    return [TaskModel.new("noop", {"i": i}, TaskPriority(i % 4)) for i in range(n)]


async def seed_tasks(storage: Storage, n: int) -> None:
    tasks = make_tasks(n)
    for i in range(0, n, 2000):
        await storage.store_tasks(tasks[i : i + 2000])


async def drain_storage(storage: Storage, workers: int) -> int:
    done = 0

    async def worker(agent: str) -> None:
        nonlocal done
        while (task := await storage.claim_next_task(agent)) is not None:
            await storage.complete_task(task.id, agent)
            done += 1

    await asyncio.gather(*(worker(f"worker-{i}") for i in range(workers)))
    return done


async def drain_raw(pool: Any, workers: int) -> int:
    done = 0
    lease = rules.DEFAULT_LEASE_US

    async def worker(agent: str) -> None:
        nonlocal done
        while True:
            async with pool.acquire() as conn:
                row = await conn.fetchrow(RAW_CLAIM, agent, now_us(), lease)
            if row is None:
                return
            task = codec.decode_task(row)
            async with pool.acquire() as conn:
                row = await conn.fetchrow(RAW_COMPLETE, task.id, agent, None, now_us())
            assert row is not None
            codec.decode_task(row)
            done += 1

    await asyncio.gather(*(worker(f"worker-{i}") for i in range(workers)))
    return done


class Procrastinate:
    """A procrastinate app on the run's database with one no-op task (public schema)."""

    def __init__(self, url: str, pool_size: int) -> None:
        import procrastinate

        # It warns that an app built in ``__main__`` cannot be imported by a separate worker
        # process; this one runs its worker in-process.
        logging.getLogger("procrastinate").setLevel(logging.ERROR)
        connector = procrastinate.PsycopgConnector(conninfo=url, min_size=4, max_size=pool_size)
        self.app: Any = procrastinate.App(connector=connector)

        async def noop(i: int) -> None:
            return None

        self.noop: Any = self.app.task(name="noop")(noop)

    async def open(self, *, apply_schema: bool) -> None:
        await self.app.open_async()
        if apply_schema:
            await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def _execute(self, sql: str) -> list[Any]:
        async with self.app.connector.pool.connection() as conn:
            cur = await conn.execute(sql)
            return list(await cur.fetchall()) if cur.description else []

    async def defer(self, n: int) -> None:
        """Empty the queue, then defer ``n`` no-op jobs (in batches, untimed)."""
        await self._execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")
        for i in range(0, n, 2000):
            await self.noop.batch_defer_async(*({"i": j} for j in range(i, min(n, i + 2000))))
        await self._execute("ANALYZE procrastinate_jobs")

    async def drain(self, workers: int) -> None:
        """Run a worker with this concurrency until the queue is empty."""
        await self.app.run_worker_async(
            concurrency=workers,
            wait=False,
            listen_notify=False,
            install_signal_handlers=False,
            delete_jobs="never",
        )

    async def succeeded(self) -> int:
        rows = await self._execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        return int(rows[0][0])


async def bench_claims(env: Env, opts: Options, workers: int) -> list[Result]:
    key = f"claims.{workers}"
    if not (opts.wants("claims") or opts.wants(key)):
        return []
    n = opts.scale(2_000, 300)

    async def ours() -> Timing:
        storage = await env.open_storage()
        try:
            await seed_tasks(storage, n)
            t = await timed_async(n, lambda: drain_storage(storage, workers))
            left = await storage.get_pending_tasks()
            assert left == [], f"{len(left)} tasks left pending"
            return t
        finally:
            await storage.close()

    async def raw() -> Timing:
        storage = await env.open_storage()
        try:
            await seed_tasks(storage, n)
        finally:
            await storage.close()
        return await timed_async(n, lambda: drain_raw(env.raw, workers))

    sides: list[Callable[[], Awaitable[Timing]]] = [raw, ours]
    note = f"{workers} worker coroutines, {n:,} independent tasks"
    pc: Procrastinate | None = None
    if env.procrastinate:
        pc = Procrastinate(env.url, workers + 2)
        await pc.open(apply_schema=False)
        theirs_pc = pc

        async def theirs() -> Timing:
            await theirs_pc.defer(n)
            t = await timed_async(n, lambda: theirs_pc.drain(workers))
            done = await theirs_pc.succeeded()
            assert done == n, f"procrastinate ran {done} of {n} jobs"
            return t

        sides.append(theirs)
    else:
        note += "; procrastinate is not installed (pip install procrastinate)"
    try:
        runs = await alternate(opts.repeat, sides)
    finally:
        if pc is not None:
            await pc.close()
    raw_name = "raw asyncpg: SKIP LOCKED claim, complete"
    ours_name = "PostgresStorage claim_next_task → complete_task"
    ours_t, raw_t = best(runs[1]), best(runs[0])
    note += f"; storage = {ours_t.rate / raw_t.rate:.2f}x raw asyncpg"
    rows = [Result.of(key, raw_name, raw_t, unit="tasks", note=note)]
    if pc is None:
        rows.append(Result.of(key, ours_name, ours_t, unit="tasks", baseline=raw_name))
        return rows
    their_name = "procrastinate worker, no-op jobs"
    rows.append(Result.of(key, their_name, best(runs[2]), unit="tasks"))
    rows.append(
        Result.of(
            key,
            ours_name,
            ours_t,
            unit="tasks",
            baseline=their_name,
            target="≥ 3x procrastinate",
        )
    )
    return rows


# --- event appends --------------------------------------------------------------------------

EVENT_COLUMNS = ("sequence", "id", "event_type", "agent_id", "task_id", "payload", "metadata",
                 "timestamp")  # fmt: skip
RAW_APPEND = """
WITH c AS (UPDATE swarm_counters SET value = value + 1 WHERE name = 'events' RETURNING value)
INSERT INTO events (sequence, id, event_type, agent_id, task_id, payload, metadata, timestamp)
SELECT c.value, $1, $2, $3, $4, $5, $6, $7 FROM c
RETURNING sequence
"""
RAW_APPEND_IDENTITY = """
INSERT INTO raw_events (id, event_type, agent_id, task_id, payload, metadata, timestamp)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING sequence
"""
TAKE_SEQUENCES = """
UPDATE swarm_counters SET value = value + $1 WHERE name = 'events' RETURNING value
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def event_row(e: EventModel) -> tuple[Any, ...]:
    """The columns of an event without its sequence, built as a hand-written client would."""
    return (
        e.id,
        e.event_type,
        e.agent_id,
        e.task_id,
        _dumps(e.payload),
        _dumps(e.metadata),
        to_us(e.timestamp),
    )


def make_events(n: int, agents: int = 64) -> list[EventModel]:
    return [
        EventModel.new("step", {"i": i, "note": "progress"}, agent_id=f"agent-{i % agents}")
        for i in range(n)
    ]


async def produce(events: list[EventModel], append: Callable[[EventModel], Awaitable[Any]]) -> None:
    """``PRODUCERS`` coroutines, each awaiting its share of the appends one at a time."""

    async def producer(share: list[EventModel]) -> None:
        for e in share:
            await append(e)

    await asyncio.gather(*(producer(events[i::PRODUCERS]) for i in range(PRODUCERS)))


async def bench_events(env: Env, opts: Options) -> list[Result]:
    if not opts.wants("events"):
        return []
    n = opts.scale(3_200, 640)
    key = f"events.{PRODUCERS}"
    pool = env.raw

    async def ours() -> Timing:
        storage = await env.open_storage()
        try:
            events = make_events(n)
            return await timed_async(n, lambda: produce(events, storage.store_event))
        finally:
            await storage.close()

    def raw(statement: str) -> Callable[[], Awaitable[Timing]]:
        async def side() -> Timing:
            await env.reset()
            events = make_events(n)

            async def append(e: EventModel) -> None:
                e.sequence = await pool.fetchval(statement, *event_row(e))

            return await timed_async(n, lambda: produce(events, append))

        return side

    runs = await alternate(opts.repeat, [raw(RAW_APPEND), raw(RAW_APPEND_IDENTITY), ours])
    base = "raw asyncpg: one autocommit INSERT per event, same counter"
    note = (
        f"{PRODUCERS} producers, {n:,} events; {POOL_SIZE} connections on each side; the identity "
        "column gives up sequences in commit order"
    )
    return [
        Result.of(key, base, best(runs[0]), unit="events", note=note),
        Result.of(
            key,
            "raw asyncpg: one autocommit INSERT per event, identity column",
            best(runs[1]),
            unit="events",
        ),
        Result.of(
            key,
            "PostgresStorage.store_event",
            best(runs[2]),
            unit="events",
            baseline=base,
            target="≥ 2x raw autocommit",
        ),
    ]


async def bench_batch(env: Env, opts: Options) -> list[Result]:
    if not opts.wants("batch"):
        return []
    n = opts.scale(20_000, 2_000)
    pool = env.raw

    async def ours() -> Timing:
        storage = await env.open_storage()
        try:
            events = make_events(n)
            return await timed_async(n, lambda: storage.store_events(events))
        finally:
            await storage.close()

    async def raw(copy: bool) -> Timing:
        await env.reset()
        events = make_events(n)

        async def append_all() -> None:
            rows = [event_row(e) for e in events]
            async with pool.acquire() as conn, conn.transaction():
                last = await conn.fetchval(TAKE_SEQUENCES, len(rows))
                first = last - len(rows) + 1
                records = [(first + i, *row) for i, row in enumerate(rows)]
                if copy:
                    await conn.copy_records_to_table(
                        "events", records=records, columns=EVENT_COLUMNS, schema_name=SCHEMA
                    )
                else:
                    await conn.executemany(
                        "INSERT INTO events (sequence, id, event_type, agent_id, task_id, "
                        "payload, metadata, timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        records,
                    )
            for i, e in enumerate(events):
                e.sequence = first + i

        return await timed_async(n, append_all)

    async def raw_copy() -> Timing:
        return await raw(copy=True)

    async def raw_executemany() -> Timing:
        return await raw(copy=False)

    runs = await alternate(opts.repeat, [raw_copy, raw_executemany, ours])
    base = "raw asyncpg: copy_records_to_table"
    return [
        Result.of("batch", base, best(runs[0]), unit="events", note=f"{n:,} events in one call"),
        Result.of("batch", "raw asyncpg: executemany", best(runs[1]), unit="events"),
        Result.of(
            "batch",
            "PostgresStorage.store_events",
            best(runs[2]),
            unit="events",
            baseline=base,
            target="≥ 0.7x raw",
        ),
    ]


# --- point reads ----------------------------------------------------------------------------

RAW_GET_AGENT = """
SELECT id, name, agent_type, status, capabilities, metadata, heartbeat, created_at, updated_at
FROM agents WHERE id = $1
"""


async def bench_reads(env: Env, opts: Options) -> list[Result]:
    if not opts.wants("reads"):
        return []
    n = opts.scale(10_000, 1_000)
    storage = await env.open_storage()
    try:
        agents = [
            AgentModel.new(f"a{i}", "worker", ["x", "y"], metadata={"i": i}) for i in range(1000)
        ]
        for a in agents:
            await storage.store_agent(a)
        ids = [agents[(i * 7919) % len(agents)].id for i in range(n)]

        async def ours() -> Timing:
            async def reads() -> None:
                get = storage.get_agent
                for agent_id in ids:
                    await get(agent_id)

            return await timed_async(n, reads)

        async def raw() -> Timing:
            async def reads() -> None:
                async with env.raw.acquire() as conn:
                    for agent_id in ids:
                        row = await conn.fetchrow(RAW_GET_AGENT, agent_id)
                        codec.decode_agent(row)

            return await timed_async(n, reads)

        async def raw_pool() -> Timing:
            async def reads() -> None:
                fetchrow = env.raw.fetchrow
                for agent_id in ids:
                    codec.decode_agent(await fetchrow(RAW_GET_AGENT, agent_id))

            return await timed_async(n, reads)

        runs = await alternate(opts.repeat, [raw, raw_pool, ours])
    finally:
        await storage.close()
    base = "raw asyncpg: fetchrow on a pool + decode_agent"
    held = best(runs[0])
    note = (
        f"{n:,} sequential reads of 1,000 agents; storage = "
        f"{best(runs[2]).rate / held.rate:.2f}x raw on one held connection"
    )
    return [
        Result.of("reads", "raw asyncpg: fetchrow on one held connection + decode_agent",
                  held, unit="reads", note=note),
        Result.of("reads", base, best(runs[1]), unit="reads"),
        Result.of("reads", "PostgresStorage.get_agent", best(runs[2]), unit="reads",
                  baseline=base),
    ]  # fmt: skip


# --- the run --------------------------------------------------------------------------------


async def run_all(opts: Options) -> list[Result]:
    """Every PostgreSQL benchmark, as result rows with ratios filled."""
    results: list[Result] = []
    async with bench_database() as url:
        env = await open_env(url)
        try:
            results += await bench_claims(env, opts, 4)
            results += await bench_claims(env, opts, 16)
            results += await bench_events(env, opts)
            results += await bench_batch(env, opts)
            results += await bench_reads(env, opts)
        finally:
            await env.raw.close()
    return fill_ratios(results)


class NoServer(Exception):
    """No PostgreSQL server answered; the benchmark is skipped."""


async def _check_server() -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(_server_url(), timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise NoServer(f"{type(exc).__name__}: {exc}") from exc
    await conn.close()


@contextlib.asynccontextmanager
async def optional_database(module: str) -> AsyncIterator[str | None]:
    """A database of the run's own (:func:`bench_database`), or ``None`` when no server
    answers, said on stderr for ``module`` so that its PostgreSQL rows are left out."""
    try:
        await _check_server()
    except NoServer as exc:
        print(f"{module}: PostgreSQL rows skipped: {exc}", file=sys.stderr)
        yield None
        return
    async with bench_database() as url:
        yield url


def run(opts: Options) -> tuple[str, list[Result]]:
    """Run the module; returns its title and rows (none when no server answers)."""
    try:
        asyncio.run(_check_server())
    except NoServer as exc:
        return f"{TITLE}: skipped, no PostgreSQL server at {_server_url()} ({exc})", []
    return TITLE, asyncio.run(run_all(opts))


def _main(argv: Sequence[str] | None = None) -> int:
    from .common import machine_info, parse_args, print_results, results_json

    opts = parse_args(argv, prog="python -m bench.pg_bench")
    started = time.perf_counter()
    title, results = run(opts)
    print_results(title, results, file=sys.stderr if opts.json else None)
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if opts.json:
        print(results_json(title, results, machine_info()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
