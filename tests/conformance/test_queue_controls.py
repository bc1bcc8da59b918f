"""Deduplication, concurrency and rate limits on every backend (see the testing module),
across processes on SQLite and PostgreSQL, and on databases written before them."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import codec
from ruv_swarm_persistence.migrations import bundled_migrations
from ruv_swarm_persistence.models import (
    AgentModel,
    EventModel,
    TaskModel,
    TaskStatus,
)
from ruv_swarm_persistence.storage import Storage
from ruv_swarm_persistence.testing.queue_controls import *  # noqa: F403
from tests import pgserver

# --- across processes -----------------------------------------------------------------------

PROCESSES = 4
#: Each process opens the storage, waits for a common start time, then runs its part with
#: four coroutines and prints what it got as JSON.
PROCESS = r"""
import asyncio, json, sys, time
from ruv_swarm_persistence.models import TaskModel

async def main() -> None:
    kind, target, schema, mode, name, start = sys.argv[1:7]
    if kind == "sqlite":
        from ruv_swarm_persistence.backends.sqlite import SqliteStorage
        s = await SqliteStorage.open(target)
    else:
        from ruv_swarm_persistence.backends.postgres import PostgresStorage
        s = await PostgresStorage.open(target, schema=schema)
    try:
        await asyncio.sleep(max(0.0, float(start) - time.time()))
        if mode == "dedup":
            out = await asyncio.gather(
                *(s.store_task(TaskModel.new("job", dedup_key="once")) for _ in range(4))
            )
        else:
            async def claimer(agent: str) -> list[str]:
                got = []
                while (task := await s.claim_next_task(agent)) is not None:
                    got.append(task.id)
                    if mode == "claim_complete":
                        await s.complete_task(task.id, agent)
                return got
            lists = await asyncio.gather(*(claimer(f"{name}-{i}") for i in range(4)))
            out = [x for got in lists for x in got]
    finally:
        await s.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@dataclass
class Shared:
    """A database that several processes open: how to name it, and a storage on it."""

    kind: str
    target: str
    schema: str
    storage: Storage


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shared]:
    if request.param == "sqlite":
        from ruv_swarm_persistence.backends.sqlite import SqliteStorage

        path = str(tmp_path / "shared.db")
        async with SqliteStorage.open(path) as s:
            yield Shared("sqlite", path, "", s)
        return
    from ruv_swarm_persistence.backends.postgres import PostgresStorage

    url = request.getfixturevalue("pg_url")
    schema = pgserver.new_schema_name("queue")
    try:
        async with await PostgresStorage.open(url, schema=schema) as s:
            yield Shared("postgres", url, schema, s)
    finally:
        await pgserver.drop_schema(url, schema)


async def _in_processes(db: Shared, mode: str) -> list[list[Any]]:
    start = time.time() + 3.0  # after every process has started and opened the storage
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PROCESS,
            db.kind,
            db.target,
            db.schema,
            mode,
            f"p{n}",
            str(start),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    results = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode(errors="replace")[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


async def test_four_processes_storing_one_dedup_key_store_one_task(shared: Shared) -> None:
    results = await _in_processes(shared, "dedup")
    ids = {task_id for got in results for task_id in got}
    assert len(ids) == 1
    assert [t.id for t in await shared.storage.get_pending_tasks()] == list(ids)


async def test_four_processes_claim_no_more_than_the_concurrency_limit(shared: Shared) -> None:
    s = shared.storage
    await s.set_concurrency_limit("k", 3)
    await s.store_tasks([TaskModel.new("job", {"i": i}, concurrency_key="k") for i in range(20)])
    results = await _in_processes(shared, "claim")
    claimed = [task_id for got in results for task_id in got]
    assert len(claimed) == len(set(claimed)) == 3
    held = [t for t in await s.get_pending_tasks()]
    assert len(held) == 17


async def test_four_processes_share_one_rate_limit(shared: Shared) -> None:
    s = shared.storage
    await s.set_rate_limit("k", 5, per=3600)
    await s.store_tasks([TaskModel.new("job", {"i": i}, concurrency_key="k") for i in range(20)])
    results = await _in_processes(shared, "claim_complete")
    claimed = [task_id for got in results for task_id in got]
    assert len(claimed) == len(set(claimed)) == 5
    assert await s.claim_next_task("late") is None


# --- a database written by the first schema (before the queue controls) -------------------------

_NEW_COLUMNS = ("dedup_key", "concurrency_key")
_OLD_TASK_COLUMNS = tuple(c for c in codec.COLUMNS["tasks"] if c not in _NEW_COLUMNS)


def _old_tasks() -> list[dict[str, Any]]:
    """Task records as the first schema stored them: a completed one and its dependent."""
    done = TaskModel.new("job", {"n": 1}, id="done")
    done.status, done.assigned_to, done.result = TaskStatus.Completed, "w", {"ok": True}
    done.completed_at = done.updated_at
    waiting = TaskModel.new("job", {"n": 2}, id="waiting", dependencies=["done"])
    recs = [codec.encode_task(t) for t in (done, waiting)]
    return [{c: r[c] for c in _OLD_TASK_COLUMNS} for r in recs]


async def _check_migrated(s: Storage, agent: AgentModel, event: EventModel) -> None:
    """The old rows are all there, usable, and the queue controls work on them."""
    assert await s.get_agent(agent.id) == agent
    assert [e.id for e in await s.read_events()] == [event.id]
    done = await s.get_task("done")
    assert done is not None
    assert done.result == {"ok": True}
    assert done.dedup_key is None
    claimed = await s.claim_next_task("w")
    assert claimed is not None
    assert claimed.id == "waiting"
    assert claimed.concurrency_key is None
    assert claimed.dependencies == ["done"]
    assert await s.store_task(TaskModel.new("job", id="a", dedup_key="k")) == "a"
    assert await s.store_task(TaskModel.new("job", id="b", dedup_key="k")) == "a"
    await s.set_concurrency_limit("c", 0)
    await s.store_task(TaskModel.new("job", id="c", concurrency_key="c"))
    assert [t.id for t in await s.get_ready_tasks()] == ["a", "c"]
    assert not await s.claim_task("c", "w")


async def test_a_sqlite_file_of_the_first_schema_is_migrated_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    import apsw

    from ruv_swarm_persistence.backends.sqlite import SqliteStorage, sql

    path = tmp_path / "first.db"
    initial = bundled_migrations("sqlite")[0]
    assert initial.version == 1
    agent = AgentModel.new("old", "worker", id="agent-1")
    event = EventModel.new("old.event", {"x": 1}, agent_id="agent-1")
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL")
        with conn:
            conn.execute(initial.up)
            conn.execute(sql.CREATE_MIGRATIONS)
            conn.execute(sql.RECORD_MIGRATION, (1, "core:initial", initial.checksum, 0))
            conn.execute(sql.INSERT_AGENT, tuple(codec.encode_agent(agent).values()))
            conn.execute(sql.INSERT_EVENT, codec.event_values(event))
            for rec in _old_tasks():
                cols = ", ".join(rec)
                conn.execute(
                    f"INSERT INTO tasks ({cols}) VALUES ({', '.join('?' * len(rec))})",
                    tuple(rec.values()),
                )
            conn.execute(sql.INSERT_DEPENDENCY, ("waiting", "done"))
    finally:
        conn.close()
    async with SqliteStorage.open(path) as s:
        await _check_migrated(s, agent, event)
    check = apsw.Connection(str(path))
    try:
        versions = [r[0] for r in check.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in bundled_migrations("sqlite")]
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        check.close()


async def test_a_postgres_schema_of_the_first_schema_is_migrated_and_keeps_its_data(
    pg_url: str,
) -> None:
    from ruv_swarm_persistence.backends.postgres import PostgresStorage, sql

    initial = bundled_migrations("postgres")[0]
    assert initial.version == 1
    agent = AgentModel.new("old", "worker", id="agent-1")
    event = EventModel.new("old.event", {"x": 1}, agent_id="agent-1")
    schema = pgserver.new_schema_name("first")
    conn = await pgserver.admin_connect(pg_url)
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA "{schema}"; SET LOCAL search_path = "{schema}"')
            await conn.execute(initial.up)
            await conn.execute(sql.CREATE_MIGRATIONS_TABLE)
            await conn.execute(sql.RECORD_MIGRATION, 1, "core:initial", initial.checksum, 0)
            await conn.execute(sql.INSERT_AGENT, *codec.encode_agent(agent).values())
            e = codec.encode_event(event)
            await conn.execute(
                "INSERT INTO events (sequence, id, event_type, agent_id, task_id, payload,"
                " metadata, timestamp) VALUES (1, $1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)",
                e["id"], e["event_type"], e["agent_id"], e["task_id"], e["payload"],
                e["metadata"], e["timestamp"],
            )  # fmt: skip
            await conn.execute("UPDATE swarm_counters SET value = 1 WHERE name = 'events'")
            for rec in _old_tasks():
                values = [rec[c] for c in _OLD_TASK_COLUMNS]
                casts = ["::jsonb" if c in ("payload", "result", "dependencies") else ""
                         for c in _OLD_TASK_COLUMNS]  # fmt: skip
                params = ", ".join(f"${i + 1}{cast}" for i, cast in enumerate(casts))
                await conn.execute(
                    f"INSERT INTO tasks ({', '.join(_OLD_TASK_COLUMNS)}) VALUES ({params})",
                    *values,
                )
            await conn.execute(
                "INSERT INTO task_dependencies (depends_on, task_id) VALUES ('done', 'waiting')"
            )
            await conn.execute("UPDATE tasks SET unfinished_deps = 0 WHERE id = 'waiting'")
    finally:
        await conn.close()
    try:
        async with await PostgresStorage.open(pg_url, schema=schema) as s:
            await _check_migrated(s, agent, event)
    finally:
        await pgserver.drop_schema(pg_url, schema)
