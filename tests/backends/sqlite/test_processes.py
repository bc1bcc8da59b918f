"""Several processes on one SQLite file: shared writes, sequences, cross-process wake-ups."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ruv_swarm_persistence import EventModel, MessageModel
from ruv_swarm_persistence.backends.sqlite import SqliteStorage

WAIT = 20.0

CHILD = """
import asyncio, sys
from ruv_swarm_persistence import EventModel, MessageModel
from ruv_swarm_persistence.backends.sqlite import SqliteStorage

async def main(path: str, role: str, n: int) -> None:
    async with SqliteStorage.open(path) as storage:
        if role == "message":
            await storage.store_message(MessageModel.new("child", "parent", "hello", {}))
        else:
            for i in range(n):
                await storage.store_event(EventModel.new("child", {"i": i}, id=f"{role}-{i}"))
    print("done")

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def _spawn(path: Path, role: str, n: int = 1) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(path),
        role,
        str(n),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(proc: asyncio.subprocess.Process) -> None:
    out, err = await asyncio.wait_for(proc.communicate(), WAIT * 3)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "done"


async def test_processes_writing_at_once_share_one_sequence(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        children = [await _spawn(db_path, f"p{k}", 300) for k in range(3)]
        mine = [
            await storage.store_event(EventModel.new("parent", id=f"me-{i}")) for i in range(300)
        ]
        for child in children:
            await _finish(child)
        events = await storage.read_events(0, 10_000)
    assert len(events) == 1_200
    assert [e.sequence for e in events] == list(range(1, 1_201))
    assert mine == sorted(mine)
    for prefix in ("me", "p0", "p1", "p2"):
        # Each writer's events appear in the order it wrote them.
        own = [e.id for e in events if e.id.startswith(prefix + "-")]
        assert own == [f"{prefix}-{i}" for i in range(300)]


async def test_a_subscriber_wakes_for_another_process(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        sub = storage.subscribe()
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.1)
        assert not first.done()
        child = await _spawn(db_path, "other", 1)
        got = await asyncio.wait_for(first, WAIT)
        assert got.id == "other-0"
        await _finish(child)
        await sub.aclose()  # type: ignore[attr-defined]


async def test_a_mail_waiter_wakes_for_another_process(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        waiter = asyncio.create_task(storage.wait_for_messages("parent", timeout=WAIT))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        child = await _spawn(db_path, "message")
        got = await asyncio.wait_for(waiter, WAIT)
        assert [m.from_agent for m in got] == ["child"]
        await _finish(child)


async def test_no_one_watches_for_other_processes_once_nobody_waits(db_path: Path) -> None:
    async with SqliteStorage.open(db_path) as storage:
        assert await storage.wait_for_messages("nobody", timeout=0.01) == []
        watcher = storage._sqlite.watcher
        assert watcher is not None
        # The watcher ends at its next look once no one waits: bounded, not timed.
        await asyncio.wait_for(watcher, WAIT)
        await storage.store_message(MessageModel.new("a", "b", "x", {}))
        assert watcher.done()
