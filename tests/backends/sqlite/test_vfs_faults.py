"""I/O faults injected under SQLite through apsw's VFS: nothing acknowledged is lost.

A shim VFS, registered as the process's default for the test, passes every file operation to
the real one and fails the Nth ``xWrite``, ``xSync`` or ``xRead`` (counted over every file:
the database, its log, the journals) in one of several ways: an I/O error, a short write
(half the bytes written, then the error), a full disk, a failed fsync, a failed read; once
(a transient fault) or from then on (a dead disk). N is spread over the whole run: the opening
(migrations) and a concurrent write load of task batches, event batches, agents, metrics and
transactions, claims and completions.

Every call must return or raise a :class:`StorageError`. Then the fault clears, the storage is
closed and the file opened again, and:

* every acknowledged write is there;
* no operation is half applied (a batch or a transaction whose call failed is all there or
  not at all: a failed commit may still have committed);
* ``integrity_check`` (SQLite's check, foreign keys, dependency counts) finds nothing, and
  the storage takes new writes.

``VFS_FAULT_POINTS`` (environment, default 5) injection points per kind of fault and
persistence; ``make fuzz`` runs more.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import apsw
import pytest

from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.errors import StorageError
from ruv_swarm_persistence.models import (
    AgentModel,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
)

POINTS: Final = int(os.environ.get("VFS_FAULT_POINTS", "5"))
#: A call that takes longer than this is a hang.
HANG: Final = 60.0
WRITERS: Final = 4
ROUNDS: Final = 4
BASE_VFS: Final = apsw.vfs_names()[0]


@dataclass
class Fault:
    """Which operation fails, how, from which call on, and for how many calls."""

    op: str  # "write", "sync" or "read"
    error: type[Exception]
    at: int
    times: int
    short: bool = False
    calls: dict[str, int] = field(default_factory=lambda: {"write": 0, "sync": 0, "read": 0})
    fired: int = 0
    active: bool = True

    def check(self, op: str) -> bool:
        """Count a call; whether it must fail."""
        self.calls[op] += 1
        if not self.active or op != self.op or self.calls[op] < self.at:
            return False
        if self.fired >= self.times:
            return False
        self.fired += 1
        return True


class FaultyFile(apsw.VFSFile):
    """A file of the real VFS whose reads, writes and syncs may fail as planned."""

    def __init__(self, fault: Fault, name: Any, flags: list[int]) -> None:
        self.fault = fault
        super().__init__(BASE_VFS, name, flags)

    def xWrite(self, data: bytes, offset: int) -> None:
        if self.fault.check("write"):
            if self.fault.short:
                super().xWrite(data[: len(data) // 2], offset)
            raise self.fault.error("injected write failure")
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        if self.fault.check("sync"):
            raise self.fault.error("injected fsync failure")
        super().xSync(flags)

    def xRead(self, amount: int, offset: int) -> bytes:
        if self.fault.check("read"):
            raise self.fault.error("injected read failure")
        data: bytes = super().xRead(amount, offset)
        return data


class FaultyVFS(apsw.VFS):
    """The process's default VFS while registered: every connection opened goes through it."""

    def __init__(self) -> None:
        self.fault = Fault("write", apsw.IOError, at=0, times=0, active=False)
        super().__init__("faulty", BASE_VFS, makedefault=True)

    def xOpen(self, name: Any, flags: list[int]) -> FaultyFile:
        return FaultyFile(self.fault, name, flags)


@pytest.fixture
def vfs() -> Iterator[FaultyVFS]:
    """The faulty VFS, the default for the test (its storages close before it goes)."""
    shim = FaultyVFS()
    hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        # Where SQLite ignores a failed call (a sync while closing), apsw reports the
        # shim's exception as unraisable: that is the fault itself, not a library error.
        if not str(info.exc_value).startswith("injected "):
            hook(info)

    sys.unraisablehook = unraisable
    try:
        yield shim
    finally:
        sys.unraisablehook = hook
        shim.unregister()


# --- the write load ---------------------------------------------------------------------------


@dataclass
class Op:
    """One write call: the rows it writes (table, id), and whether it was acknowledged."""

    rows: list[tuple[str, str]]
    acknowledged: bool = False
    error: BaseException | None = None


async def _load(storage: SqliteStorage, ops: list[Op]) -> None:
    """Concurrent writers; each call's outcome recorded in ``ops``."""

    async def attempt(rows: list[tuple[str, str]], call: Callable[[], Awaitable[Any]]) -> None:
        op = Op(rows)
        ops.append(op)
        try:
            await asyncio.wait_for(call(), HANG)
        except StorageError as exc:
            op.error = exc
        else:
            op.acknowledged = True

    async def writer(w: int) -> None:
        for r in range(ROUNDS):
            key = f"{w}-{r}"
            tasks = [TaskModel.new("work", {"k": key}, id=f"t{key}-{i}") for i in range(3)]
            tasks[2].dependencies = [tasks[0].id]
            await attempt(
                [("tasks", t.id) for t in tasks], lambda tasks=tasks: storage.store_tasks(tasks)
            )
            events = [EventModel.new("load", {"k": key}, id=f"e{key}-{i}") for i in range(2)]
            await attempt(
                [("events", e.id) for e in events],
                lambda events=events: storage.store_events(events),
            )
            agent = AgentModel.new(f"agent {key}", "worker", id=f"a{key}")
            await attempt([("agents", agent.id)], lambda agent=agent: storage.store_agent(agent))
            metric = MetricModel.new("latency", float(r), "ms", id=f"x{key}")
            await attempt(
                [("metrics", metric.id)], lambda metric=metric: storage.store_metric(metric)
            )

            async def transaction(key: str = key) -> None:
                async with storage.transaction() as tx:
                    await tx.store_agent(AgentModel.new("tx", "worker", id=f"ta{key}"))
                    await tx.store_message(MessageModel.new("a", "b", "note", {}, id=f"tm{key}"))

            await attempt([("agents", f"ta{key}"), ("messages", f"tm{key}")], transaction)
            claimed = await _settle(storage.claim_next_task(f"worker-{w}"))
            if isinstance(claimed, TaskModel):
                await _settle(storage.complete_task(claimed.id, f"worker-{w}", {"by": w}))

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))


async def _settle(call: Awaitable[Any]) -> Any:
    """A call whose outcome does not matter, as long as any error it raises is typed."""
    try:
        return await asyncio.wait_for(call, HANG)
    except StorageError as exc:
        return exc


async def _present(storage: SqliteStorage, table: str, row_id: str) -> bool:
    if table == "events":
        return await storage.get_event(row_id) is not None
    get = {
        "tasks": storage.get_task,
        "agents": storage.get_agent,
        "messages": storage.get_message,
    }.get(table)
    if get is not None:
        return await get(row_id) is not None
    return any(m.id == row_id for m in await storage.metrics.find_all())


async def _run(
    db: Path, vfs: FaultyVFS, fault: Fault | None, **options: Any
) -> tuple[list[Op], dict[str, int]]:
    """Open, load and close under ``fault``; the ops and the I/O calls counted."""
    if fault is not None:
        vfs.fault = fault
    counting = vfs.fault
    ops: list[Op] = []
    opened = await _settle(SqliteStorage.open(db, max_batch=8, **options))
    if isinstance(opened, SqliteStorage):
        try:
            await _load(opened, ops)
        finally:
            await _settle(opened.close())
    counting.active = False
    return ops, dict(counting.calls)


def _points(total: int) -> list[int]:
    """``POINTS`` call numbers spread over ``1..total``."""
    return sorted({max(1, round(total * (i + 0.5) / POINTS)) for i in range(POINTS)})


KINDS: Final[dict[str, dict[str, Any]]] = {
    "write-error": {"op": "write", "error": apsw.IOError},
    "short-write": {"op": "write", "error": apsw.IOError, "short": True},
    "disk-full": {"op": "write", "error": apsw.FullError},
    "fsync-error": {"op": "sync", "error": apsw.IOError},
    # With synchronous=full every commit syncs the log: the faults land on acknowledgements.
    "fsync-error-full": {"op": "sync", "error": apsw.IOError, "synchronous": "full"},
    "read-error": {"op": "read", "error": apsw.IOError},
}


@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_injected_faults_lose_no_acknowledged_write(
    tmp_path: Path, vfs: FaultyVFS, kind: str, persistent: bool
) -> None:
    spec = KINDS[kind]
    spec = dict(spec)
    options = {"synchronous": spec.pop("synchronous")} if "synchronous" in spec else {}
    _, calls = await _run(tmp_path / "measure.db", vfs, None, **options)
    total = calls[spec["op"]]
    assert total > 0, f"the run made no {spec['op']} calls to fail"
    summary = []
    for n, at in enumerate(_points(total)):
        db = tmp_path / f"{n}.db"
        fault = Fault(at=at, times=10**9 if persistent else 1, **spec)
        ops, _ = await _run(db, vfs, fault, **options)
        assert fault.fired > 0, f"call {at} of {total} never came"
        summary.append(await _verify(db, ops, f"{kind} at {spec['op']} {at}/{total}"))
    assert summary  # one line per injection point: (acknowledged, refused) operations


async def _verify(db: Path, ops: list[Op], where: str) -> tuple[int, int]:
    """After the fault: acknowledged writes all there, others whole or absent, file sound."""
    storage = await SqliteStorage.open(db)
    try:
        lost, half = [], []
        for op in ops:
            present = [await _present(storage, table, rid) for table, rid in op.rows]
            if op.acknowledged and not all(present):
                lost.append(op.rows)
            if not op.acknowledged and any(present) and not all(present):
                half.append(op.rows)
        assert (lost, half) == ([], []), f"{where}: lost {lost}, half applied {half}"
        assert await storage.integrity_check() == [], where
        await storage.store_agent(AgentModel.new("after", "worker", id="after-the-fault"))
        assert await storage.get_agent("after-the-fault") is not None, where
    finally:
        await storage.close()
    acknowledged = sum(op.acknowledged for op in ops)
    return acknowledged, len(ops) - acknowledged
