"""Event sequences commit in order: a follower of ``read_events(after=N)`` misses nothing.

Writers are separate storage objects, so each appends on its own connection, as separate
processes would. A slow writer holds an appended event in an open transaction while a fast
writer appends; the fast one must not commit a higher sequence that a follower could read
before the slow one's lower sequence becomes visible.
"""

from __future__ import annotations

import asyncio
import random

from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.models import EventModel

from ._support import WAIT, Opener


async def test_a_fast_writer_waits_for_a_slow_one(open_storage: Opener) -> None:
    slow, fast, reader = await open_storage(), await open_storage(), await open_storage()
    tx = await slow.begin_transaction()
    first = await tx.store_event(EventModel.new("slow", {}))
    pending = asyncio.create_task(fast.store_event(EventModel.new("fast", {})))
    # While the slow writer's event is uncommitted, nothing is visible after it either.
    for _ in range(5):
        assert await reader.read_events(0) == []
        assert not pending.done()
    await tx.commit()
    second = await asyncio.wait_for(pending, WAIT)
    assert (first, second) == (1, 2)
    assert [(e.event_type, e.sequence) for e in await reader.read_events(0)] == [
        ("slow", 1),
        ("fast", 2),
    ]


async def test_a_rolled_back_append_leaves_no_gap(open_storage: Opener) -> None:
    first, second = await open_storage(), await open_storage()
    tx = await first.begin_transaction()
    await tx.store_event(EventModel.new("undone", {}))
    pending = asyncio.create_task(second.store_event(EventModel.new("kept", {})))
    await tx.rollback()
    assert await asyncio.wait_for(pending, WAIT) == 1
    assert [e.event_type for e in await first.read_events(0)] == ["kept"]


async def test_a_follower_sees_every_event_of_interleaved_writers(open_storage: Opener) -> None:
    writers = [await open_storage() for _ in range(4)]
    follower = await open_storage()
    rng = random.Random(7)
    per_writer = 25
    total = per_writer * len(writers)

    async def write(storage: PostgresStorage, name: int) -> None:
        for i in range(per_writer):
            if rng.random() < 0.5:
                # Slow: the event is appended early and committed after a pause.
                async with storage.transaction() as tx:
                    await tx.store_event(EventModel.new(f"w{name}", {"i": i}))
                    await asyncio.sleep(rng.random() * 0.005)
            else:
                await storage.store_event(EventModel.new(f"w{name}", {"i": i}))
            await asyncio.sleep(0)

    seen: list[int] = []

    async def follow() -> None:
        last = 0
        while len(seen) < total:
            for ev in await follower.read_events(last, 7):
                assert ev.sequence is not None
                seen.append(ev.sequence)
                last = ev.sequence
            await asyncio.sleep(0)

    await asyncio.wait_for(
        asyncio.gather(follow(), *(write(w, n) for n, w in enumerate(writers))), 60
    )
    # The follower read every sequence, each once, in order: nothing committed later with a
    # lower number was skipped.
    assert seen == list(range(1, total + 1))
    everything = await follower.read_events(0, total + 10)
    for n in range(len(writers)):
        mine = [e.payload["i"] for e in everything if e.event_type == f"w{n}"]
        assert mine == list(range(per_writer))
