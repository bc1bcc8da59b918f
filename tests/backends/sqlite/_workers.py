"""Child processes for the SQLite crash and multi-process tests.

Run as ``python _workers.py ROLE DB LOG [ARGS...]``. Each role writes one JSON object per line
to LOG and flushes after every line, so what the parent reads after killing the process is
exactly what the process had said before it died:

* ``{"g": n, "intent": {...}}`` before a write is attempted (the rows it will add),
* ``{"g": n, "ack": true}`` once the call that made the write has returned.

Roles:

``writer``   a mixed write load until killed (agents, task batches with dependencies,
             events one by one and in batches, messages, multi-row transactions, and
             claim → complete of the tasks it stored).
``claimer``  claims and completes tasks until none is left unfinished; each completion is
             committed together with a ``task.completed`` event in one transaction.
``holder``   claims tasks under a short lease, reports them, then hangs until killed.
``rescuer``  claims and completes tasks until none is left unfinished, reporting each claim.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

from ruv_swarm_persistence import (
    AgentModel,
    EventModel,
    MessageModel,
    MetricModel,
    QueryBuilder,
    RetryPolicy,
    TaskModel,
    TaskPriority,
)
from ruv_swarm_persistence.storage import Storage

UNFINISHED = ["pending", "assigned", "running"]


class Log:
    """A line-per-record log flushed after every line (what survives a SIGKILL)."""

    def __init__(self, path: str) -> None:
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives until exit
        self._group = 0

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._f.flush()

    def intent(self, **rows: Any) -> int:
        self._group += 1
        self.write({"g": self._group, "intent": rows})
        return self._group

    def ack(self, group: int, **extra: Any) -> None:
        self.write({"g": group, "ack": True, **extra})


async def open_storage(path: str, **options: Any) -> Storage:
    from ruv_swarm_persistence.backends.sqlite import SqliteStorage

    storage: Storage = await SqliteStorage.open(path, **options)
    return storage


async def all_done(storage: Storage) -> bool:
    """True when no task is left pending or held."""
    left = await storage.query(QueryBuilder(TaskModel).where_in("status", UNFINISHED).limit(1))
    return not left


# --- the parent's side ------------------------------------------------------------------------


def spawn(role: str, db: Path, log: Path, *args: object) -> subprocess.Popen[bytes]:
    """Start a child running ``role``; its stderr goes to ``LOG.stderr``."""
    err = open(f"{log}.stderr", "wb")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, __file__, role, str(db), str(log), *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    finally:
        err.close()


def read_log(log: Path) -> list[dict[str, Any]]:
    """The complete lines a child wrote (a line cut short by a kill is not one)."""
    try:
        text = log.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1] if line]


def describe(log: Path) -> str:
    """A child's errors and stderr, for assertion messages."""
    errors = [r for r in read_log(log) if "error" in r]
    try:
        stderr = Path(f"{log}.stderr").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        stderr = ""
    return f"errors={errors!r}\nstderr:\n{stderr[-4000:]}"


def wait_for(
    log: Path, key: str, proc: subprocess.Popen[bytes], timeout: float = 60.0
) -> dict[str, Any]:
    """Wait until the child logs a record with ``key``; fail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in read_log(log):
            if key in record:
                return record
        if proc.poll() is not None:
            code = proc.returncode
            raise AssertionError(f"child exited ({code}) before {key!r}: {describe(log)}")
        time.sleep(0.01)
    raise AssertionError(f"child did not report {key!r} within {timeout}s: {describe(log)}")


def run_all(
    role: str, db: Path, logs: list[Path], args: list[tuple[object, ...]], timeout: float
) -> None:
    """Run one child per log to the end; each must exit 0 within ``timeout`` seconds."""
    procs = [spawn(role, db, log, *a) for log, a in zip(logs, args, strict=True)]
    deadline = time.monotonic() + timeout
    try:
        for proc, log in zip(procs, logs, strict=True):
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{role} hung: {describe(log)}") from None
            assert code == 0, f"{role} failed: {describe(log)}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- writer -------------------------------------------------------------------------------


async def writer(db: str, log: Log, tag: str, seed: int) -> None:
    storage = await open_storage(db)
    log.write({"ready": True})
    rng = random.Random(seed)
    agents: list[str] = []
    tasks: list[str] = []
    serial = 0

    def new_id(kind: str) -> str:
        nonlocal serial
        serial += 1
        return f"{tag}-{kind}{serial}"

    async def agent_loop() -> None:
        while True:
            a = AgentModel.new(f"agent {serial}", "worker", ["crash"], id=new_id("a"))
            g = log.intent(agents=[a.id])
            await storage.store_agent(a)
            log.ack(g)
            agents.append(a.id)
            await asyncio.sleep(0.002)

    async def task_loop() -> None:
        while True:
            batch: list[TaskModel] = []
            for i in range(rng.randint(1, 6)):
                deps = [batch[j].id for j in range(i) if rng.random() < 0.4]
                if tasks and rng.random() < 0.5:
                    deps.append(rng.choice(tasks))
                batch.append(
                    TaskModel.new(
                        "crash",
                        {"i": i},
                        TaskPriority(rng.randint(0, 3)),
                        id=new_id("t"),
                        dependencies=deps,
                    )
                )
            g = log.intent(tasks=[t.id for t in batch])
            await storage.store_tasks(batch)
            log.ack(g)
            tasks.extend(t.id for t in batch)

    async def event_loop(producer: int) -> None:
        while True:
            if rng.random() < 0.2:
                evs = [
                    EventModel.new("crash.batch", {"p": producer}, id=new_id("e"))
                    for _ in range(rng.randint(2, 20))
                ]
                g = log.intent(events=[e.id for e in evs])
                await storage.store_events(evs)
            else:
                ev = EventModel.new("crash.one", {"p": producer}, id=new_id("e"))
                g = log.intent(events=[ev.id])
                await storage.store_event(ev)
            log.ack(g)

    async def message_loop() -> None:
        while True:
            if len(agents) < 2:
                await asyncio.sleep(0.005)
                continue
            a, b = rng.sample(agents, 2)
            m = MessageModel.new(a, b, "note", {"text": "hello"}, id=new_id("m"))
            g = log.intent(messages=[m.id])
            await storage.store_message(m)
            log.ack(g)

    async def transaction_loop() -> None:
        while True:
            agent = AgentModel.new("tx agent", "worker", id=new_id("a"))
            task = TaskModel.new("crash.tx", {"tx": True}, id=new_id("t"))
            event = EventModel.new("crash.tx", {"tx": True}, id=new_id("e"), agent_id=agent.id)
            message = MessageModel.new(agent.id, agent.id, "self", {}, id=new_id("m"))
            metric = MetricModel.new("crash.load", 1.5, "ms", agent_id=agent.id, id=new_id("x"))
            g = log.intent(
                agents=[agent.id],
                tasks=[task.id],
                events=[event.id],
                messages=[message.id],
                metrics=[metric.id],
            )
            async with storage.transaction() as tx:
                await tx.store_agent(agent)
                await tx.store_task(task)
                await tx.store_event(event)
                await tx.store_message(message)
                await tx.store_metric(metric)
            log.ack(g)
            agents.append(agent.id)
            tasks.append(task.id)
            # A transaction holds the writer; leave room for the other writers between two.
            await asyncio.sleep(0.001)

    async def worker_loop() -> None:
        me = f"{tag}-worker"
        while True:
            task = await storage.claim_next_task(me, ["crash"])
            if task is None:
                await asyncio.sleep(0.005)
                continue
            g = log.intent(complete=task.id)
            await storage.complete_task(task.id, me, {"by": me})
            log.ack(g)

    await asyncio.gather(
        agent_loop(),
        task_loop(),
        message_loop(),
        transaction_loop(),
        worker_loop(),
        *(event_loop(p) for p in range(4)),
    )


# --- claimer --------------------------------------------------------------------------------


async def claimer(db: str, log: Log, name: str, coroutines: int) -> None:
    storage = await open_storage(db)
    log.write({"ready": True})

    async def work(me: str) -> None:
        while True:
            task = await storage.claim_next_task(me)
            if task is None:
                if await all_done(storage):
                    return
                await asyncio.sleep(0.002)
                continue
            not_done = []
            for dep in task.dependencies:
                d = await storage.get_task(dep)
                if d is None or d.status != "completed":
                    not_done.append(dep)
            if not_done:
                log.write({"violation": task.id, "deps": not_done})
            async with storage.transaction() as tx:
                await tx.complete_task(task.id, me, {"by": me})
                await tx.store_event(
                    EventModel.new("task.completed", {"by": me}, agent_id=me, task_id=task.id)
                )
            log.write({"completed": task.id, "by": me})

    await asyncio.gather(*(work(f"{name}.{c}") for c in range(coroutines)))
    await storage.close()
    log.write({"finished": True})


# --- holder and rescuer -----------------------------------------------------------------------


async def holder(db: str, log: Log, count: int, lease: float) -> None:
    storage = await open_storage(db, lease=lease)
    held = []
    for i in range(count):
        task = await storage.claim_next_task("holder")
        assert task is not None, "nothing to claim"
        if i % 2:
            task = await storage.start_task(task.id, "holder")
        assert task.lease_expires_at is not None
        held.append({"id": task.id, "lease_expires_at": task.lease_expires_at.isoformat()})
    log.write({"held": held})
    await asyncio.Event().wait()  # hang, holding the leases, until killed


async def rescuer(db: str, log: Log, name: str, backoff_ms: int) -> None:
    policy = RetryPolicy(base_us=backoff_ms * 1000)
    storage = await open_storage(db, retry_policy=policy)
    log.write({"ready": True})
    while True:
        task = await storage.claim_next_task(name)
        if task is None:
            if await all_done(storage):
                break
            await asyncio.sleep(0.01)
            continue
        log.write(
            {
                "claimed": task.id,
                "retry_count": task.retry_count,
                "at": task.updated_at.isoformat(),
            }
        )
        await storage.complete_task(task.id, name, {"by": name})
    await storage.close()
    log.write({"finished": True})


ROLES: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
    "writer": lambda db, log, tag, seed: writer(db, log, tag, int(seed)),
    "claimer": lambda db, log, name, n: claimer(db, log, name, int(n)),
    "holder": lambda db, log, n, lease: holder(db, log, int(n), float(lease)),
    "rescuer": lambda db, log, name, ms: rescuer(db, log, name, int(ms)),
}


def main(argv: list[str]) -> int:
    role, db, log_path, *args = argv
    log = Log(log_path)
    try:
        asyncio.run(ROLES[role](db, log, *args))
    except BaseException as exc:
        log.write({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        sys.stderr.write(traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
