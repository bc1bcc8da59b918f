"""SIGKILL in the middle of a write load loses nothing acknowledged and half-applies nothing.

A child process writes agents, task batches with dependencies, events (single and batched),
messages, five-row transactions and task completions, logging each write's rows before the
call and an acknowledgement after it returned. The parent kills it at a random moment, reopens
the same file and checks: every acknowledged write is there, every write group (a batch, a
transaction) is all there or not at all, the dependency bookkeeping still agrees with the
tasks, ``PRAGMA integrity_check`` says ok, and the storage keeps working. Ten rounds and more
on one file; a few kills land during start-up (opening, creating the schema).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apsw
import pytest

from ruv_swarm_persistence import (
    AgentModel,
    EventModel,
    MessageModel,
    MetricModel,
    QueryBuilder,
    TaskModel,
)
from ruv_swarm_persistence.storage import Storage

from . import _workers as W

ROUNDS = 12
MODELS: dict[str, type[Any]] = {
    "agents": AgentModel,
    "tasks": TaskModel,
    "events": EventModel,
    "messages": MessageModel,
    "metrics": MetricModel,
}


async def open_storage(db: Path) -> Storage:
    from ruv_swarm_persistence.backends.sqlite import SqliteStorage

    storage: Storage = await SqliteStorage.open(str(db))
    return storage


async def fetch(storage: Storage, kind: str, ids: Iterable[str]) -> dict[str, Any]:
    """The stored rows of ``kind`` among ``ids``, by id (through the public query API)."""
    wanted = sorted(set(ids))
    found: dict[str, Any] = {}
    for i in range(0, len(wanted), 500):
        builder = QueryBuilder(MODELS[kind]).where_in("id", wanted[i : i + 500])
        for row in await storage.query(builder):
            found[row.id] = row
    return found


Groups = list[tuple[dict[str, Any], bool]]


def kind_of(intent: dict[str, Any]) -> str:
    """What sort of write a group was."""
    if len(intent) > 1:
        return "transaction"
    (kind, ids), *_ = intent.items()
    return "event batch" if kind == "events" and len(ids) > 1 else kind


def groups_of(records: Sequence[dict[str, Any]]) -> Groups:
    """(intent, acknowledged) for every write the child attempted."""
    acked = {r["g"] for r in records if r.get("ack")}
    return [(r["intent"], r["g"] in acked) for r in records if "intent" in r]


async def verify(db: Path, groups: Groups, context: str) -> dict[str, int]:
    """Check one or more rounds' writes against the reopened file; returns counts."""
    storage = await open_storage(db)
    try:
        wanted: dict[str, set[str]] = {kind: set() for kind in MODELS}
        completes: list[tuple[str, bool]] = []
        for intent, _ in groups:
            for kind, ids in intent.items():
                if kind == "complete":  # maybe a task an earlier round stored
                    wanted["tasks"].add(ids)
                else:
                    wanted[kind].update(ids)
        found = {kind: await fetch(storage, kind, ids) for kind, ids in wanted.items()}
        counts = {"acked": 0, "unacked": 0, "unacked_applied": 0}
        for intent, acked in groups:
            if "complete" in intent:
                completes.append((intent["complete"], acked))
                continue
            present = {f"{kind}:{i}": i in found[kind] for kind, ids in intent.items() for i in ids}
            if acked:
                counts["acked"] += 1
                missing = [k for k, there in present.items() if not there]
                assert not missing, f"{context}: acknowledged write lost: {missing}"
            else:
                counts["unacked"] += 1
                there = set(present.values())
                assert len(there) == 1, f"{context}: write half-applied: {present}"
                counts["unacked_applied"] += there == {True}
        tasks = found["tasks"]
        for task_id, acked in completes:
            if acked:
                assert task_id in tasks, f"{context}: completed task {task_id} lost"
                assert tasks[task_id].status == "completed", (
                    f"{context}: acknowledged completion of {task_id} lost: {tasks[task_id]}"
                )
        sequences = [e.sequence for e in found["events"].values()]
        assert all(isinstance(s, int) and s > 0 for s in sequences), context
        assert len(set(sequences)) == len(sequences), f"{context}: duplicate event sequences"

        # Dependency bookkeeping survived: among these tasks, a pending one is ready exactly
        # when every dependency completed (no run_after, no retries in this load).
        ready = {t.id for t in await storage.get_ready_tasks()}
        for task in tasks.values():
            if task.status != "pending":
                continue
            deps_done = all(
                d in tasks and tasks[d].status == "completed" for d in task.dependencies
            )
            assert (task.id in ready) == deps_done, (
                f"{context}: task {task.id} ready={task.id in ready} but dependencies "
                f"{[(d, tasks[d].status if d in tasks else None) for d in task.dependencies]}"
            )

        # SQLite's own check, foreign keys, and the stored dependency counts.
        assert await storage.integrity_check() == [], context  # type: ignore[attr-defined]

        # And it keeps working.
        agent = AgentModel.new("after crash", "checker")
        await storage.store_agent(agent)
        seq = await storage.store_event(EventModel.new("after.crash", {"ok": 1}))
        assert (await storage.get_agent(agent.id)) == agent
        assert sequences == [] or seq > max(sequences)
        await storage.delete_agent(agent.id)
    finally:
        await storage.close()

    conn = apsw.Connection(str(db))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], context
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == [], context
    finally:
        conn.close()
    counts["rows"] = sum(len(f) for f in found.values())
    return counts


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_under_write_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    db = tmp_path / "crash.db"
    every: Groups = []
    acked_rounds = 0
    for r in range(ROUNDS):
        context = f"round {r} (CRASH_SEED={seed})"
        log = tmp_path / f"round{r}.log"
        proc = W.spawn("writer", db, log, f"r{r}", rng.randrange(2**32))
        try:
            if r % 4 == 3:
                # Kill during start-up: opening, maybe creating or migrating the schema.
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                W.wait_for(log, "ready", proc)
                time.sleep(rng.uniform(0.05, 0.7))
            assert proc.poll() is None, f"{context}: writer died by itself: {W.describe(log)}"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        records = W.read_log(log)
        assert not [x for x in records if "error" in x], f"{context}: {W.describe(log)}"
        groups = groups_of(records)
        counts = asyncio.run(verify(db, groups, context))
        acked_rounds += counts["acked"] > 0
        every += groups
    # The load really ran: most rounds had writes acknowledged before the kill, and every
    # sort of write was acknowledged at least once.
    assert acked_rounds >= ROUNDS // 2, f"only {acked_rounds} rounds wrote anything"
    acked_kinds = {kind_of(intent) for intent, acked in every if acked}
    assert acked_kinds == {
        "agents",
        "tasks",
        "events",
        "event batch",
        "messages",
        "transaction",
        "complete",
    }
    total = asyncio.run(verify(db, every, f"all rounds (CRASH_SEED={seed})"))
    assert total["acked"] > 0

    # The event log as a whole: sequences strictly increase, nothing lost between rounds.
    async def whole_log() -> None:
        storage = await open_storage(db)
        try:
            seen: list[int] = []
            after = 0
            while batch := await storage.read_events(after, 1000):
                seen += [e.sequence or 0 for e in batch]
                after = seen[-1]
            assert seen == sorted(set(seen))
            acked_events = {i for intent, acked in every if acked for i in intent.get("events", ())}
            assert len(seen) >= len(acked_events)
        finally:
            await storage.close()

    asyncio.run(whole_log())
