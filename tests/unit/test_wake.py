"""The wake-up module every backend waits through."""

from __future__ import annotations

import asyncio

from ruv_swarm_persistence.backends._wake import EVENTS, TASKS, Deadline, Wakeups, mail


async def test_a_change_between_read_and_wait_is_not_slept_through() -> None:
    w = Wakeups()
    gen = w.generation(EVENTS)  # the waiter reads here…
    w.wake(EVENTS)  # …a commit lands…
    await asyncio.wait_for(w.wait(EVENTS, gen), 1)  # …and the wait returns at once
    assert not w.waiting()


async def test_wake_wakes_only_its_key() -> None:
    w = Wakeups()
    events = asyncio.ensure_future(w.wait(EVENTS, w.generation(EVENTS)))
    alice = asyncio.ensure_future(w.wait(mail("alice"), w.generation(mail("alice"))))
    await asyncio.sleep(0)
    assert w.waiting()
    w.wake(mail("alice"))
    await asyncio.wait_for(alice, 1)
    assert not events.done()
    w.wake(EVENTS)
    await asyncio.wait_for(events, 1)
    assert not w.waiting()


async def test_wake_all_moves_every_generation_and_wakes_everyone() -> None:
    w = Wakeups()
    before = {k: w.generation(k) for k in (EVENTS, TASKS, mail("bob"))}
    waits = [asyncio.ensure_future(w.wait(k, g)) for k, g in before.items()]
    await asyncio.sleep(0)
    w.wake_all()
    await asyncio.wait_for(asyncio.gather(*waits), 1)
    assert all(w.generation(k) != g for k, g in before.items())


async def test_a_wait_ends_after_its_timeout_and_forgets_its_waiter() -> None:
    w = Wakeups()
    await asyncio.wait_for(w.wait(TASKS, w.generation(TASKS), 0.01), 1)
    assert not w.waiting()


async def test_a_cancelled_wait_forgets_its_waiter() -> None:
    w = Wakeups()
    task = asyncio.ensure_future(w.wait(TASKS, w.generation(TASKS)))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not w.waiting()


async def test_deadline() -> None:
    assert Deadline(None).remaining() is None
    assert not Deadline(None).expired()
    assert Deadline(0).expired()
    d = Deadline(10)
    assert 0 < (d.wait_before(5_000) or 0) <= 0.005
    assert 9 < (d.wait_before(None) or 0) <= 10
    assert 9 < (d.wait_before(60_000_000) or 0) <= 10  # never past the caller's timeout
