"""Memory backend: event appends, the claim → complete cycle and point reads.

Each beside a plain-dict baseline doing the same bookkeeping in the same run: the same strict
validation (``codec.encode_*``), the same indexes (id, sequence, per agent, per type; a ready
heap and dependency counts for tasks) and the same decoding of what a call returns. What the
baseline leaves out is exactly what the backend adds: transactions, the gate, waiters, leases.

Run: ``python -m bench.memory_bench [--json] [--quick]``.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import orjson

from ruv_swarm_persistence import codec, rules
from ruv_swarm_persistence._time import now_us, to_us
from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.codec import Record
from ruv_swarm_persistence.errors import ConflictError
from ruv_swarm_persistence.models import AgentModel, EventModel, TaskModel

from .common import (
    Options,
    Result,
    Timing,
    best,
    drain,
    fill_ratios,
    main_for,
    make_tasks,
    timed_async,
)

TITLE = "Memory backend vs a plain dict doing the same bookkeeping"
PRODUCERS = 64

# --- the plain-dict baseline ------------------------------------------------------------


class DictEvents:
    """An append-only event log in dicts: validation, sequence and the same three indexes."""

    encode: Callable[[EventModel], Record] = staticmethod(codec.encode_event)

    def __init__(self) -> None:
        self.events: list[Record] = []
        self.ids: dict[str, Record] = {}
        self.by_agent: dict[str, list[Record]] = {}
        self.by_type: dict[str, list[Record]] = {}
        self.seq = 0

    async def store_event(self, event: EventModel) -> int:
        rec = self.encode(event)
        if rec["id"] in self.ids:
            raise ConflictError("event", rec["id"])
        self.seq += 1
        rec["sequence"] = self.seq
        self.ids[rec["id"]] = rec
        self.events.append(rec)
        if rec["agent_id"] is not None:
            self.by_agent.setdefault(rec["agent_id"], []).append(rec)
        self.by_type.setdefault(rec["event_type"], []).append(rec)
        event.sequence = self.seq
        return self.seq


def unchecked_record(event: EventModel, limits: codec.Limits = codec.DEFAULT_LIMITS) -> Record:
    """An event's record built by hand: JSON encoded, nothing checked."""
    return {
        "id": event.id,
        "event_type": event.event_type,
        "agent_id": event.agent_id,
        "task_id": event.task_id,
        "payload": orjson.dumps(event.payload).decode(),
        "metadata": orjson.dumps(event.metadata).decode(),
        "timestamp": to_us(event.timestamp),
        "sequence": None,
    }


class UncheckedDictEvents(DictEvents):
    """The same store with records built by :func:`unchecked_record`."""

    encode = staticmethod(unchecked_record)


class DictQueue:
    """A task queue in dicts: ready heap, unfinished-dependency counts, dependents lists."""

    def __init__(self) -> None:
        self.tasks: dict[str, Record] = {}
        self.unfinished: dict[str, int] = {}
        self.dependents: dict[str, list[str]] = {}
        self.ready: list[tuple[int, int, str]] = []

    def store_tasks(self, tasks: Sequence[TaskModel]) -> None:
        for t in tasks:
            rec = codec.encode_task(t)
            deps = t.dependencies
            self.tasks[rec["id"]] = rec
            self.unfinished[rec["id"]] = sum(
                1 for d in deps if self.tasks[d]["status"] != rules.COMPLETED
            )
            for d in deps:
                self.dependents.setdefault(d, []).append(rec["id"])
            if self.unfinished[rec["id"]] == 0:
                heapq.heappush(self.ready, (-rec["priority"], rec["created_at"], rec["id"]))

    async def claim_next_task(self, agent_id: str, lease_us: int) -> TaskModel | None:
        if not self.ready:
            return None
        _, _, task_id = heapq.heappop(self.ready)
        now = now_us()
        rec = {**self.tasks[task_id], **rules.claim_changes(agent_id, now, lease_us)}
        self.tasks[task_id] = rec
        return codec.decode_task(rec)

    async def complete_task(self, task_id: str, agent_id: str) -> TaskModel:
        old = self.tasks[task_id]
        if old["status"] not in rules.ACTIVE or old["assigned_to"] != agent_id:
            raise AssertionError("not held")
        now = now_us()
        rec = {**old, **rules.complete_changes(None, now)}
        self.tasks[task_id] = rec
        for dep in self.dependents.get(task_id, ()):
            self.unfinished[dep] -= 1
            if self.unfinished[dep] == 0:
                d = self.tasks[dep]
                heapq.heappush(self.ready, (-d["priority"], d["created_at"], dep))
        return codec.decode_task(rec)


# --- workloads --------------------------------------------------------------------------


def make_events(n: int) -> list[EventModel]:
    """``n`` events with time-ordered ids, spread over 64 agents and 4 types."""
    return [
        EventModel.new(f"type-{i % 4}", {"n": i, "ok": True}, agent_id=f"agent-{i % 64}")
        for i in range(n)
    ]


StoreEvent = Callable[[EventModel], Awaitable[int]]


async def sequential(store: StoreEvent, events: Sequence[EventModel]) -> None:
    for ev in events:
        await store(ev)


async def producers_prebuilt(store: StoreEvent, chunks: Sequence[Sequence[EventModel]]) -> None:
    """One producer per chunk.

    Each producer's events were built together (as a producer builds its own), so they lie
    together in memory: handing each producer every 64th event of one list instead makes the
    run mostly cache misses, a cost of the benchmark rather than of the store.
    """

    async def producer(chunk: Sequence[EventModel]) -> None:
        for ev in chunk:
            await store(ev)

    await asyncio.gather(*(producer(chunk) for chunk in chunks))


async def producers_building(store: StoreEvent, n: int) -> None:
    async def producer(p: int) -> None:
        agent = f"agent-{p}"
        for i in range(p, n, PRODUCERS):
            await store(EventModel.new(f"type-{i % 4}", {"n": i, "ok": True}, agent_id=agent))

    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))


# --- the benchmarks -----------------------------------------------------------------------


EVENT_CASES = (
    ("events.seq", "sequential, events built beforehand"),
    ("events.64", "64 producers, events built beforehand"),
    ("events.64build", "64 producers, each building its events"),
)


async def _append_run(key: str, store: StoreEvent, n: int) -> Timing:
    if key == "events.64build":
        return await timed_async(n, lambda: producers_building(store, n))
    if key == "events.seq":
        events = make_events(n)
        return await timed_async(n, lambda: sequential(store, events))
    chunks = [make_events(n // PRODUCERS) for _ in range(PRODUCERS)]
    return await timed_async(n // PRODUCERS * PRODUCERS, lambda: producers_prebuilt(store, chunks))


async def bench_events(opts: Options) -> list[Result]:
    n = opts.scale(200_000, 20_000)
    out: list[Result] = []
    for key, label in EVENT_CASES:
        if not opts.wants(key):
            continue
        dict_runs: list[Timing] = []
        unchecked_runs: list[Timing] = []
        memory_runs: list[Timing] = []
        for _ in range(opts.repeat):
            dict_runs.append(await _append_run(key, DictEvents().store_event, n))
            unchecked_runs.append(await _append_run(key, UncheckedDictEvents().store_event, n))
            storage = MemoryStorage()
            memory_runs.append(await _append_run(key, storage.store_event, n))
            await storage.close()
        target = "≥ 200,000 events/s" if key == "events.64" else ""
        out.append(Result.of(key, "plain dict", best(dict_runs), unit="events", note=label))
        out.append(
            Result.of(
                key,
                "  plain dict, JSON encoded but nothing checked",
                best(unchecked_runs),
                unit="events",
                baseline="plain dict",
            )
        )
        out.append(
            Result.of(
                key,
                "MemoryStorage.store_event",
                best(memory_runs),
                unit="events",
                baseline="plain dict",
                target=target,
            )
        )
    return out


async def bench_claims(opts: Options) -> list[Result]:
    if not opts.wants("claims"):
        return []
    n = opts.scale(10_000, 2_000)
    lease_us = rules.DEFAULT_LEASE_US
    dict_runs: list[Timing] = []
    memory_runs: list[Timing] = []
    for _ in range(opts.repeat):
        q = DictQueue()
        q.store_tasks(make_tasks(n))

        async def d_claim(agent: str, q: DictQueue = q) -> TaskModel | None:
            return await q.claim_next_task(agent, lease_us)

        dict_runs.append(await timed_async(n, partial(drain, d_claim, q.complete_task, n)))

        storage = MemoryStorage()
        await storage.store_tasks(make_tasks(n))

        async def m_complete(task_id: str, agent: str, s: MemoryStorage = storage) -> TaskModel:
            return await s.complete_task(task_id, agent)

        memory_runs.append(
            await timed_async(n, partial(drain, storage.claim_next_task, m_complete, n))
        )
        await storage.close()
    note = f"4 worker coroutines, {n:,} tasks, half with a dependency"
    return [
        Result.of("claims", "plain dict heap", best(dict_runs), unit="tasks", note=note),
        Result.of(
            "claims",
            "MemoryStorage claim_next_task → complete_task",
            best(memory_runs),
            unit="tasks",
            baseline="plain dict heap",
        ),
    ]


async def bench_reads(opts: Options) -> list[Result]:
    if not opts.wants("reads"):
        return []
    n = opts.scale(200_000, 20_000)
    agents = [AgentModel.new(f"a{i}", "worker", ["x", "y"], metadata={"i": i}) for i in range(1000)]
    ids = [agents[(i * 7919) % len(agents)].id for i in range(n)]
    table = {a.id: codec.encode_agent(a) for a in agents}
    storage = MemoryStorage()
    for a in agents:
        await storage.store_agent(a)

    async def dict_reads() -> None:
        for agent_id in ids:
            codec.check_id(agent_id, "agent_id")
            rec = table.get(agent_id)
            if rec is not None:
                codec.decode_agent(rec)

    async def memory_reads() -> None:
        get = storage.get_agent
        for agent_id in ids:
            await get(agent_id)

    dict_runs: list[Timing] = []
    memory_runs: list[Timing] = []
    for _ in range(opts.repeat):
        dict_runs.append(await timed_async(n, dict_reads))
        memory_runs.append(await timed_async(n, memory_reads))
    await storage.close()
    return [
        Result.of("reads", "dict.get + decode_agent", best(dict_runs), unit="reads"),
        Result.of(
            "reads",
            "MemoryStorage.get_agent",
            best(memory_runs),
            unit="reads",
            baseline="dict.get + decode_agent",
        ),
    ]


async def run_all(opts: Options) -> list[Result]:
    """Every memory benchmark, as result rows with ratios filled."""
    results: list[Result] = []
    results += await bench_events(opts)
    results += await bench_claims(opts)
    results += await bench_reads(opts)
    return fill_ratios(results)


def run(opts: Options) -> tuple[str, list[Result]]:
    """Run the module; returns its title and rows."""
    return TITLE, asyncio.run(run_all(opts))


if __name__ == "__main__":
    raise SystemExit(main_for(run, "python -m bench.memory_bench"))
