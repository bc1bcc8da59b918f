"""The browser benchmark's side in the page: run under Pyodide by ``bench.browser_bench``.

Each measurement has a raw IndexedDB counterpart run in the same page, from Python, on the
same events, in a database of its own: hand-written code that turns each event's fields into
JSON (no checks) and stores it, timed from the models as the library is:

- ``events.64``: 64 producers each awaiting ``store_event`` one event at a time (group commit
  gathers them into shared IndexedDB transactions), beside one IndexedDB transaction per
  record, each awaited (one producer; and 64 producers doing the same);
- ``events.batch``: one ``store_events`` of 10,000 events, beside one transaction putting
  batches of 500 records per value, and one putting a value per record; and the engine's
  part alone (the events validated beforehand), to tell the backend's cost from the front's;
  and both beside the memory backend in the same page, which writes nowhere: the ceiling the
  library's own work (validation above all) sets;
- ``reads``: reading every event back (``read_events``), opening the storage (which loads
  the database), and point reads (``get_agent``), beside ``getAll`` plus ``json.loads`` and
  one awaited ``get`` per key.

Timings are the best of ``repeat`` runs, subject and baseline alternating.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ruv_swarm_persistence import AgentModel, EventModel, codec
from ruv_swarm_persistence.backends.browser import IndexedDBStorage, delete_database
from ruv_swarm_persistence.backends.memory import MemoryStorage

_names = itertools.count()


def _js() -> tuple[Any, Any]:
    """Raw IndexedDB helpers: open a one-store database, a promise of a transaction's end."""
    from pyodide.code import run_js

    open_db = run_js(
        """(name) => new Promise((resolve, reject) => {
             const r = indexedDB.open(name, 1);
             r.onupgradeneeded = () => r.result.createObjectStore("events");
             r.onsuccess = () => resolve(r.result);
             r.onerror = () => reject(r.error);
           })"""
    )
    done = run_js(
        """(tx) => new Promise((resolve, reject) => {
             tx.oncomplete = () => resolve();
             tx.onabort = () => reject(tx.error);
           })"""
    )
    return open_db, done


OPEN_DB, DONE = _js()


def _events(n: int) -> list[EventModel]:
    return [EventModel.new("bench", {"i": i, "agent": "worker-7"}) for i in range(n)]


def _plain(e: EventModel, seq: int) -> dict[str, Any]:
    """What hand-written code stores of an event: its fields, the time in microseconds."""
    return {
        "id": e.id,
        "event_type": e.event_type,
        "agent_id": e.agent_id,
        "task_id": e.task_id,
        "payload": e.payload,
        "metadata": e.metadata,
        "timestamp": round(e.timestamp.timestamp() * 1e6),
        "sequence": seq,
    }


def _texts(events: list[EventModel]) -> list[str]:
    """Each event as the JSON text of its record, as the library stores it."""
    out = []
    for seq, e in enumerate(events, 1):
        rec = codec.event_record(codec.event_values(e, codec.DEFAULT_LIMITS))
        rec["sequence"] = seq
        out.append(json.dumps(rec, separators=(",", ":")))
    return out


async def _timed(ops: int, fn: Callable[[], Awaitable[object]]) -> tuple[int, float]:
    started = time.perf_counter()
    await fn()
    return ops, time.perf_counter() - started


async def _raw_db() -> Any:
    return await OPEN_DB(f"raw-{next(_names)}")


async def _storage() -> IndexedDBStorage:
    return await IndexedDBStorage.open(f"lib-{next(_names)}")


# --- writes ------------------------------------------------------------------------------------


async def lib_producers(producers: int, each: int, *, memory: bool = False) -> tuple[int, float]:
    s: Any = MemoryStorage() if memory else await _storage()
    batches = [_events(each) for _ in range(producers)]

    async def producer(events: list[EventModel]) -> None:
        for e in events:
            await s.store_event(e)

    try:
        return await _timed(producers * each, lambda: asyncio.gather(*map(producer, batches)))
    finally:
        await s.close()


async def raw_tx_per_record(producers: int, each: int) -> tuple[int, float]:
    db = await _raw_db()
    events = _events(producers * each)

    async def producer(p: int) -> None:
        for k in range(p * each, (p + 1) * each):
            text = json.dumps(_plain(events[k], k), separators=(",", ":"))
            tx = db.transaction("events", "readwrite")
            tx.objectStore("events").put(text, k)
            await DONE(tx)

    try:
        return await _timed(len(events), lambda: asyncio.gather(*map(producer, range(producers))))
    finally:
        db.close()


async def lib_batch(n: int, *, memory: bool = False) -> tuple[int, float]:
    s: Any = MemoryStorage() if memory else await _storage()
    events = _events(n)
    try:
        return await _timed(n, lambda: s.store_events(events))
    finally:
        await s.close()


async def engine_batch(n: int) -> tuple[int, float]:
    """The engine's part of ``store_events``: the rows validated beforehand."""
    s = await _storage()
    rows = [codec.event_values(e, codec.DEFAULT_LIMITS) for e in _events(n)]
    try:
        return await _timed(n, lambda: s._engine.append_events(None, rows))
    finally:
        await s.close()


async def raw_batched(n: int, per_value: int) -> tuple[int, float]:
    db = await _raw_db()
    events = _events(n)

    async def write() -> None:
        values = [
            json.dumps(
                [_plain(e, start + i) for i, e in enumerate(events[start : start + per_value])],
                separators=(",", ":"),
            )
            for start in range(0, n, per_value)
        ]
        tx = db.transaction("events", "readwrite")
        store = tx.objectStore("events")
        for k, value in enumerate(values):
            store.put(value, k * per_value)
        await DONE(tx)

    try:
        return await _timed(n, write)
    finally:
        db.close()


# --- reads -------------------------------------------------------------------------------------


async def lib_reads(n: int, points: int) -> dict[str, tuple[int, float]]:
    """Read every event, reopen (load), point reads; on a storage holding ``n`` events."""
    s = await _storage()
    await s.store_events(_events(n))
    agents = [AgentModel.new(f"a{i}", "worker") for i in range(points)]
    for a in agents:
        await s.store_agent(a)
    out = {"read_all": await _timed(n, lambda: s.read_events(0, n))}

    async def gets() -> None:
        for a in agents:
            await s.get_agent(a.id)

    out["get"] = await _timed(points, gets)
    name = s.name
    await s.close()
    reopened: list[IndexedDBStorage] = []

    async def reopen() -> None:
        reopened.append(await IndexedDBStorage.open(name))

    out["open"] = await _timed(n, reopen)
    await reopened[0].close()
    return out


async def raw_reads(n: int, points: int) -> dict[str, tuple[int, float]]:
    db = await _raw_db()
    texts = _texts(_events(n))
    tx = db.transaction("events", "readwrite")
    store = tx.objectStore("events")
    for k, text in enumerate(texts):
        store.put(text, k)
    await DONE(tx)

    async def read_all() -> None:
        tx = db.transaction("events", "readonly")
        request = tx.objectStore("events").getAll()
        await DONE(tx)
        [json.loads(t) for t in request.result.to_py()]

    async def gets() -> None:
        for k in range(points):
            tx = db.transaction("events", "readonly")
            request = tx.objectStore("events").get(k)
            await DONE(tx)
            json.loads(request.result)

    try:
        return {"read_all": await _timed(n, read_all), "get": await _timed(points, gets)}
    finally:
        db.close()


# --- the run -----------------------------------------------------------------------------------


def _best(runs: list[tuple[int, float]]) -> tuple[int, float]:
    return min(runs, key=lambda r: r[1] / r[0])


async def run(quick: bool = False, repeat: int = 3) -> str:
    """Every measurement, ``repeat`` times each side; rows of the best runs, as JSON text:
    ``[bench, variant, baseline variant or None, ops, seconds]``."""
    producers, each, seq = 64, (5 if quick else 40), (100 if quick else 400)
    n, points = (1_000 if quick else 10_000), (100 if quick else 1_000)
    one_tx = "raw: 1 transaction per record, awaited"
    batched = "raw: 500 records per put, 1 transaction"
    get_all = f"raw: getAll + json.loads, {n} records"
    get_one = "raw: 1 awaited get per key"
    runs: dict[tuple[str, str, str | None], list[tuple[int, float]]] = {}

    def add(bench: str, variant: str, baseline: str | None, timing: tuple[int, float]) -> None:
        runs.setdefault((bench, variant, baseline), []).append(timing)

    for _ in range(repeat):
        add("events.64", one_tx, None, await raw_tx_per_record(1, seq))
        add("events.64", "raw: 64 producers, 1 transaction per record each", one_tx,
            await raw_tx_per_record(producers, each))  # fmt: skip
        add("events.64", "store_event, 64 producers", one_tx, await lib_producers(producers, each))
        add("events.64", "MemoryStorage, 64 producers (no IndexedDB: the ceiling)", one_tx,
            await lib_producers(producers, each, memory=True))  # fmt: skip
        add("events.batch", batched, None, await raw_batched(n, 500))
        add(
            "events.batch", "raw: 1 put per record, 1 transaction", batched, await raw_batched(n, 1)
        )
        add("events.batch", f"store_events({n})", batched, await lib_batch(n))
        add("events.batch", "its engine alone (events validated beforehand)", batched,
            await engine_batch(n))  # fmt: skip
        add("events.batch", f"MemoryStorage.store_events({n}) (no IndexedDB)", batched,
            await lib_batch(n, memory=True))  # fmt: skip
        raw = await raw_reads(n, points)
        add("reads", get_all, None, raw["read_all"])
        add("reads", get_one, None, raw["get"])
        lib = await lib_reads(n, points)
        add("reads", f"read_events, {n} events", get_all, lib["read_all"])
        add("reads", f"open, loading {n} events", get_all, lib["open"])
        add("reads", "get_agent", get_one, lib["get"])
    # Deleting the databases keeps the profile small across repeated runs.
    for i in range(next(_names)):
        for prefix in ("raw", "lib"):
            with contextlib.suppress(Exception):
                await delete_database(f"{prefix}-{i}")
    return json.dumps([[*key, *_best(timings)] for key, timings in runs.items()])
