"""Conformance tests of the batch verbs: ``claim_next_tasks`` and ``complete_tasks``.

Pull them into a backend's test module with
``from ruv_swarm_persistence.testing.batch_tasks import *`` next to a ``storage_factory``
fixture (see :mod:`ruv_swarm_persistence.testing`). A batch claim is held to what the same
number of ``claim_next_task`` calls would claim, on a twin storage given the same tasks; a
batch completion to ``complete_task``'s semantics, all or none. "Now" comes from the fake
``clock``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ..errors import LeaseLostError, NotFoundError
from ..models import EventModel, TaskPriority, TaskStatus
from ..storage import Storage
from . import FakeClock
from ._support import within
from ._task_support import LEASE, _at, _get, _refused, _snapshot, _task
from .plugin import StorageFactory

# --- helpers ----------------------------------------------------------------------------------


async def _claim_in_batches(
    storage: Storage, n: int, agent: str = "w1", task_types: list[str] | None = None
) -> list[list[str]]:
    """Claim batches of ``n`` until one comes back empty; the ids of each batch."""
    batches: list[list[str]] = []
    while got := await storage.claim_next_tasks(agent, n, task_types=task_types):
        assert len(got) <= n
        batches.append([t.id for t in got])
    return batches


async def _claim_one_by_one(
    storage: Storage, agent: str = "w1", task_types: list[str] | None = None
) -> list[str]:
    got: list[str] = []
    while (task := await storage.claim_next_task(agent, task_types)) is not None:
        got.append(task.id)
    return got


def _flat(batches: list[list[str]]) -> list[str]:
    return [task_id for batch in batches for task_id in batch]


# --- claim_next_tasks ---------------------------------------------------------------------------


async def test_claim_next_tasks_takes_the_best_first(storage: Storage, clock: FakeClock) -> None:
    await storage.store_tasks(
        [
            _task("low", created=_at(clock, 0), priority=TaskPriority.Low),
            _task("med-new", created=_at(clock, 5)),
            _task("med-old", created=_at(clock, 1)),
            _task("high", created=_at(clock, 9), priority=TaskPriority.High),
            _task("crit", created=_at(clock, 7), priority=TaskPriority.Critical),
        ]
    )
    first = await storage.claim_next_tasks("w", 3)
    assert [t.id for t in first] == ["crit", "high", "med-old"]
    for task in first:
        assert task.status == TaskStatus.Assigned
        assert task.assigned_to == "w"
        assert task.lease_expires_at == clock() + LEASE
        assert task == await _get(storage, task.id)
    assert [t.id for t in await storage.claim_next_tasks("w2", 3)] == ["med-new", "low"]
    assert await storage.claim_next_tasks("w", 3) == []


async def test_claim_next_tasks_on_empty_storage(storage: Storage) -> None:
    assert await storage.claim_next_tasks("w", 1) == []
    assert await storage.claim_next_tasks("w", 1000) == []


async def test_claim_next_tasks_sets_the_lease_asked_for(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task(f"t{i}", created=_at(clock, i)) for i in range(3)])
    got = await storage.claim_next_tasks("w", 2, lease=timedelta(seconds=5))
    assert [t.lease_expires_at for t in got] == [clock() + timedelta(seconds=5)] * 2
    got = await storage.claim_next_tasks("w", 2, lease=90)
    assert [t.lease_expires_at for t in got] == [clock() + timedelta(seconds=90)]


async def test_claim_next_tasks_skips_blocked_and_delayed(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks(
        [
            _task("dep", created=_at(clock, 3), priority=TaskPriority.Low),
            _task("blocked", created=_at(clock, 0), priority=TaskPriority.Critical, deps=["dep"]),
            _task(
                "delayed",
                created=_at(clock, 1),
                priority=TaskPriority.Critical,
                run_after=clock() + timedelta(seconds=1),
            ),
            _task("free", created=_at(clock, 2)),
        ]
    )
    assert [t.id for t in await storage.claim_next_tasks("w", 10)] == ["free", "dep"]
    assert await storage.claim_next_tasks("w", 10) == []
    await storage.complete_task("dep", "w")
    clock.advance(1)
    assert [t.id for t in await storage.claim_next_tasks("w", 10)] == ["blocked", "delayed"]


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["email"], ["e1", "e2"]),
        (["report", "email"], ["r1", "e1", "e2"]),
        (["nothing-of-this-type"], []),
        ([], []),
        (None, ["r1", "e1", "x1", "e2"]),
    ],
    ids=["one", "two", "none-match", "empty-list", "any"],
)
async def test_claim_next_tasks_honours_task_types(
    storage: Storage, clock: FakeClock, types: list[str] | None, expected: list[str]
) -> None:
    await storage.store_tasks(
        [
            _task("e1", created=_at(clock, 1), task_type="email"),
            _task("r1", created=_at(clock, 2), task_type="report", priority=TaskPriority.High),
            _task("x1", created=_at(clock, 3), task_type="other"),
            _task("e2", created=_at(clock, 4), task_type="email"),
        ]
    )
    got = await storage.claim_next_tasks("w", 10, task_types=types)
    assert [t.id for t in got] == expected
    assert len(await storage.get_ready_tasks()) == 4 - len(expected)


async def test_claim_next_tasks_requeues_expired_leases_first(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task(f"t{i}", created=_at(clock, i)) for i in range(3)])
    assert len(await storage.claim_next_tasks("late", 2)) == 2
    clock.advance(LEASE.total_seconds() + 1)
    # The expired claims count as failed attempts (retried after a backoff): this batch
    # requeued them before it picked.
    assert [t.id for t in await storage.claim_next_tasks("w", 10)] == ["t2"]
    for task_id in ("t0", "t1"):
        task = await _get(storage, task_id)
        assert (task.status, task.retry_count, task.assigned_to) == (TaskStatus.Pending, 1, None)
        with pytest.raises(LeaseLostError):
            await storage.complete_task(task_id, "late")
    await storage.complete_task("t2", "w")
    clock.advance(3600)
    got = await storage.claim_next_tasks("w", 10)
    assert [(t.id, t.retry_count, t.assigned_to) for t in got] == [("t0", 1, "w"), ("t1", 1, "w")]


async def _limits_scenario(storage: Storage, clock: FakeClock) -> None:
    """Tasks of limited keys among free ones, of two types, some held already."""
    await storage.set_concurrency_limit("two", 2)
    await storage.set_concurrency_limit("paused", 0)
    await storage.set_rate_limit("rated", 3, per=3600)
    await storage.set_concurrency_limit("mixed", 3)
    await storage.set_rate_limit("mixed", 2, per=3600)
    await storage.store_task(_task("held", created=_at(clock, 0), concurrency_key="two"))
    assert await storage.claim_task("held", "someone")
    keys = [None, "two", "paused", "rated", "mixed", "unlimited", None, "two", "rated"]
    priorities = list(TaskPriority)
    tasks = []
    for i in range(36):
        key = keys[i % len(keys)]
        tasks.append(
            _task(
                f"t{i:02}",
                created=_at(clock, 1 + i),
                priority=priorities[(i * 7) % len(priorities)],
                task_type="a" if i % 4 else "b",
                concurrency_key=key,
            )
        )
    await storage.store_tasks(tasks)


@pytest.mark.parametrize("n", [1, 3, 7, 100])
@pytest.mark.parametrize("types", [None, ["a"]], ids=["any-type", "one-type"])
async def test_batches_claim_what_single_claims_would_under_queue_controls(
    storage_factory: StorageFactory, clock: FakeClock, n: int, types: list[str] | None
) -> None:
    """Concurrency limits (with a task held before), a paused key, a rate limit and both on
    one key: the batches claim the very tasks, in the very order, that single claims do."""
    batched = await storage_factory(clock=clock)
    single = await storage_factory(clock=clock)
    for s in (batched, single):
        await _limits_scenario(s, clock)
    batches = await _claim_in_batches(batched, n, task_types=types)
    expected = await _claim_one_by_one(single, task_types=types)
    assert _flat(batches) == expected
    assert all(len(batch) == n for batch in batches[:-1])
    # The limits held: two of "two" at once (one held before), none paused, three rated.
    held = await batched.get_tasks_by_agent("w1")
    by_key: dict[str | None, int] = {}
    for task in held:
        by_key[task.concurrency_key] = by_key.get(task.concurrency_key, 0) + 1
    assert by_key.get("two", 0) <= 1
    assert by_key.get("paused", 0) == 0
    assert by_key.get("rated", 0) <= 3
    assert by_key.get("mixed", 0) <= 2
    assert await _snapshot(batched) == await _snapshot(single)


async def test_a_batch_never_claims_past_a_concurrency_limit(storage: Storage) -> None:
    await storage.set_concurrency_limit("k", 3)
    await storage.store_tasks([_task(f"k{i}", concurrency_key="k") for i in range(10)])
    await storage.store_tasks([_task(f"f{i}") for i in range(2)])
    got = await storage.claim_next_tasks("w", 50)
    assert sorted(t.id for t in got) == ["f0", "f1", "k0", "k1", "k2"]
    assert await storage.claim_next_tasks("w", 50) == []
    # A completion frees one slot, and the next batch takes just that one.
    await storage.complete_tasks([("k0", None)], "w")
    assert [t.id for t in await storage.claim_next_tasks("w", 50)] == ["k3"]


async def test_a_batch_never_claims_past_a_rate_limit(storage: Storage, clock: FakeClock) -> None:
    await storage.set_rate_limit("k", 4, per=60)
    await storage.store_tasks(
        [_task(f"k{i}", created=_at(clock, i), concurrency_key="k") for i in range(10)]
    )
    got = await storage.claim_next_tasks("w", 3)
    assert [t.id for t in got] == ["k0", "k1", "k2"]
    await storage.complete_tasks({t.id: None for t in got}, "w")
    assert [t.id for t in await storage.claim_next_tasks("w", 10)] == ["k3"]
    assert await storage.claim_next_tasks("w", 10) == []
    clock.advance(61)
    assert [t.id for t in await storage.claim_next_tasks("w", 10)] == ["k4", "k5", "k6", "k7"]


async def test_eight_coroutines_claiming_batches_claim_each_task_once(storage: Storage) -> None:
    await storage.set_concurrency_limit("k", 5)
    await storage.store_tasks([_task(f"t{i:03}") for i in range(150)])
    await storage.store_tasks([_task(f"k{i:02}", concurrency_key="k") for i in range(30)])

    async def claimer(agent: str) -> list[str]:
        got: list[str] = []
        while batch := await storage.claim_next_tasks(agent, 7):
            got += [t.id for t in batch]
            await asyncio.sleep(0)
        return got

    lists = await within(asyncio.gather(*(claimer(f"w{i}") for i in range(8))))
    claimed = [task_id for got in lists for task_id in got]
    assert len(claimed) == len(set(claimed)) == 155
    assert sum(task_id.startswith("k") for task_id in claimed) == 5
    for agent, got in zip([f"w{i}" for i in range(8)], lists, strict=True):
        assert sorted(t.id for t in await storage.get_tasks_by_agent(agent)) == sorted(got)


async def test_eight_coroutines_claiming_and_completing_batches_run_each_task_once(
    storage: Storage,
) -> None:
    await storage.store_tasks([_task(f"t{i:03}") for i in range(120)])
    await storage.store_tasks(
        [_task(f"d{i:03}", deps=[f"t{i:03}", f"t{i + 1:03}"]) for i in range(0, 120, 2)]
    )

    async def worker(agent: str) -> list[str]:
        got: list[str] = []
        while batch := await storage.claim_next_tasks(agent, 5):
            got += [t.id for t in batch]
            done = await storage.complete_tasks([(t.id, {"by": agent}) for t in batch], agent)
            assert [t.status for t in done] == [TaskStatus.Completed] * len(batch)
        return got

    lists = await within(asyncio.gather(*(worker(f"w{i}") for i in range(8))))
    ran = [task_id for got in lists for task_id in got]
    assert len(ran) == len(set(ran)) == 180
    assert await storage.get_pending_tasks() == []


# --- complete_tasks -----------------------------------------------------------------------------


async def test_complete_tasks_completes_each_and_returns_them_in_order(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task(f"t{i}", created=_at(clock, i)) for i in range(3)])
    await storage.claim_next_tasks("w", 3)
    await storage.start_task("t1", "w")
    clock.advance(2)
    done = await storage.complete_tasks([("t2", {"n": 2}), ("t0", None), ("t1", [1, "x"])], "w")
    assert [t.id for t in done] == ["t2", "t0", "t1"]
    assert [t.result for t in done] == [{"n": 2}, None, [1, "x"]]
    for task in done:
        assert task.status == TaskStatus.Completed
        assert task.completed_at == clock()
        assert task.lease_expires_at is None
        assert task == await _get(storage, task.id)


async def test_complete_tasks_takes_a_mapping_and_an_empty_batch(storage: Storage) -> None:
    await storage.store_tasks([_task("a"), _task("b")])
    await storage.claim_next_tasks("w", 2)
    done = await storage.complete_tasks({"b": "B", "a": "A"}, "w")
    assert [(t.id, t.result) for t in done] == [("b", "B"), ("a", "A")]
    assert await storage.complete_tasks([], "w") == []
    assert await storage.complete_tasks({}, "w") == []


async def test_complete_tasks_makes_dependents_ready(storage: Storage, clock: FakeClock) -> None:
    await storage.store_tasks(
        [_task(f"t{i}", created=_at(clock, i)) for i in range(4)]
        + [
            _task("both", created=_at(clock, 10), deps=["t0", "t1"]),
            _task("one-left", created=_at(clock, 11), deps=["t0", "t3"]),
            _task("after-both", created=_at(clock, 12), deps=["both"]),
        ]
    )
    assert len(await storage.claim_next_tasks("w", 3)) == 3
    await storage.complete_tasks([("t0", 0), ("t1", 1)], "w")
    assert [t.id for t in await storage.get_ready_tasks()] == ["t3", "both"]
    assert await storage.get_dependency_results("both") == {"t0": 0, "t1": 1}
    got = await storage.claim_next_tasks("w", 10)
    assert [t.id for t in got] == ["t3", "both"]
    await storage.complete_tasks([("t3", 3), ("both", "b"), ("t2", 2)], "w")
    assert [t.id for t in await storage.claim_next_tasks("w", 10)] == ["one-left", "after-both"]


async def test_complete_tasks_frees_concurrency_slots(storage: Storage, clock: FakeClock) -> None:
    await storage.set_concurrency_limit("k", 2)
    await storage.store_tasks(
        [_task(f"k{i}", created=_at(clock, i), concurrency_key="k") for i in range(5)]
    )
    first = await storage.claim_next_tasks("w", 5)
    assert [t.id for t in first] == ["k0", "k1"]
    await storage.complete_tasks([(t.id, None) for t in first], "w")
    assert [t.id for t in await storage.claim_next_tasks("w", 5)] == ["k2", "k3"]


async def test_complete_tasks_with_a_task_not_held_completes_none(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task(f"t{i}", created=_at(clock, i)) for i in range(4)])
    await storage.claim_next_tasks("w", 2)
    await storage.claim_next_tasks("other", 1)  # t2
    err = await _refused(
        storage,
        storage.complete_tasks([("t0", 0), ("t2", 2), ("t1", 1)], "w"),
        LeaseLostError,
    )
    assert "t2" in str(err)
    # A pending task, and a task completed already, are not held either.
    await _refused(storage, storage.complete_tasks([("t0", 0), ("t3", 3)], "w"), LeaseLostError)
    await storage.complete_task("t1", "w")
    await _refused(storage, storage.complete_tasks([("t0", 0), ("t1", 1)], "w"), LeaseLostError)
    await _refused(storage, storage.complete_tasks([("t0", 0), ("ghost", 1)], "w"), NotFoundError)
    # The first problem in the order given is the one raised.
    with pytest.raises(NotFoundError):
        await storage.complete_tasks([("ghost", 1), ("t3", 3)], "w")
    assert (await _get(storage, "t0")).status == TaskStatus.Assigned
    assert [t.id for t in await storage.complete_tasks([("t0", 0)], "w")] == ["t0"]


async def test_complete_tasks_with_an_expired_lease_requeues_it_and_completes_none(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task("short"), _task("long")])
    await storage.claim_task("short", "w", lease=5)
    await storage.claim_task("long", "w", lease=60)
    clock.advance(6)
    with pytest.raises(LeaseLostError):
        await storage.complete_tasks([("long", 1), ("short", 2)], "w")
    short, long = await _get(storage, "short"), await _get(storage, "long")
    # The expiry stands (a failed attempt), as for complete_task; the other is still held.
    assert (short.status, short.retry_count, short.assigned_to) == (TaskStatus.Pending, 1, None)
    assert (long.status, long.result) == (TaskStatus.Assigned, None)
    assert [t.id for t in await storage.complete_tasks([("long", 1)], "w")] == ["long"]


async def test_complete_tasks_wakes_the_waiters_after_the_commit(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks(
        [
            _task("a", created=_at(clock, 0)),
            _task("b", created=_at(clock, 1)),
            _task("next", created=_at(clock, 2), deps=["a", "b"]),
        ]
    )
    await storage.claim_next_tasks("w", 2)
    finished = asyncio.create_task(storage.wait_for_task("b"))
    ready = asyncio.create_task(storage.wait_for_tasks())
    await asyncio.sleep(0.01)
    assert not finished.done()
    assert not ready.done()
    await storage.complete_tasks([("a", None), ("b", "B")], "w")
    got = await within(finished)
    assert got is not None
    assert got.result == "B"
    assert await within(ready)


async def test_complete_tasks_joins_a_transaction_with_the_events_written_beside_it(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task(f"t{i}", created=_at(clock, i)) for i in range(3)])
    await storage.claim_next_tasks("w", 3)
    async with storage.transaction() as tx:
        await tx.complete_tasks([("t0", 0), ("t1", 1)], "w")
        await tx.store_events([EventModel.new("task.completed", {"id": i}) for i in ("t0", "t1")])
    events = await storage.read_events()
    assert [e.payload for e in events] == [{"id": "t0"}, {"id": "t1"}]
    assert [e.sequence for e in events] == sorted(e.sequence or 0 for e in events)
    assert [(await _get(storage, t)).status for t in ("t0", "t1")] == [TaskStatus.Completed] * 2
    # Rolled back: neither the completion nor its event stays.
    tx = await storage.begin_transaction()
    await tx.complete_tasks([("t2", 2)], "w")
    await tx.store_event(EventModel.new("task.completed", {"id": "t2"}))
    await tx.rollback()
    assert (await _get(storage, "t2")).status == TaskStatus.Assigned
    assert len(await storage.read_events()) == 2


async def test_claim_next_tasks_in_a_transaction_is_undone_by_its_rollback(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks([_task(f"t{i}", created=_at(clock, i)) for i in range(3)])
    tx = await storage.begin_transaction()
    assert len(await tx.claim_next_tasks("w", 2)) == 2
    await tx.rollback()
    assert [t.id for t in await storage.get_ready_tasks()] == ["t0", "t1", "t2"]
    async with storage.transaction() as tx:
        got = await tx.claim_next_tasks("w", 5)
    assert [t.id for t in got] == ["t0", "t1", "t2"]


__all__ = [name for name in list(globals()) if name.startswith("test_")]
