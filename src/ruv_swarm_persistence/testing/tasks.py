"""Conformance tests of the task queue: storage, dependencies, readiness, claims, waiting.

Pull them into a backend's test module with ``from ruv_swarm_persistence.testing.tasks import *``
next to a ``storage_factory`` fixture (see :mod:`ruv_swarm_persistence.testing`). Every test
takes "now" from the fake ``clock`` and moves it explicitly, so nothing depends on real time.
The status machine, retries, leases and agents' tasks are in :mod:`.task_lifecycle`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ..errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from ..models import TaskModel, TaskPriority, TaskStatus
from ..storage import Storage
from . import FakeClock
from ._task_support import (
    LEASE,
    US,
    _at,
    _claimed,
    _get,
    _ids,
    _refused,
    _snapshot,
    _task,
)

# --- store / get / update / delete ------------------------------------------------------------


async def test_task_round_trips_every_field(storage: Storage, clock: FakeClock) -> None:
    await storage.store_task(_task("dep", status=TaskStatus.Completed))
    base = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    task = TaskModel(
        id="task-ü-1",
        task_type="analysis",
        priority=TaskPriority.Critical,
        status=TaskStatus.Pending,
        assigned_to="worker-7",
        payload={"text": "héllo 🌍", "n": [1, 2.5, -3, 2**63 - 1], "ok": True, "none": None},
        result={"partial": [1, 2]},
        error="previous attempt failed",
        retry_count=2,
        max_retries=5,
        dependencies=["dep"],
        created_at=base,
        updated_at=base + 1 * US,
        started_at=base + 2 * US,
        completed_at=base + 3 * US,
        lease_expires_at=base + 4 * US,
        run_after=base + 5 * US,
    )
    await storage.store_task(task)
    got = await _get(storage, "task-ü-1")
    assert got == task
    assert isinstance(got.priority, TaskPriority)
    assert isinstance(got.status, TaskStatus)
    assert got.created_at.microsecond == 123456
    assert got.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        [],
        "plain text",
        0,
        -(2**63),
        2**64 - 1,
        1.5e-300,
        True,
        None,
        {"nested": {"deep": [{"a": [1, {"b": None}]}]}},
        {"unicode": "日本語 \u2028 \\ \" '", "": "empty key"},
    ],
    ids=[
        "empty-object",
        "empty-list",
        "string",
        "zero",
        "min-int",
        "max-uint",
        "tiny-float",
        "bool",
        "null",
        "nested",
        "unicode",
    ],
)
async def test_task_payload_round_trips(storage: Storage, payload: Any) -> None:
    task = _task("t")
    task.payload = payload
    await storage.store_task(task)
    got = await _get(storage, "t")
    assert got.payload == payload
    assert type(got.payload) is type(payload)


@pytest.mark.parametrize(
    "when",
    [
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2001, 9, 9, 1, 46, 40, 999999, tzinfo=UTC),
        datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 6, 1, 12, 0, 0, 7, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
    ids=["epoch+1us", "2001", "2262", "9999", "epoch-1us", "offset+0530"],
)
async def test_task_times_keep_microseconds(storage: Storage, when: datetime) -> None:
    await storage.store_task(_task("t", created=when, run_after=when, started_at=when))
    got = await _get(storage, "t")
    assert got.created_at == when
    assert got.run_after == when
    assert got.started_at == when
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.created_at.microsecond == when.astimezone(UTC).microsecond


async def test_get_missing_task_returns_none(storage: Storage) -> None:
    assert await storage.get_task("nope") is None


async def test_store_task_duplicate_id_conflicts(storage: Storage) -> None:
    await storage.store_task(_task("t", priority=TaskPriority.Low))
    with pytest.raises(ConflictError):
        await storage.store_task(_task("t", priority=TaskPriority.High))
    assert (await _get(storage, "t")).priority == TaskPriority.Low


async def test_store_tasks_duplicate_inside_batch_stores_nothing(storage: Storage) -> None:
    with pytest.raises(ConflictError):
        await storage.store_tasks([_task("a"), _task("b"), _task("a")])
    assert await _snapshot(storage) == []


async def test_store_tasks_duplicate_of_stored_stores_nothing(storage: Storage) -> None:
    await storage.store_task(_task("a"))
    await _refused(storage, storage.store_tasks([_task("b"), _task("a")]), ConflictError)


async def test_store_tasks_with_invalid_member_stores_nothing(storage: Storage) -> None:
    bad = _task("c")
    bad.payload = {"x": float("nan")}
    with pytest.raises(ValidationError):
        await storage.store_tasks([_task("a"), _task("b", deps=["a"]), bad])
    assert await _snapshot(storage) == []


async def test_store_tasks_empty_batch_is_a_no_op(storage: Storage) -> None:
    await storage.store_tasks([])
    assert await _snapshot(storage) == []


async def test_store_tasks_stores_every_member(storage: Storage) -> None:
    tasks = [_task(f"t{i}") for i in range(5)]
    await storage.store_tasks(tasks)
    assert await _snapshot(storage) == sorted(tasks, key=lambda t: t.id)


async def test_update_task_replaces_fields(storage: Storage, clock: FakeClock) -> None:
    await storage.store_task(_task("t"))
    task = await _get(storage, "t")
    task.payload = {"v": 2}
    task.priority = TaskPriority.Critical
    task.result = [1, "two"]
    task.error = "note"
    task.max_retries = 9
    task.updated_at = _at(clock, 17)
    await storage.update_task(task)
    assert await _get(storage, "t") == task


async def test_update_missing_task_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await storage.update_task(_task("ghost"))
    assert await storage.get_task("ghost") is None


async def test_delete_task_is_idempotent(storage: Storage) -> None:
    await storage.store_tasks([_task("a"), _task("b")])
    await storage.delete_task("a")
    assert await storage.get_task("a") is None
    await storage.delete_task("a")
    await storage.delete_task("never-existed")
    assert await _ids(storage.get_pending_tasks()) == ["b"]


async def test_delete_task_others_depend_on_conflicts(storage: Storage) -> None:
    await storage.store_tasks([_task("a"), _task("b", deps=["a"])])
    await _refused(storage, storage.delete_task("a"), ConflictError)
    await storage.delete_task("b")
    await storage.delete_task("a")
    assert await _snapshot(storage) == []


async def test_delete_task_depended_on_by_finished_task_still_conflicts(
    storage: Storage,
) -> None:
    await storage.store_tasks([_task("a"), _task("b", deps=["a"])])
    await storage.cancel_task("a")
    with pytest.raises(ConflictError):
        await storage.delete_task("a")
    assert (await _get(storage, "a")).status == TaskStatus.Cancelled


async def test_deleted_task_id_can_be_reused(storage: Storage) -> None:
    await storage.store_task(_task("a", priority=TaskPriority.Low))
    await storage.delete_task("a")
    await storage.store_task(_task("a", priority=TaskPriority.High))
    assert (await _get(storage, "a")).priority == TaskPriority.High
    assert await _ids(storage.get_ready_tasks()) == ["a"]


# --- dependencies -----------------------------------------------------------------------------


async def test_unknown_dependency_is_refused(storage: Storage) -> None:
    with pytest.raises(ValidationError) as exc:
        await storage.store_tasks([_task("a"), _task("b", deps=["a", "missing"])])
    assert exc.value.field == "task.dependencies"
    assert "missing" in str(exc.value)
    assert await _snapshot(storage) == []


async def test_self_dependency_is_refused(storage: Storage) -> None:
    with pytest.raises(ValidationError) as exc:
        await storage.store_task(_task("a", deps=["a"]))
    assert exc.value.field == "task.dependencies"
    assert await _snapshot(storage) == []


@pytest.mark.parametrize(
    "edges",
    [
        {"a": ["b"], "b": ["a"]},
        {"a": ["c"], "b": ["a"], "c": ["b"]},
        {"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]},
    ],
    ids=["two", "three", "behind-a-root"],
)
async def test_dependency_cycle_in_batch_is_refused(
    storage: Storage, edges: dict[str, list[str]]
) -> None:
    await storage.store_task(_task("existing"))
    batch = [_task(tid, deps=deps) for tid, deps in edges.items()]
    await _refused(storage, storage.store_tasks(batch), field="task.dependencies")


async def test_duplicate_dependency_is_refused(storage: Storage) -> None:
    await storage.store_task(_task("a"))
    with pytest.raises(ValidationError) as exc:
        await storage.store_task(_task("b", deps=["a", "a"]))
    assert exc.value.field == "task.dependencies"
    assert await storage.get_task("b") is None


@pytest.mark.parametrize("order", ["abc", "acb", "bac", "bca", "cab", "cba"])
async def test_batch_members_may_depend_on_each_other_in_any_order(
    storage: Storage, clock: FakeClock, order: str
) -> None:
    made = {
        "a": _task("a", created=_at(clock, 1)),
        "b": _task("b", created=_at(clock, 2), deps=["a"]),
        "c": _task("c", created=_at(clock, 3), deps=["a", "b"]),
    }
    await storage.store_tasks([made[k] for k in order])
    assert await _ids(storage.get_pending_tasks()) == ["a", "b", "c"]
    assert await _ids(storage.get_ready_tasks()) == ["a"]
    for tid in "abc":
        assert (await _get(storage, tid)).dependencies == made[tid].dependencies


async def test_diamond_dependencies_wait_for_every_parent(storage: Storage) -> None:
    await storage.store_tasks([_task("root"), _task("l", deps=["root"]), _task("r", deps=["root"])])
    await storage.store_task(_task("join", deps=["l", "r"]))
    for tid in ("root", "l"):
        assert await storage.claim_task(tid, "w")
        await storage.complete_task(tid, "w")
    assert "join" not in await _ids(storage.get_ready_tasks())
    assert await storage.claim_task("r", "w")
    await storage.complete_task("r", "w")
    assert await _ids(storage.get_ready_tasks()) == ["join"]


async def test_dependency_on_completed_task_is_ready_at_once(storage: Storage) -> None:
    await storage.store_task(_task("done", status=TaskStatus.Completed))
    await storage.store_task(_task("next", deps=["done"]))
    assert await _ids(storage.get_ready_tasks()) == ["next"]


@pytest.mark.parametrize("dep_status", [TaskStatus.Pending, TaskStatus.Running])
async def test_dependency_on_unfinished_task_waits(
    storage: Storage, dep_status: TaskStatus
) -> None:
    assigned = "w" if dep_status == TaskStatus.Running else None
    await storage.store_task(_task("dep", status=dep_status, assigned_to=assigned))
    await storage.store_task(_task("next", deps=["dep"]))
    assert "next" not in await _ids(storage.get_ready_tasks())
    assert not await storage.claim_task("next", "w2")
    assert (await _get(storage, "next")).status == TaskStatus.Pending


@pytest.mark.parametrize("dep_status", [TaskStatus.Failed, TaskStatus.Cancelled])
async def test_task_depending_on_dead_task_is_stored_cancelled(
    storage: Storage, dep_status: TaskStatus
) -> None:
    await storage.store_task(_task("dead", status=dep_status))
    await storage.store_task(_task("child", deps=["dead"]))
    child = await _get(storage, "child")
    assert child.status == TaskStatus.Cancelled
    assert child.error is not None
    assert "dead" in child.error
    assert dep_status.value in child.error
    assert await storage.get_ready_tasks() == []


async def test_batch_member_depending_on_dead_member_is_stored_cancelled(
    storage: Storage,
) -> None:
    await storage.store_tasks(
        [
            _task("grandchild", deps=["child"]),
            _task("child", deps=["dead"]),
            _task("dead", status=TaskStatus.Failed),
            _task("alive"),
        ]
    )
    child = await _get(storage, "child")
    grandchild = await _get(storage, "grandchild")
    assert child.status == grandchild.status == TaskStatus.Cancelled
    assert child.error is not None
    assert "dead" in child.error
    assert grandchild.error is not None
    assert "child" in grandchild.error
    assert await _ids(storage.get_ready_tasks()) == ["alive"]


@pytest.mark.parametrize(
    "change",
    [["a", "b"], [], ["b"]],
    ids=["add", "remove", "replace"],
)
async def test_dependencies_are_immutable(storage: Storage, change: list[str]) -> None:
    await storage.store_tasks([_task("a"), _task("b"), _task("c", deps=["a"])])
    task = await _get(storage, "c")
    task.dependencies = change
    await _refused(storage, storage.update_task(task), field="task.dependencies")


# --- readiness and claims ---------------------------------------------------------------------


async def test_pending_tasks_by_priority_then_oldest(storage: Storage, clock: FakeClock) -> None:
    await storage.store_task(_task("blocker", created=_at(clock, 20)))
    await storage.store_tasks(
        [
            _task("low-old", created=_at(clock, 1), priority=TaskPriority.Low),
            _task("high-new", created=_at(clock, 9), priority=TaskPriority.High),
            _task("high-old", created=_at(clock, 2), priority=TaskPriority.High),
            _task("crit", created=_at(clock, 5), priority=TaskPriority.Critical, deps=["blocker"]),
            _task("med-later", created=_at(clock, 4), run_after=clock() + timedelta(hours=1)),
            _task("done", created=_at(clock, 0), status=TaskStatus.Completed),
            _task("held", created=_at(clock, 0), status=TaskStatus.Assigned, assigned_to="w"),
        ]
    )
    assert await _ids(storage.get_pending_tasks()) == [
        "crit",
        "high-old",
        "high-new",
        "med-later",
        "blocker",
        "low-old",
    ]


async def test_ready_tasks_are_only_the_claimable_ones(storage: Storage, clock: FakeClock) -> None:
    await storage.store_tasks(
        [
            _task("blocker", created=_at(clock, 0), priority=TaskPriority.Low),
            _task("blocked", created=_at(clock, 1), deps=["blocker"], priority=TaskPriority.High),
            _task("later", created=_at(clock, 2), run_after=clock() + 1 * US),
            _task("now", created=_at(clock, 3), run_after=clock()),
            _task("past", created=_at(clock, 4), run_after=clock() - timedelta(days=1)),
            _task("crit", created=_at(clock, 5), priority=TaskPriority.Critical),
            _task("held", created=_at(clock, 6), status=TaskStatus.Running, assigned_to="w"),
        ]
    )
    assert await _ids(storage.get_ready_tasks()) == ["crit", "now", "past", "blocker"]
    clock.advance(1 * US)
    assert await _ids(storage.get_ready_tasks()) == ["crit", "later", "now", "past", "blocker"]


@pytest.mark.parametrize(("limit", "expected"), [(0, 0), (1, 1), (3, 3), (5, 5), (99, 5)])
async def test_ready_tasks_limit(
    storage: Storage, clock: FakeClock, limit: int, expected: int
) -> None:
    await storage.store_tasks([_task(f"t{i}", created=_at(clock, i)) for i in range(5)])
    got = await _ids(storage.get_ready_tasks(limit))
    assert got == [f"t{i}" for i in range(expected)]


async def test_ready_tasks_empty_storage(storage: Storage) -> None:
    assert await storage.get_ready_tasks() == []
    assert await storage.get_pending_tasks() == []


async def test_run_after_becomes_due_as_clock_moves(storage: Storage, clock: FakeClock) -> None:
    await storage.store_task(_task("t", run_after=clock() + timedelta(seconds=10)))
    assert not await storage.claim_task("t", "w")
    assert await storage.claim_next_task("w") is None
    clock.advance(10)
    assert await _ids(storage.get_ready_tasks()) == ["t"]
    claimed = await storage.claim_next_task("w")
    assert claimed is not None
    assert claimed.id == "t"


async def test_ready_needs_both_dependencies_and_run_after(
    storage: Storage, clock: FakeClock
) -> None:
    later = clock() + timedelta(seconds=5)
    await storage.store_tasks([_task("dep"), _task("t", deps=["dep"], run_after=later)])
    assert await storage.claim_task("dep", "w")
    clock.advance(5)
    assert await _ids(storage.get_ready_tasks()) == []
    assert not await storage.claim_task("t", "w")
    await storage.complete_task("dep", "w")
    assert await _ids(storage.get_ready_tasks()) == ["t"]


async def test_dependency_completed_before_run_after_still_waits(
    storage: Storage, clock: FakeClock
) -> None:
    later = clock() + timedelta(seconds=5)
    await storage.store_tasks([_task("dep"), _task("t", deps=["dep"], run_after=later)])
    assert await storage.claim_task("dep", "w")
    await storage.complete_task("dep", "w")
    assert await storage.get_ready_tasks() == []
    assert await storage.claim_next_task("w") is None
    clock.advance(timedelta(seconds=5) - US)
    assert await storage.claim_next_task("w") is None
    clock.advance(US)
    claimed = await storage.claim_next_task("w")
    assert claimed is not None
    assert claimed.id == "t"


async def test_claim_task_on_ready_task(storage: Storage, clock: FakeClock) -> None:
    await storage.store_task(_task("t"))
    assert await storage.claim_task("t", "w1")
    task = await _get(storage, "t")
    assert task.status == TaskStatus.Assigned
    assert task.assigned_to == "w1"
    assert task.lease_expires_at == clock() + LEASE
    assert task.updated_at == clock()
    assert await storage.get_ready_tasks() == []
    assert await _ids(storage.get_tasks_by_agent("w1")) == ["t"]


@pytest.mark.parametrize(
    "setup",
    ["blocked", "delayed", "assigned", "running", "completed", "failed", "cancelled"],
)
async def test_claim_task_refuses_unready_task(
    storage: Storage, clock: FakeClock, setup: str
) -> None:
    await storage.store_task(_task("dep"))
    setups: dict[str, dict[str, Any]] = {
        "blocked": {"deps": ["dep"]},
        "delayed": {"run_after": clock() + timedelta(seconds=5)},
        "assigned": {"status": TaskStatus.Assigned, "assigned_to": "other"},
        "running": {"status": TaskStatus.Running, "assigned_to": "other"},
        "completed": {"status": TaskStatus.Completed},
        "failed": {"status": TaskStatus.Failed},
        "cancelled": {"status": TaskStatus.Cancelled},
    }
    await storage.store_task(_task("t", **setups[setup]))
    before = await _snapshot(storage)
    assert await storage.claim_task("t", "w") is False
    assert await _snapshot(storage) == before


async def test_claim_task_missing_id_is_false(storage: Storage) -> None:
    assert await storage.claim_task("ghost", "w") is False
    assert await storage.get_task("ghost") is None


async def test_claim_task_twice_only_first_wins(storage: Storage) -> None:
    await storage.store_task(_task("t"))
    assert await storage.claim_task("t", "w1")
    assert not await storage.claim_task("t", "w2")
    assert (await _get(storage, "t")).assigned_to == "w1"


async def test_claim_next_task_priority_then_oldest(storage: Storage, clock: FakeClock) -> None:
    await storage.store_tasks(
        [
            _task("low", created=_at(clock, 0), priority=TaskPriority.Low),
            _task("med-new", created=_at(clock, 5)),
            _task("med-old", created=_at(clock, 1)),
            _task("high", created=_at(clock, 9), priority=TaskPriority.High),
        ]
    )
    order = []
    while (task := await storage.claim_next_task("w")) is not None:
        assert task.status == TaskStatus.Assigned
        assert task.assigned_to == "w"
        assert task.lease_expires_at == clock() + LEASE
        order.append(task.id)
    assert order == ["high", "med-old", "med-new", "low"]


async def test_claim_next_task_returns_stored_state(storage: Storage) -> None:
    await storage.store_task(_task("t"))
    claimed = await storage.claim_next_task("w")
    assert claimed == await _get(storage, "t")


async def test_claim_next_task_skips_blocked_and_delayed(
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
        ]
    )
    first = await storage.claim_next_task("w")
    assert first is not None
    assert first.id == "dep"
    assert await storage.claim_next_task("w") is None
    await storage.complete_task("dep", "w")
    clock.advance(1)
    got = [await storage.claim_next_task("w") for _ in range(3)]
    assert [t.id if t else None for t in got] == ["blocked", "delayed", None]


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
async def test_claim_next_task_honours_task_types(
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
    got = []
    while (task := await storage.claim_next_task("w", types)) is not None:
        got.append(task.id)
    assert got == expected
    assert len(await storage.get_ready_tasks()) == 4 - len(expected)


async def test_claim_next_task_on_empty_storage(storage: Storage) -> None:
    assert await storage.claim_next_task("w") is None


# --- waiting for work -------------------------------------------------------------------------

WAKE_BOUND_S = 10  # a missed wake-up fails the test instead of hanging it


async def _waiting(storage: Storage, task_types: list[str] | None = None) -> asyncio.Task[bool]:
    """A waiter with no timeout, started in its own task and left waiting."""
    waiter = asyncio.create_task(storage.wait_for_tasks(task_types=task_types))
    await asyncio.sleep(0.01)
    # Nothing is ready and there is no timeout: the waiter can only still be waiting.
    assert not waiter.done()
    return waiter


async def test_wait_for_tasks_returns_at_once_when_a_task_is_ready(storage: Storage) -> None:
    await storage.store_task(_task("t1"))
    assert await asyncio.wait_for(storage.wait_for_tasks(), WAKE_BOUND_S) is True
    assert await asyncio.wait_for(storage.wait_for_tasks(timeout=0), WAKE_BOUND_S) is True


async def test_wait_for_tasks_times_out_when_nothing_is_ready(
    storage: Storage, clock: FakeClock
) -> None:
    await storage.store_tasks(
        [
            _task("held"),
            _task("later", run_after=clock() + timedelta(hours=1)),
            _task("blocked", deps=["held"]),
        ]
    )
    assert await storage.claim_task("held", "w")
    assert await asyncio.wait_for(storage.wait_for_tasks(timeout=0.05), WAKE_BOUND_S) is False
    assert await asyncio.wait_for(storage.wait_for_tasks(timeout=0), WAKE_BOUND_S) is False


async def test_wait_for_tasks_is_woken_when_a_task_is_stored(storage: Storage) -> None:
    waiter = await _waiting(storage)
    await storage.store_task(_task("t1"))
    assert await asyncio.wait_for(waiter, WAKE_BOUND_S) is True


async def test_wait_for_tasks_is_woken_when_a_dependency_completes(storage: Storage) -> None:
    await storage.store_task(_task("parent"))
    assert await storage.claim_task("parent", "w")
    await storage.store_task(_task("child", deps=["parent"]))
    waiter = await _waiting(storage)
    await storage.complete_task("parent", "w")
    assert await asyncio.wait_for(waiter, WAKE_BOUND_S) is True
    assert await _ids(storage.get_ready_tasks()) == ["child"]


async def test_wait_for_tasks_honours_task_types(storage: Storage) -> None:
    await storage.store_task(_task("x1", task_type="other"))
    wait = storage.wait_for_tasks
    assert await asyncio.wait_for(wait(0.05, ["email"]), WAKE_BOUND_S) is False
    assert await asyncio.wait_for(wait(0, []), WAKE_BOUND_S) is False
    assert await asyncio.wait_for(wait(0, ["email", "other"]), WAKE_BOUND_S) is True
    waiter = await _waiting(storage, ["email"])
    await storage.store_task(_task("x2", task_type="other"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await storage.store_task(_task("e1", task_type="email"))
    assert await asyncio.wait_for(waiter, WAKE_BOUND_S) is True


@pytest.mark.parametrize(
    "args",
    [
        {"timeout": -1},
        {"timeout": "soon"},
        {"task_types": "email"},
        {"task_types": [""]},
        {"task_types": [1]},
    ],
    ids=["negative-timeout", "text-timeout", "bare-string-types", "empty-type", "int-type"],
)
async def test_wait_for_tasks_refuses_bad_arguments(storage: Storage, args: dict[str, Any]) -> None:
    await storage.store_task(_task("t1"))
    with pytest.raises(ValidationError):
        await asyncio.wait_for(storage.wait_for_tasks(**args), WAKE_BOUND_S)


async def test_tasks_by_agent(storage: Storage, clock: FakeClock) -> None:
    await storage.store_tasks(
        [
            _task("a-low", created=_at(clock, 0), priority=TaskPriority.Low),
            _task("a-high", created=_at(clock, 5), priority=TaskPriority.High),
            _task("a-old", created=_at(clock, 1)),
            _task("b", created=_at(clock, 2)),
            _task("free", created=_at(clock, 3)),
        ]
    )
    for tid in ("a-low", "a-high", "a-old"):
        assert await storage.claim_task(tid, "alice")
    assert await storage.claim_task("b", "bob")
    await storage.start_task("a-old", "alice")
    await storage.complete_task("a-old", "alice")
    assert await _ids(storage.get_tasks_by_agent("alice")) == ["a-high", "a-old", "a-low"]
    assert await _ids(storage.get_tasks_by_agent("bob")) == ["b"]
    assert await storage.get_tasks_by_agent("nobody") == []


# --- bad input --------------------------------------------------------------------------------


_BAD_FIELDS: dict[str, dict[str, Any]] = {
    "empty-id": {"id": ""},
    "long-id": {"id": "x" * 257},
    "nul-id": {"id": "a\x00b"},
    "int-id": {"id": 12},
    "empty-type": {"task_type": ""},
    "nul-type": {"task_type": "a\x00"},
    "bad-priority": {"priority": 7},
    "bool-priority": {"priority": True},
    "bad-status": {"status": "sleeping"},
    "naive-created": {"created_at": datetime(2024, 1, 1)},
    "string-created": {"created_at": "2024-01-01T00:00:00Z"},
    "naive-run-after": {"run_after": datetime(2024, 1, 1)},
    "nan-payload": {"payload": {"x": float("nan")}},
    "inf-payload": {"payload": [float("inf")]},
    "set-payload": {"payload": {1, 2}},
    "int-key-payload": {"payload": {1: "a"}},
    "tuple-payload": {"payload": (1, 2)},
    "bytes-payload": {"payload": b"raw"},
    "nul-in-payload": {"payload": {"k": "a\x00"}},
    "inf-result": {"result": float("-inf")},
    "negative-retries": {"max_retries": -1},
    "float-retry-count": {"retry_count": 1.0},
    "deps-string": {"dependencies": "a"},
    "deps-int": {"dependencies": [1]},
    "deps-empty-id": {"dependencies": [""]},
    "nul-error": {"error": "bad\x00"},
    "int-error": {"error": 3},
    "empty-assigned": {"assigned_to": ""},
    "held-without-agent": {"status": TaskStatus.Running},
    "not-a-task": {},
    "none": {},
}


def _bad_task(case: str, task_id: str) -> Any:
    """The malformed task of ``case``, aimed at ``task_id`` (stored or not)."""
    if case == "not-a-task":
        return {"id": task_id, "task_type": "job"}
    if case == "none":
        return None
    return _task(task_id, **_BAD_FIELDS[case])


async def _stored_pair(storage: Storage) -> None:
    """A pending task "p" and a task "h" held by "w" (what the bad calls must leave alone)."""
    await storage.store_task(_task("p"))
    await _claimed(storage, "h", "w")


@pytest.mark.parametrize("case", list(_BAD_FIELDS))
@pytest.mark.parametrize("method", ["store_task", "store_tasks", "update_task"])
async def test_bad_task_is_refused(storage: Storage, method: str, case: str) -> None:
    await _stored_pair(storage)
    call: Callable[[], Awaitable[Any]] = {
        "store_task": lambda: storage.store_task(_bad_task(case, "new")),
        "store_tasks": lambda: storage.store_tasks([_task("ok"), _bad_task(case, "new")]),
        "update_task": lambda: storage.update_task(_bad_task(case, "p")),
    }[method]
    await _refused(storage, call())


_NAN = float("nan")
_BAD_CALLS: dict[str, Callable[[Storage], Awaitable[Any]]] = {
    "store_tasks-not-a-list": lambda s: s.store_tasks(_task("x")),  # type: ignore[arg-type]
    "get_task-empty": lambda s: s.get_task(""),
    "get_task-none": lambda s: s.get_task(None),  # type: ignore[arg-type]
    "get_task-long": lambda s: s.get_task("x" * 257),
    "get_task-nul": lambda s: s.get_task("p\x00"),
    "delete_task-empty": lambda s: s.delete_task(""),
    "delete_task-int": lambda s: s.delete_task(1),  # type: ignore[arg-type]
    "ready-negative": lambda s: s.get_ready_tasks(-1),
    "ready-float": lambda s: s.get_ready_tasks(1.5),  # type: ignore[arg-type]
    "ready-string": lambda s: s.get_ready_tasks("3"),  # type: ignore[arg-type]
    "ready-bool": lambda s: s.get_ready_tasks(True),
    "by-agent-empty": lambda s: s.get_tasks_by_agent(""),
    "by-agent-nul": lambda s: s.get_tasks_by_agent("w\x00"),
    "claim-empty-task": lambda s: s.claim_task("", "w"),
    "claim-empty-agent": lambda s: s.claim_task("p", ""),
    "claim-long-agent": lambda s: s.claim_task("p", "w" * 257),
    "claim-zero-lease": lambda s: s.claim_task("p", "w", 0),
    "claim-negative-lease": lambda s: s.claim_task("p", "w", -1),
    "claim-nan-lease": lambda s: s.claim_task("p", "w", _NAN),
    "claim-inf-lease": lambda s: s.claim_task("p", "w", float("inf")),
    "claim-string-lease": lambda s: s.claim_task("p", "w", "10"),  # type: ignore[arg-type]
    "claim-negative-timedelta": lambda s: s.claim_task("p", "w", timedelta(seconds=-1)),
    "next-empty-agent": lambda s: s.claim_next_task(""),
    "next-types-string": lambda s: s.claim_next_task("w", "job"),
    "next-types-ints": lambda s: s.claim_next_task("w", [1]),  # type: ignore[list-item]
    "next-types-empty-name": lambda s: s.claim_next_task("w", [""]),
    "next-zero-lease": lambda s: s.claim_next_task("w", None, 0),
    "start-empty-task": lambda s: s.start_task("", "w"),
    "start-empty-agent": lambda s: s.start_task("h", ""),
    "start-nul-agent": lambda s: s.start_task("h", "w\x00"),
    "complete-nan-result": lambda s: s.complete_task("h", "w", {"v": _NAN}),
    "complete-int-key-result": lambda s: s.complete_task("h", "w", {1: "v"}),
    "complete-object-result": lambda s: s.complete_task("h", "w", object()),
    "complete-empty-agent": lambda s: s.complete_task("h", "", None),
    "fail-none-error": lambda s: s.fail_task("h", "w", None),  # type: ignore[arg-type]
    "fail-int-error": lambda s: s.fail_task("h", "w", 5),  # type: ignore[arg-type]
    "fail-nul-error": lambda s: s.fail_task("h", "w", "x\x00y"),
    "fail-empty-task": lambda s: s.fail_task("", "w", "e"),
    "heartbeat-zero-lease": lambda s: s.heartbeat_task("h", "w", 0),
    "heartbeat-negative-lease": lambda s: s.heartbeat_task("h", "w", timedelta(seconds=-5)),
    "heartbeat-string-lease": lambda s: s.heartbeat_task("h", "w", "5"),  # type: ignore[arg-type]
    "heartbeat-empty-agent": lambda s: s.heartbeat_task("h", ""),
    "cancel-empty": lambda s: s.cancel_task(""),
    "cancel-int-reason": lambda s: s.cancel_task("p", 5),  # type: ignore[arg-type]
    "cancel-nul-reason": lambda s: s.cancel_task("p", "a\x00"),
}


@pytest.mark.parametrize("call", list(_BAD_CALLS.values()), ids=list(_BAD_CALLS))
async def test_bad_argument_is_refused(
    storage: Storage, call: Callable[[Storage], Awaitable[Any]]
) -> None:
    await _stored_pair(storage)
    await _refused(storage, call(storage))


__all__ = sorted(name for name in list(globals()) if name.startswith("test_"))
