"""Round trips of the task path on PostgreSQL: the common calls are one statement each.

A lone task without dependencies is stored, claimed and completed in one statement apiece
(each its own commit); what needs reads first (dependencies, a batch) runs in a transaction.
"""

from __future__ import annotations

import pytest

from ruv_swarm_persistence.errors import ConflictError, ValidationError
from ruv_swarm_persistence.models import TaskModel, TaskStatus

from ._support import Opener, log_queries, settled


async def test_a_lone_task_is_stored_in_one_statement(open_storage: Opener) -> None:
    storage = await open_storage()
    queries = log_queries(storage)
    await storage.store_task(TaskModel.new("job", {"n": 1}, id="t1"))
    await settled()
    assert len(queries) == 1, queries
    stored = await storage.get_task("t1")
    assert stored is not None
    assert stored.payload == {"n": 1}
    assert await storage.get_ready_tasks() == [stored]


async def test_claim_and_complete_are_one_statement_each(open_storage: Opener) -> None:
    storage = await open_storage()
    await storage.store_task(TaskModel.new("job", {}, id="t1"))
    queries = log_queries(storage)
    claimed = await storage.claim_next_task("w1")
    assert claimed is not None
    await storage.complete_task("t1", "w1", 7)
    await settled()
    assert len(queries) == 2, queries


async def test_a_lone_task_with_a_taken_id_conflicts_and_changes_nothing(
    open_storage: Opener,
) -> None:
    storage = await open_storage()
    await storage.store_task(TaskModel.new("job", {"first": True}, id="t1"))
    with pytest.raises(ConflictError):
        await storage.store_task(TaskModel.new("other", {"first": False}, id="t1"))
    stored = await storage.get_task("t1")
    assert stored is not None
    assert (stored.task_type, stored.payload) == ("job", {"first": True})


async def test_a_lone_task_is_checked_like_a_batch(open_storage: Opener) -> None:
    storage = await open_storage()
    held = TaskModel.new("job", {}, id="t1")
    held.status = TaskStatus.Running  # held, but by nobody
    with pytest.raises(ValidationError):
        await storage.store_task(held)
    assert await storage.get_task("t1") is None


async def test_a_task_with_dependencies_is_checked_in_a_transaction(open_storage: Opener) -> None:
    storage = await open_storage()
    await storage.store_task(TaskModel.new("job", {}, id="a"))
    queries = log_queries(storage)
    await storage.store_task(TaskModel.new("job", {}, id="b", dependencies=["a"]))
    await settled()
    assert queries[0].strip().upper().startswith("BEGIN"), queries
    assert [t.id for t in await storage.get_pending_tasks()] == ["a", "b"]


async def test_a_batch_is_claimed_and_completed_in_one_statement_each(
    open_storage: Opener,
) -> None:
    storage = await open_storage()
    # A limit on a key none of the batch's tasks has leaves the batch one statement.
    await storage.set_concurrency_limit("other", 1)
    await storage.store_tasks([TaskModel.new("job", {"n": i}, id=f"t{i}") for i in range(4)])
    await storage.store_task(TaskModel.new("job", {}, id="after", dependencies=["t0", "t1"]))
    queries = log_queries(storage)
    claimed = await storage.claim_next_tasks("w1", 3)
    assert [t.id for t in claimed] == ["t0", "t1", "t2"]
    done = await storage.complete_tasks([(t.id, t.id) for t in claimed], "w1")
    await settled()
    assert len(queries) == 2, queries
    assert [t.result for t in done] == ["t0", "t1", "t2"]
    assert [t.id for t in await storage.claim_next_tasks("w1", 3)] == ["t3", "after"]


async def test_a_batch_meeting_a_limited_key_claims_the_rest_one_by_one(
    open_storage: Opener,
) -> None:
    storage = await open_storage()
    await storage.set_concurrency_limit("k", 1)
    await storage.store_tasks(
        [TaskModel.new("job", {}, id="free")]
        + [TaskModel.new("job", {}, id=f"k{i}", concurrency_key="k") for i in range(3)]
        + [TaskModel.new("job", {}, id="late")]
    )
    claimed = await storage.claim_next_tasks("w1", 10)
    assert [t.id for t in claimed] == ["free", "k0", "late"]
    stored = await storage.get_task("k0")
    assert stored == claimed[1]
