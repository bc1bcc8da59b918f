"""Dropped connections: server backends killed with ``pg_terminate_backend`` under load.

A caller sees either success or a transport error translated into the library's tree
(``DatabaseError``, or ``TransactionError``/``PoolError`` where those name what happened),
never a raw driver exception. Nothing is half-applied: a ``store_tasks`` or ``store_events``
batch and a transaction's writes are all there or none, every call that returned is there
afterwards, and the pool serves calls again once the killing stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from ruv_swarm_persistence.errors import (
    DatabaseError,
    PoolError,
    StorageError,
    TransactionError,
)
from ruv_swarm_persistence.models import (
    AgentModel,
    EventModel,
    MessageModel,
    TaskModel,
)
from ruv_swarm_persistence.storage import Storage

from ._support import Opener

#: What a call may raise when its connection dies under it.
TRANSPORT_ERRORS = (DatabaseError, PoolError, TransactionError)
PRODUCERS = 16
ROUNDS = 6
PROGRESS_CALLS = 30  # successful calls between two rounds of killing
CALL_TIMEOUT = 30.0  # a call that outlives this is reported as hung

KILL_OTHERS = """
    SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
"""
OTHERS_LEFT = """
    SELECT count(*)::int FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend' AND pid = ANY($1::int[])
"""
OTHER_PIDS = """
    SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
"""


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_url)
    yield conn
    await conn.close()


async def kill_others(admin: asyncpg.Connection) -> int:
    """Terminate every other client backend of the test database; wait until they are gone."""
    pids = await admin.fetchval(OTHER_PIDS)
    killed: int = await admin.fetchval(KILL_OTHERS)
    for _ in range(500):
        if not await admin.fetchval(OTHERS_LEFT, pids):
            break
        await asyncio.sleep(0.01)
    return killed


# --- bookkeeping of what the load wrote -----------------------------------------------------


@dataclass
class Write:
    """One call and the records it creates: ``(kind, id)``; kind ``done`` = a completed task."""

    label: str
    records: list[tuple[str, str]]


@dataclass
class Ledger:
    acked: list[Write] = field(default_factory=list)
    uncertain: list[Write] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    async def call(self, write: Write, op: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``op``; file ``write`` as acknowledged or uncertain by the outcome.

        Returns what ``op`` returned, or ``None`` when it failed.
        """
        try:
            result = await asyncio.wait_for(op(), CALL_TIMEOUT)
        except TimeoutError:
            self.untranslated.append(f"{write.label}: hung for {CALL_TIMEOUT}s")
            self.uncertain.append(write)
            return None
        except TRANSPORT_ERRORS as exc:
            self.errors[type(exc).__name__] += 1
            self.uncertain.append(write)
            return None
        except Exception as exc:
            self.untranslated.append(f"{write.label}: {type(exc).__module__}.{exc!r}")
            self.uncertain.append(write)
            return None
        self.acked.append(write)
        return result


async def present(storage: Storage, kind: str, record_id: str, event_ids: set[str]) -> bool:
    if kind == "agent":
        return await storage.get_agent(record_id) is not None
    if kind == "task":
        return await storage.get_task(record_id) is not None
    if kind == "done":
        task = await storage.get_task(record_id)
        return task is not None and task.status == "completed"
    if kind == "message":
        return await storage.get_message(record_id) is not None
    assert kind == "event", kind
    return record_id in event_ids


async def all_event_ids(storage: Storage) -> set[str]:
    ids: set[str] = set()
    after = 0
    while page := await storage.read_events(after, 1000):
        ids.update(e.id for e in page)
        after = page[-1].sequence or 0
    return ids


async def check_nothing_half_applied(storage: Storage, ledger: Ledger) -> None:
    events = await all_event_ids(storage)
    missing: list[str] = []
    partial: list[str] = []
    for w in ledger.acked:
        seen = [await present(storage, k, i, events) for k, i in w.records]
        if not all(seen):
            missing.append(w.label)
    for w in ledger.uncertain:
        seen = [await present(storage, k, i, events) for k, i in w.records if k != "done"]
        if any(seen) and not all(seen):
            partial.append(w.label)
    assert missing == [], f"acknowledged but missing: {missing[:5]}"
    assert partial == [], f"half-applied: {partial[:5]}"


# --- the load -------------------------------------------------------------------------------


async def one_op(storage: Storage, ledger: Ledger, n: int, producer: int) -> None:
    kind = n % 6
    tag = f"p{producer}-{n}"
    if kind == 0:
        chain: list[TaskModel] = []
        for j in range(5):
            deps = [chain[-1].id] if chain else []
            chain.append(TaskModel.new("fault", {"tag": tag, "j": j}, dependencies=deps))
        w = Write(f"store_tasks {tag}", [("task", t.id) for t in chain])
        await ledger.call(w, lambda: storage.store_tasks(chain))
    elif kind == 1:
        agent = AgentModel.new(f"agent-{tag}", "worker", ["x"])
        task = TaskModel.new("fault", {"tag": tag})
        event = EventModel.new("tx", {"tag": tag}, agent_id=agent.id)
        message = MessageModel.new(agent.id, agent.id, "note", {"tag": tag})

        async def in_transaction() -> None:
            async with storage.transaction() as tx:
                await tx.store_agent(agent)
                await tx.store_task(task)
                await tx.store_event(event)
                await tx.store_message(message)

        records = [
            ("agent", agent.id),
            ("task", task.id),
            ("event", event.id),
            ("message", message.id),
        ]
        await ledger.call(Write(f"transaction {tag}", records), in_transaction)
    elif kind == 2:
        event = EventModel.new("single", {"tag": tag})
        await ledger.call(
            Write(f"store_event {tag}", [("event", event.id)]), lambda: storage.store_event(event)
        )
    elif kind == 3:
        batch = [EventModel.new("batch", {"tag": tag, "j": j}) for j in range(10)]
        await ledger.call(
            Write(f"store_events {tag}", [("event", e.id) for e in batch]),
            lambda: storage.store_events(batch),
        )
    elif kind == 4:
        agent_id = f"worker-{producer}"
        claim = Write(f"claim {tag}", [])
        task = await ledger.call(claim, lambda: storage.claim_next_task(agent_id))
        if isinstance(task, TaskModel):
            done = Write(f"complete {tag}", [("done", task.id)])
            await ledger.call(done, lambda: storage.complete_task(task.id, agent_id, {"ok": 1}))
    else:
        message = MessageModel.new(f"from-{producer}", f"to-{producer}", "ping", {"tag": tag})
        await ledger.call(
            Write(f"store_message {tag}", [("message", message.id)]),
            lambda: storage.store_message(message),
        )


@pytest.mark.slow
async def test_load_survives_killed_backends_without_half_applied_writes(
    open_storage: Opener, admin: asyncpg.Connection
) -> None:
    storage = await open_storage()
    ledger = Ledger()
    stop = asyncio.Event()
    killed: list[int] = []

    async def produce(producer: int) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            await one_op(storage, ledger, n, producer)

    async def progress(calls: int) -> None:
        """Wait until ``calls`` more calls succeeded: the load runs (again)."""
        target = len(ledger.acked) + calls
        for _ in range(int(CALL_TIMEOUT / 0.01)):
            if len(ledger.acked) >= target or ledger.untranslated:
                return
            await asyncio.sleep(0.01)
        pytest.fail(f"no progress: {len(ledger.acked)} of {target} calls succeeded")

    producers = [asyncio.create_task(produce(p)) for p in range(PRODUCERS)]
    try:
        for _ in range(ROUNDS):
            await progress(PROGRESS_CALLS)
            killed.append(await kill_others(admin))
        await progress(PROGRESS_CALLS)
        stop.set()
        await asyncio.gather(*producers)

        assert ledger.untranslated == [], ledger.untranslated[:5]
        assert all(n > 0 for n in killed), killed

        # The pool serves every call again once the killing stops.
        recovered = Ledger()
        for n in range(60):
            await one_op(storage, recovered, n, PRODUCERS + 1)
        assert recovered.untranslated == []
        assert recovered.uncertain == [], recovered.errors

        await check_nothing_half_applied(storage, ledger)
        await check_nothing_half_applied(storage, recovered)
    finally:
        stop.set()
        for task in producers:
            task.cancel()
        await asyncio.gather(*producers, return_exceptions=True)


async def test_idle_pool_after_kill_costs_at_most_one_failed_call(
    open_storage: Opener, admin: asyncpg.Connection
) -> None:
    storage = await open_storage()
    agent = AgentModel.new("survivor", "worker")
    await storage.store_agent(agent)
    # Warm several pool connections so that all of them die.
    await asyncio.gather(*(storage.get_agent(agent.id) for _ in range(8)))
    for _ in range(3):
        assert await kill_others(admin) > 0
        failures: list[BaseException] = []
        for _ in range(10):
            try:
                got = await storage.get_agent(agent.id)
            except StorageError as exc:
                failures.append(exc)
            else:
                assert got == agent
        assert len(failures) <= 1, failures
        assert all(isinstance(e, TRANSPORT_ERRORS) for e in failures), failures
        assert all(isinstance(e.__cause__, Exception) for e in failures)


async def test_transaction_whose_connection_dies_leaves_nothing(
    open_storage: Opener, admin: asyncpg.Connection
) -> None:
    storage = await open_storage()
    agent = AgentModel.new("doomed", "worker")
    task = TaskModel.new("doomed")
    later = EventModel.new("after-kill")

    async def cut_short() -> None:
        async with storage.transaction() as tx:
            await tx.store_agent(agent)
            await tx.store_task(task)
            assert await kill_others(admin) > 0
            await tx.store_event(later)

    with pytest.raises(TRANSPORT_ERRORS):
        await cut_short()
    assert await storage.get_agent(agent.id) is None
    assert await storage.get_task(task.id) is None
    assert later.id not in await all_event_ids(storage)

    # The storage carries on with a fresh connection.
    await storage.store_agent(agent)
    assert await storage.get_agent(agent.id) == agent


async def test_commit_on_a_dead_connection_fails_and_applies_nothing(
    open_storage: Opener, admin: asyncpg.Connection
) -> None:
    storage = await open_storage()
    tasks = [TaskModel.new("doomed") for _ in range(3)]
    tx = await storage.begin_transaction()
    await tx.store_tasks(tasks)
    assert await kill_others(admin) > 0
    with pytest.raises(TRANSPORT_ERRORS):
        await tx.commit()
    assert not tx.is_active
    with contextlib.suppress(StorageError):
        await tx.rollback()
    for t in tasks:
        assert await storage.get_task(t.id) is None
