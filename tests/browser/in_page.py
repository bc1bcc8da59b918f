"""Python the browser tests run inside the page, under Pyodide (the page runs it at boot).

- :func:`run_suite` runs test functions of the conformance suite against ``IndexedDBStorage``:
  a small runner in place of pytest's (whose asyncio plugin needs a blocking event loop the
  browser does not have). It expands ``parametrize`` marks, provides the suite's fixtures
  (``storage``, ``clock``, ``storage_factory``: every storage a fresh IndexedDB database)
  and reports what passed, failed or was skipped, with tracebacks.
- :func:`write_swarm` and :func:`swarm_snapshot` write a swarm and read everything back;
  :func:`delete_swarm` deletes it.
- :func:`start_load` writes transactions and batches until the page dies, logging each one
  acknowledged; :func:`check_load` finds every one whole or absent.

Every function returns JSON text, which is what crosses to the test through Playwright.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import itertools
import json
import time
import traceback
from typing import Any

from ruv_swarm_persistence import (
    AgentModel,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
    TaskPriority,
)
from ruv_swarm_persistence.backends.browser import IndexedDBStorage, delete_database
from ruv_swarm_persistence.testing import FakeClock
from ruv_swarm_persistence.testing._support import snapshot

_databases = itertools.count()


def _cases(fn: Any) -> list[tuple[str, dict[str, Any]]]:
    """The parameter sets of a test function, as pytest's ``parametrize`` marks make them."""
    import pytest  # only pages that run the suite load it: its import takes seconds here

    cases: list[tuple[str, dict[str, Any]]] = [("", {})]
    for mark in reversed(getattr(fn, "pytestmark", [])):
        if mark.name != "parametrize":
            continue
        names = mark.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        ids = mark.kwargs.get("ids")
        expanded = []
        for i, value in enumerate(mark.args[1]):
            marks: Any = ()
            case_id = None
            if isinstance(value, type(pytest.param(None))):
                value, marks, case_id = value.values, value.marks, value.id
                value = value if len(names) > 1 else value[0]
            if any(m.name in ("skip", "skipif", "xfail") for m in marks):
                continue
            values = dict(zip(names, value if len(names) > 1 else [value], strict=True))
            if case_id is None:
                case_id = ids(value) if callable(ids) else ids[i] if ids else str(i)
            expanded.append((case_id, values))
        cases = [(f"{a}-{b}" if a else b, {**pa, **pb}) for a, pa in cases for b, pb in expanded]
    return cases


async def _run_case(fn: Any, params: dict[str, Any], timeout: float) -> tuple[str, str]:
    """Run one case: ``("passed" | "failed" | "skipped", detail)``."""
    import pytest

    made: list[IndexedDBStorage] = []

    async def storage_factory(**options: Any) -> IndexedDBStorage:
        s = await IndexedDBStorage.open(f"conformance-{next(_databases)}", **options)
        made.append(s)
        return s

    clock = FakeClock()
    fixtures: dict[str, Any] = {"clock": clock, "storage_factory": storage_factory}
    kwargs: dict[str, Any] = {}
    for name in inspect.signature(fn).parameters:
        if name in params:
            kwargs[name] = params[name]
        elif name == "storage":
            kwargs[name] = await storage_factory(clock=clock)
        elif name in fixtures:
            kwargs[name] = fixtures[name]
        else:
            return "skipped", f"needs the fixture {name!r}"
    try:
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            await asyncio.wait_for(result, timeout)
        return "passed", ""
    except pytest.skip.Exception as exc:
        return "skipped", str(exc)
    except BaseException:
        return "failed", traceback.format_exc()
    finally:
        # The databases stay: the profile is thrown away, and deleting each costs time.
        for s in made:
            await s.close()


async def run_suite(modules: list[str], timeout: float = 30.0) -> str:
    """Run every case of the suite modules; a JSON report."""
    report: dict[str, Any] = {"passed": 0, "skipped": [], "failed": [], "seconds": 0.0}
    started = time.monotonic()
    for module_name in modules:
        module = importlib.import_module(f"ruv_swarm_persistence.testing.{module_name}")
        for name, fn in vars(module).items():
            if not name.startswith("test_") or getattr(fn, "__module__", "") != module.__name__:
                continue
            if not inspect.isfunction(fn):
                continue
            for case_id, params in _cases(fn):
                test_id = f"{module_name}::{name}" + (f"[{case_id}]" if case_id else "")
                outcome, detail = await _run_case(fn, params, timeout)
                if outcome == "passed":
                    report["passed"] += 1
                else:
                    report[outcome].append([test_id, detail])
    report["seconds"] = time.monotonic() - started
    return json.dumps(report)


# --- persistence -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # datetimes, enums


async def swarm_snapshot(name: str) -> str:
    """Everything the database holds, as JSON (sorted by id where the API has no order)."""
    async with await IndexedDBStorage.open(name) as s:
        rows: dict[str, Any] = await snapshot(s)
        rows["limits"] = await s.list_queue_limits()
        rows["schedules"] = await s.list_schedules()
        rows["retention"] = await s.retention_report()
    for table in ("agents", "tasks", "messages", "metrics"):
        rows[table].sort(key=lambda m: m.id)
    return json.dumps(_plain(rows), sort_keys=True)


async def write_swarm(name: str) -> str:
    """Write a small swarm through every kind of write; its snapshot as JSON."""
    async with await IndexedDBStorage.open(name) as s:
        agents = [AgentModel.new(f"worker-{i}", "researcher", ["analysis"]) for i in range(3)]
        for a in agents:
            await s.store_agent(a)
        plan = TaskModel.new("plan", {"goal": "index"}, TaskPriority.High)
        build = TaskModel.new("build", {"n": 2**60}, dependencies=[plan.id])
        check = TaskModel.new("check", {"ratio": 37.0}, dependencies=[build.id])
        await s.store_tasks([plan, build, check])
        claimed = await s.claim_next_task(agents[0].id)
        assert claimed is not None
        assert claimed.id == plan.id
        await s.start_task(plan.id, agents[0].id)
        await s.complete_task(plan.id, agents[0].id, {"steps": 3})
        assert await s.claim_task(build.id, agents[1].id)
        await s.heartbeat(agents[2].id)
        async with s.transaction() as tx:
            await tx.store_event(EventModel.new("plan.done", {"ok": True}).with_task(plan.id))
            await tx.store_message(
                MessageModel.new(agents[0].id, agents[1].id, "handoff", {"task": build.id})
            )
        # A transaction rolled back leaves nothing behind.
        tx = await s.begin_transaction()
        await tx.store_agent(AgentModel.new("ghost", "none"))
        await tx.rollback()
        await s.store_events(
            [EventModel.new("tick", {"i": i}).with_agent(agents[i % 3].id) for i in range(50)]
        )
        await s.store_metrics(
            [MetricModel.new("cpu", 0.25 * i, "ratio").with_agent(agents[0].id) for i in range(5)]
        )
        unread = await s.get_unread_messages(agents[1].id)
        await s.mark_message_read(unread[0].id)
        await s.update_agent(agents[2])
        await s.delete_agent(agents[2].id)
        # The queue controls: limits, a claim in a rate limit's window, schedules, retention.
        await s.set_concurrency_limit("gpu", 2)
        await s.set_rate_limit("api", 1, per=3600)
        calls = [TaskModel.new("call", {"n": n}, concurrency_key="api") for n in (1, 2)]
        await s.store_tasks(calls)
        called = await s.claim_next_task(agents[0].id, ["call"])
        assert called is not None
        await s.store_schedule("tick", "1h", {"task_type": "tick", "concurrency_key": "gpu"})
        await s.store_schedule("paused", "30m", {"task_type": "tock"}, missed="run_once")
        await s.pause_schedule("paused")
        await s.apply_retention("metrics:3")
    return await swarm_snapshot(name)


async def rate_room(name: str) -> str:
    """Whether a claim of the rate-limited key ``write_swarm`` claimed once would go through
    (tried in a transaction rolled back: nothing is written)."""
    async with await IndexedDBStorage.open(name) as s:
        tx = await s.begin_transaction()
        try:
            claimed = await tx.claim_next_task("probe", ["call"])
        finally:
            await tx.rollback()
    return json.dumps(claimed is not None)


async def upgraded_from_version_1(name: str) -> str:
    """A database as version 1 of the layout left it (no queue-control stores), opened: its
    swarm, and the limit and schedule set then, read back after a reopen."""
    from pyodide.code import run_js

    from ruv_swarm_persistence import codec

    agent = AgentModel.new("old-worker", "researcher", ["analysis"], id="old-worker")
    make = run_js(
        """(name, agent) => new Promise((resolve, reject) => {
             const r = indexedDB.open(name, 1);
             r.onupgradeneeded = () => {
               for (const s of ["agents", "tasks", "events", "messages", "metrics", "meta"]) {
                 r.result.createObjectStore(s);
               }
               r.transaction.objectStore("agents").put(agent, "old-worker");
             };
             r.onsuccess = () => { r.result.close(); resolve(); };
             r.onerror = () => reject(r.error);
           })"""
    )
    await make(name, json.dumps(codec.encode_agent(agent)))
    async with await IndexedDBStorage.open(name) as s:
        agents = [a.id for a in await s.list_agents()]
        await s.set_concurrency_limit("gpu", 3)
        await s.store_schedule("tick", "1h", {"task_type": "tick"})
    async with await IndexedDBStorage.open(name, migrate=False) as s:
        limits = await s.list_queue_limits()
        schedules = [x.name for x in await s.list_schedules()]
    await delete_database(name)
    return json.dumps({"agents": agents, "limits": _plain(limits), "schedules": schedules})


async def delete_swarm(name: str) -> str:
    """Delete the database; whether a storage opened on the name afterwards is empty."""
    await delete_database(name)
    async with await IndexedDBStorage.open(name) as s:
        rows = await snapshot(s)
    return json.dumps(all(not v for v in rows.values()))


async def pyodide_guards() -> str:
    """What the parts that cannot run in a browser say, and what ``init_storage()`` opens."""
    from ruv_swarm_persistence import init_storage, sync
    from ruv_swarm_persistence.cli import main

    said: dict[str, Any] = {}
    async with init_storage() as s:
        said["default"] = [type(s).__name__, getattr(s, "name", None)]
        # The browser's answer to navigator.storage.persist(), asked at open.
        said["persisted"] = await s.request_persistence()
    for url in ("swarm.db", "postgresql://u@h/db"):
        try:
            await init_storage(url)
        except ImportError as exc:
            said[url] = str(exc)
    import ruv_swarm_persistence

    for name in ("backends.sqlite", "backends.postgres", "SqliteStorage", "PostgresStorage"):
        try:
            if name.startswith("backends."):
                importlib.import_module(f"ruv_swarm_persistence.{name}")
            else:
                getattr(ruv_swarm_persistence, name)
        except ImportError as exc:
            said[name] = str(exc)
    said["IndexedDBStorage"] = ruv_swarm_persistence.IndexedDBStorage is IndexedDBStorage
    try:
        sync.open_storage("memory://")
    except Exception as exc:
        said["sync"] = str(exc)
    try:
        main(["status"])
    except SystemExit as exc:
        said["swarmdb"] = exc.code
    return json.dumps(said)


async def newer_schema(name: str) -> str:
    """Open a database a newer version of the library made: what the refusal says."""
    from pyodide.code import run_js

    from ruv_swarm_persistence import MigrationError
    from ruv_swarm_persistence.backends.browser import SCHEMA_VERSION

    make = run_js(
        """(name, version) => new Promise((resolve, reject) => {
             const r = indexedDB.open(name, version);
             r.onsuccess = () => { r.result.close(); resolve(); };
             r.onerror = () => reject(r.error);
           })"""
    )
    await make(name, SCHEMA_VERSION + 1)
    try:
        await IndexedDBStorage.open(name)
    except MigrationError as exc:
        return json.dumps(str(exc))
    return json.dumps("opened")


# --- a write load cut short ---------------------------------------------------------------------

#: What each unit of the load writes: one agent, two tasks (one depending on the other), three
#: events and a metric in one transaction, or a batch of events.
TX_EVENTS = 3
BATCH = 40


def _log(text: str) -> None:
    import js  # Pyodide's bridge to the page: console messages reach the test

    js.console.log(text)


async def _load(name: str) -> None:
    s = await IndexedDBStorage.open(name)
    for i in itertools.count():
        if i % 2 == 0:
            agent = AgentModel.new(f"load-{i}", "worker")
            first = TaskModel.new("unit", {"unit": i})
            second = TaskModel.new("unit", {"unit": i}, dependencies=[first.id])
            async with s.transaction() as tx:
                await tx.store_agent(agent)
                await tx.store_tasks([first, second])
                for k in range(TX_EVENTS):
                    await tx.store_event(EventModel.new("unit", {"unit": i, "k": k}))
                await tx.store_metric(MetricModel.new("unit", float(i), "n").with_agent(agent.id))
        else:
            await s.store_events(
                [EventModel.new("batch", {"unit": i, "k": k}) for k in range(BATCH)]
            )
        _log(f"ack {i}")


def start_load(name: str) -> str:
    """Start the load in the background (it runs until the page dies)."""
    globals()["_load_task"] = asyncio.ensure_future(_load(name))
    return "started"


async def check_load(name: str) -> str:
    """Each unit of the load, whole or absent: ``{"units": [...], "partial": [...]}``."""
    async with await IndexedDBStorage.open(name) as s:
        rows = await snapshot(s)
    parts: dict[int, dict[str, int]] = {}

    def count(unit: int, kind: str) -> None:
        parts.setdefault(unit, {}).setdefault(kind, 0)
        parts[unit][kind] += 1

    for a in rows["agents"]:
        count(int(a.name.split("-")[1]), "agents")
    for t in rows["tasks"]:
        count(t.payload["unit"], "tasks")
    for e in rows["events"]:
        count(e.payload["unit"], "events")
    for m in rows["metrics"]:
        count(int(m.value), "metrics")
    whole_tx = {"agents": 1, "tasks": 2, "events": TX_EVENTS, "metrics": 1}
    partial = [
        [unit, got]
        for unit, got in sorted(parts.items())
        if got != (whole_tx if unit % 2 == 0 else {"events": BATCH})
    ]
    sequences = [e.sequence for e in rows["events"]]
    return json.dumps(
        {
            "units": sorted(parts),
            "partial": partial,
            "sequences_increase": sequences == sorted(set(sequences)),
        }
    )
