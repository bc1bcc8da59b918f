"""A swarm in the browser: three workers run a small pipeline, kept in IndexedDB.

index.html runs this file under Pyodide, then ``await run()``. Each run ("round") enqueues a
pipeline: four documents are fetched, each parse waits for its fetch, and one index task
waits for every parse. Three Workers (the library's agent loop) claim and run the tasks; the
page shows agents, tasks and events as they change. Everything is in IndexedDB: reload the
page and the earlier rounds are still there, and the next round adds to them.
"""

from __future__ import annotations

import asyncio
import html
import json
import random
from typing import Any

import js  # Pyodide's bridge to the page

from ruv_swarm_persistence import (
    EventModel,
    Storage,
    TaskContext,
    TaskModel,
    TaskPriority,
    Worker,
    init_storage,
)

DOCUMENTS = ["agents.md", "tasks.md", "events.md", "metrics.md"]


async def fetch(task: TaskModel, ctx: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.2, 0.6))  # pretend to download
    return {"document": task.payload["document"], "pages": random.randint(1, 9)}


async def parse(task: TaskModel, ctx: TaskContext) -> dict[str, Any]:
    (fetched,) = ctx.dependency_results.values()  # the result of the fetch it waited for
    await asyncio.sleep(random.uniform(0.2, 0.6))
    return {"document": fetched["document"], "terms": fetched["pages"] * 40}


async def index(task: TaskModel, ctx: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(0.3)
    parsed = ctx.dependency_results.values()
    return {"documents": len(parsed), "terms": sum(r["terms"] for r in parsed)}


def show(element_id: str, text: str) -> None:
    js.document.getElementById(element_id).innerHTML = text


def compact(value: Any) -> str:
    return "" if value is None else json.dumps(value, separators=(", ", ": "))


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


async def render(storage: Storage) -> None:
    agents = await storage.list_agents()
    rows = [[a.name, a.status.value, a.heartbeat.strftime("%H:%M:%S")] for a in agents]
    show("agents", table(["agent", "status", "heartbeat"], rows))
    tasks = sorted(await storage.tasks.find_all(), key=lambda t: t.created_at)[-12:]
    rows = [[t.task_type, t.status.value, t.assigned_to or "", compact(t.result)] for t in tasks]
    show("tasks", table(["task", "status", "held by", "result"], rows))
    events = (await storage.read_events(0, 1_000_000))[-14:]
    rows = [[e.sequence, e.event_type, compact(e.payload)] for e in reversed(events)]
    show("events", table(["#", "event", "payload"], rows))


async def main() -> None:
    storage = await init_storage("indexeddb://swarm")  # what init_storage() opens here anyway
    rounds = len(await storage.get_events_by_type("round.started", 10_000)) + 1
    granted = getattr(storage, "persisted", None)  # IndexedDBStorage: did the browser agree?
    show("status", f"round {rounds} running; persistent storage granted: {granted}")
    await storage.store_event(EventModel.new("round.started", {"round": rounds}))

    fetches = [TaskModel.new("fetch", {"document": d}, TaskPriority.High) for d in DOCUMENTS]
    parses = [TaskModel.new("parse", {}, dependencies=[f.id]) for f in fetches]
    final = TaskModel.new("index", {}, dependencies=[p.id for p in parses])
    await storage.store_tasks([*fetches, *parses, final])

    handlers = {"fetch": fetch, "parse": parse, "index": index}
    workers = [Worker(storage, f"browser-worker-{n}", handlers, concurrency=2) for n in range(3)]
    running = [asyncio.ensure_future(w.run()) for w in workers]
    done = asyncio.ensure_future(storage.wait_for_task(final.id, timeout=60))
    while not done.done():
        await render(storage)
        await asyncio.sleep(0.25)
    for w in workers:
        w.stop()
    await asyncio.gather(*running)
    finished = done.result()
    result = finished.result if finished is not None else None
    await storage.store_event(EventModel.new("round.finished", {"round": rounds, "index": result}))
    await render(storage)
    show("status", f"round {rounds} done: {compact(result)}; reload the page for another round")
    js.document.body.dataset.state = "done"
    await storage.close()


async def run() -> None:
    try:
        await main()
    except Exception as exc:  # shown in the page, where there is no terminal to read
        show("status", f"failed: {html.escape(repr(exc))}")
        js.document.body.dataset.state = "failed"
        raise
