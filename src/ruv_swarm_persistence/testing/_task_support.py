"""What the task modules of the conformance suite share: a task builder, reads, refusals."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

import pytest

from ..errors import (
    StorageError,
    ValidationError,
)
from ..models import TaskModel, TaskPriority
from ..query import QueryBuilder
from ..rules import RetryPolicy
from ..storage import Storage
from . import FakeClock
from .plugin import StorageFactory

US = timedelta(microseconds=1)
LEASE = timedelta(seconds=30)  # the storages' default lease
POLICY = RetryPolicy(base_us=2_000_000, factor=3.0, max_us=10_000_000)


# --- helpers ----------------------------------------------------------------------------------


def _task(
    task_id: str,
    *,
    created: datetime | None = None,
    task_type: str = "job",
    priority: TaskPriority = TaskPriority.Medium,
    deps: list[str] | None = None,
    **fields: Any,
) -> TaskModel:
    """A pending task; ``created`` pins ``created_at`` so claim order is deterministic."""
    task = TaskModel.new(task_type, {"name": task_id}, priority, id=task_id, dependencies=deps)
    if created is not None:
        task.created_at = task.updated_at = created
    for name, value in fields.items():
        setattr(task, name, value)
    return task


def _at(clock: FakeClock, us: int) -> datetime:
    """A time ``us`` microseconds after the clock's start; spaces out ``created_at``."""
    return clock() + us * US


async def _get(storage: Storage, task_id: str) -> TaskModel:
    task = await storage.get_task(task_id)
    assert task is not None, f"task {task_id} is missing"
    return task


async def _snapshot(storage: Storage) -> list[TaskModel]:
    """Every stored task, by id: compared before and after a refused call."""
    return await storage.query(QueryBuilder(TaskModel).order_by("id"))


async def _refused(
    storage: Storage,
    call: Awaitable[Any],
    error: type[StorageError] = ValidationError,
    field: str | None = None,
) -> StorageError:
    """Await ``call`` expecting ``error`` (naming ``field``), and check it changed nothing."""
    before = await _snapshot(storage)
    with pytest.raises(error) as exc:
        await call
    if field is not None:
        assert getattr(exc.value, "field", None) == field
    assert await _snapshot(storage) == before
    return exc.value


async def _ids(tasks: Awaitable[list[TaskModel]]) -> list[str]:
    return [t.id for t in await tasks]


async def _claimed(storage: Storage, task_id: str, agent: str = "w1", **fields: Any) -> TaskModel:
    """Store a task and claim it for ``agent``."""
    await storage.store_task(_task(task_id, **fields))
    assert await storage.claim_task(task_id, agent)
    return await _get(storage, task_id)


async def _retry_storage(storage_factory: StorageFactory, clock: FakeClock) -> Storage:
    return await storage_factory(clock=clock, retry_policy=POLICY)
