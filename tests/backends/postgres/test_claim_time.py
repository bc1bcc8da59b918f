"""A claim reads the clock when it runs: after waiting at the gate, and again on each retry.

A task's readiness (``run_after <= now``) and the lease a claim grants are computed from that
time, not from the time the call was made: a claim that waited while another task's
transaction held the storage, or that was retried, sees the clock as it is then. So do the
writes of a held task: a renewal extends the lease from when it runs, and a completion that
runs after the lease ran out is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.backends.postgres.engine import MIN_LEASE_S
from ruv_swarm_persistence.errors import LeaseLostError
from ruv_swarm_persistence.models import TaskModel
from ruv_swarm_persistence.testing import FakeClock

from ._support import WAIT, Opener, wait_until

START = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = 30


async def claim_by_id(storage: PostgresStorage) -> datetime | None:
    """``claim_task`` of the task ``t``: when its lease ends, or ``None`` if not claimed."""
    if not await storage.claim_task("t", "w", lease=LEASE):
        return None
    got = await storage.get_task("t")
    assert got is not None
    return got.lease_expires_at


async def claim_next(storage: PostgresStorage) -> datetime | None:
    """``claim_next_task``: when the lease of the task ``t`` ends, or ``None``."""
    got = await storage.claim_next_task("w", lease=LEASE)
    if got is None:
        return None
    assert got.id == "t"
    return got.lease_expires_at


Claim = Callable[[PostgresStorage], Awaitable[datetime | None]]
CLAIMS = [pytest.param(claim_by_id, id="claim_task"), pytest.param(claim_next, id="next")]


async def ready_at_five(open_storage: Opener, expired_elsewhere: bool) -> tuple[Any, Any]:
    """A storage on a fake clock and a task ``t`` that becomes ready 5 s from now.

    With ``expired_elsewhere``, another task is held under a 1 s lease, which has run out by
    the time the claim runs: then the one-statement claim gives way to the full one.
    """
    clock = FakeClock(START)
    storage = await open_storage(clock=clock)
    if expired_elsewhere:
        await storage.store_task(TaskModel.new("job", {}, id="held"))
        assert await storage.claim_task("held", "other", lease=1)
    task = TaskModel.new("job", {}, id="t", run_after=START + timedelta(seconds=5))
    await storage.store_task(task)
    return clock, storage


@pytest.mark.parametrize("claim", CLAIMS)
@pytest.mark.parametrize("expired_elsewhere", [False, True], ids=["fast", "full"])
async def test_a_claim_that_waited_at_the_gate_takes_the_time_it_runs(
    open_storage: Opener, claim: Claim, expired_elsewhere: bool
) -> None:
    clock, storage = await ready_at_five(open_storage, expired_elsewhere)
    release = asyncio.Event()

    async def hold() -> None:
        async with storage.transaction():
            await release.wait()

    holder = asyncio.create_task(hold())
    await wait_until(lambda: storage._tx is not None)
    claiming = asyncio.create_task(claim(storage))
    await wait_until(lambda: bool(storage._tx_waiters))  # the claim waits at the gate
    later = clock.advance(10)
    release.set()
    await asyncio.wait_for(holder, WAIT)
    assert await asyncio.wait_for(claiming, WAIT) == later + timedelta(seconds=LEASE)


@pytest.mark.parametrize("claim", CLAIMS)
@pytest.mark.parametrize("expired_elsewhere", [False, True], ids=["fast", "full"])
async def test_a_retried_claim_takes_the_time_of_its_retry(
    open_storage: Opener, claim: Claim, expired_elsewhere: bool
) -> None:
    clock, storage = await ready_at_five(open_storage, expired_elsewhere)
    runner: Any = storage._runner
    acquire = runner.acquire
    later = START + timedelta(seconds=10)

    def first_fails() -> Any:
        # The first connection cannot be had (nothing was sent, so the claim is retried),
        # and time passes meanwhile.
        runner.acquire = acquire
        clock.advance(later - clock())
        raise ConnectionRefusedError("the server is restarting")

    runner.acquire = first_fails
    assert await asyncio.wait_for(claim(storage), WAIT) == later + timedelta(seconds=LEASE)
    assert clock() == later


def retried_at(storage: PostgresStorage, clock: FakeClock, later: datetime) -> None:
    """The next call's first connection cannot be had; it is retried at ``later``."""
    runner: Any = storage._runner
    acquire = runner.acquire

    def first_fails() -> Any:
        runner.acquire = acquire
        clock.advance(later - clock())
        raise ConnectionRefusedError("the server is restarting")

    runner.acquire = first_fails


async def held_task(open_storage: Opener) -> tuple[FakeClock, PostgresStorage]:
    """A storage on a fake clock with the task ``t`` claimed and started by ``w`` at START."""
    clock = FakeClock(START)
    storage = await open_storage(clock=clock)
    await storage.store_task(TaskModel.new("job", {}, id="t"))
    assert await storage.claim_task("t", "w", lease=LEASE)
    await storage.start_task("t", "w")
    return clock, storage


async def test_a_retried_renewal_extends_the_lease_from_its_retry(open_storage: Opener) -> None:
    clock, storage = await held_task(open_storage)
    later = START + timedelta(seconds=20)
    retried_at(storage, clock, later)
    renewed = await asyncio.wait_for(storage.heartbeat_task("t", "w", lease=LEASE), WAIT)
    assert renewed.lease_expires_at == later + timedelta(seconds=LEASE)


async def test_a_retried_completion_takes_the_time_of_its_retry(open_storage: Opener) -> None:
    clock, storage = await held_task(open_storage)
    later = START + timedelta(seconds=20)
    retried_at(storage, clock, later)
    done = await asyncio.wait_for(storage.complete_task("t", "w", {"ok": 1}), WAIT)
    assert done.completed_at == later


async def test_a_retried_batch_completion_takes_the_time_of_its_retry(
    open_storage: Opener,
) -> None:
    clock, storage = await held_task(open_storage)
    later = START + timedelta(seconds=20)
    retried_at(storage, clock, later)
    [done] = await asyncio.wait_for(storage.complete_tasks({"t": {"ok": 1}}, "w"), WAIT)
    assert done.completed_at == later


async def test_a_completion_retried_after_the_lease_ran_out_is_refused(
    open_storage: Opener,
) -> None:
    clock, storage = await held_task(open_storage)
    retried_at(storage, clock, START + timedelta(seconds=LEASE + 1))
    with pytest.raises(LeaseLostError):
        await asyncio.wait_for(storage.complete_task("t", "w", {"ok": 1}), WAIT)
    got = await storage.get_task("t")
    assert got is not None
    assert got.status == "pending"  # the expired lease was a failed attempt: retried later


async def test_a_lease_too_short_for_the_round_trips_is_warned_about_once(
    open_storage: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    storage = await open_storage(clock=FakeClock(START))  # the short leases never run out
    await storage.store_tasks([TaskModel.new("job", {}, id=f"t{i}") for i in range(3)])
    with caplog.at_level(logging.WARNING, "ruv_swarm_persistence.backends.postgres.engine"):
        assert await storage.claim_task("t0", "w", lease=MIN_LEASE_S)
        assert caplog.records == []
        assert await storage.claim_task("t1", "w", lease=0.1)
        assert await storage.claim_next_task("w", lease=0.1) is not None
        assert await storage.claim_next_tasks("w", 1, lease=0.1) == []
        await storage.heartbeat_task("t1", "w", lease=0.1)
    [record] = caplog.records
    assert "lease of 0.1 s is shorter than 1 s" in record.getMessage()

    caplog.clear()
    batch = await open_storage(clock=FakeClock(START))  # the batch claim warns as well
    await batch.store_task(TaskModel.new("job", {}, id="t3"))
    with caplog.at_level(logging.WARNING, "ruv_swarm_persistence.backends.postgres.engine"):
        assert await batch.claim_next_tasks("w", 2, lease=0.1) != []
    [record] = caplog.records
    assert "lease of 0.1 s" in record.getMessage()
