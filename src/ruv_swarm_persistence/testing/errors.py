"""Conformance: every failing call raises the library's own error, never a driver's.

Each case runs one failing call against a storage holding one row of each kind and checks
the exact error class (a driver exception may only appear as ``__cause__``), that the error
carries its structured fields, and that the failed call changed nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ..errors import (
    ConflictError,
    NotFoundError,
    StorageError,
    TransactionError,
    ValidationError,
)
from ..query import QueryBuilder
from ..storage import Storage
from ._support import agent, event, message, metric, snapshot, within

Call = Callable[[Storage], Awaitable[Any]]


async def _populate(storage: Storage) -> None:
    await storage.store_agent(agent("a1"))
    await storage.store_event(event("e1", agent_id="a1"))
    await storage.store_message(message("m1", "a1", "a2"))
    await storage.store_metric(metric("x1", 1.0))


async def _commit_after_rollback(s: Storage) -> None:
    tx = await s.begin_transaction()
    await tx.rollback()
    await tx.commit()


async def _nested_begin(s: Storage) -> None:
    async with s.transaction():
        await s.begin_transaction()


async def _events_repo_update(s: Storage) -> None:
    (ev,) = await s.read_events(0)
    await s.events.update(ev)


FAILING: dict[str, tuple[Call, type[StorageError]]] = {
    "store_agent duplicate": (lambda s: s.store_agent(agent("a1")), ConflictError),
    "update_agent missing": (lambda s: s.update_agent(agent("ghost")), NotFoundError),
    "heartbeat missing": (lambda s: s.heartbeat("ghost"), NotFoundError),
    "get_agent empty id": (lambda s: s.get_agent(""), ValidationError),
    "list_agents_by_status unknown": (lambda s: s.list_agents_by_status("x"), ValidationError),
    "find_stale_agents text": (lambda s: s.find_stale_agents("1h"), ValidationError),  # type: ignore[arg-type]
    "store_event duplicate": (lambda s: s.store_event(event("e1")), ConflictError),
    "store_events duplicate": (
        lambda s: s.store_events([event("n1"), event("n1")]),
        ConflictError,
    ),
    "read_events negative": (lambda s: s.read_events(-1), ValidationError),
    "get_events_since text": (lambda s: s.get_events_since("today"), ValidationError),  # type: ignore[arg-type]
    "store_message duplicate": (lambda s: s.store_message(message("m1", "x", "y")), ConflictError),
    "mark_message_read missing": (lambda s: s.mark_message_read("ghost"), NotFoundError),
    "wait_for_messages negative": (lambda s: s.wait_for_messages("a1", -1), ValidationError),
    "store_metric duplicate": (lambda s: s.store_metric(metric("x1", 2.0)), ConflictError),
    "store_metric nan": (lambda s: s.store_metric(metric("x2", float("nan"))), ValidationError),
    "aggregate_metrics group_by": (
        lambda s: s.aggregate_metrics("latency", 0, 1, group_by=["unit"]),
        ValidationError,
    ),
    "query not a builder": (lambda s: s.query("SELECT 1"), ValidationError),  # type: ignore[arg-type]
    "query unknown field": (
        lambda s: s.query(QueryBuilder(type(agent("q"))).where_eq("nope", 1)),
        ValidationError,
    ),
    "events repository update": (_events_repo_update, ValidationError),
    "metrics repository delete": (lambda s: s.metrics.delete("x1"), ValidationError),
    "commit after rollback": (_commit_after_rollback, TransactionError),
    "nested begin": (_nested_begin, TransactionError),
    "begin negative timeout": (lambda s: s.begin_transaction(timeout=-1), ValidationError),
    "prune text": (lambda s: s.prune(events_before="old"), ValidationError),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(FAILING))
async def test_failing_call_raises_the_library_error(storage: Storage, case: str) -> None:
    call, expected = FAILING[case]
    await _populate(storage)
    before = await snapshot(storage)
    with pytest.raises(StorageError) as info:
        await call(storage)
    exc = info.value
    assert type(exc) is expected, f"{type(exc).__name__}: {exc}"
    assert type(exc).__module__.startswith("ruv_swarm_persistence")
    assert str(exc)
    if isinstance(exc, NotFoundError | ConflictError):
        assert exc.id in str(exc)
        assert exc.kind in {"agent", "task", "event", "message", "metric"}
    assert await snapshot(storage) == before


async def test_validation_error_is_also_a_value_error(storage: Storage) -> None:
    with pytest.raises(ValueError, match="agent_id"):
        await storage.get_agent("")


async def test_not_found_error_is_also_a_lookup_error(storage: Storage) -> None:
    with pytest.raises(LookupError) as info:
        await storage.mark_message_read("ghost")
    assert isinstance(info.value, NotFoundError)
    assert (info.value.kind, info.value.id) == ("message", "ghost")


CLOSED_CALLS: dict[str, Call] = {
    "store_agent": lambda s: s.store_agent(agent("new")),
    "get_agent": lambda s: s.get_agent("a1"),
    "list_agents": lambda s: s.list_agents(),
    "store_event": lambda s: s.store_event(event("new")),
    "read_events": lambda s: s.read_events(0),
    "store_message": lambda s: s.store_message(message("new", "a", "b")),
    "get_unread_messages": lambda s: s.get_unread_messages("a2"),
    "store_metric": lambda s: s.store_metric(metric("new", 1.0)),
    "aggregate_metrics": lambda s: s.aggregate_metrics("latency", 0, 1),
    "begin_transaction": lambda s: s.begin_transaction(),
    "query": lambda s: s.agents.find_all(),
}


@pytest.mark.parametrize("case", list(CLOSED_CALLS))
async def test_calls_on_a_closed_storage_raise_storage_error(storage: Storage, case: str) -> None:
    await _populate(storage)
    await storage.close()
    await storage.close()  # idempotent
    with pytest.raises(StorageError):
        await CLOSED_CALLS[case](storage)


async def test_closing_with_an_open_transaction_rolls_it_back(storage: Storage) -> None:
    tx = await storage.begin_transaction()
    await tx.store_agent(agent("never"))
    await storage.close()
    assert not tx.is_active
    with pytest.raises(StorageError):
        await tx.commit()


async def test_close_releases_waiters(storage: Storage) -> None:
    await _populate(storage)
    sub = storage.subscribe()
    (first,) = [await within(anext(sub))]
    assert first.id == "e1"
    subscriber = asyncio.ensure_future(anext(sub))
    mail = asyncio.create_task(storage.wait_for_messages("nobody"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not subscriber.done()
    assert not mail.done()
    await storage.close()
    with pytest.raises(StopAsyncIteration):
        await within(subscriber)
    assert await within(mail) == []


async def test_async_with_closes_the_storage(storage_factory: Any) -> None:
    s: Storage = await storage_factory()
    async with s as entered:
        assert entered is s
        await s.store_agent(agent("inside"))
    with pytest.raises(StorageError):
        await s.get_agent("inside")


@pytest.mark.parametrize("method", ["store_tasks", "store_events", "store_metrics"])
@pytest.mark.parametrize("arg", ["a-string", 42, None, {"id": "x"}], ids=repr)
async def test_batch_methods_refuse_a_non_list(storage: Storage, method: str, arg: Any) -> None:
    """A batch method given something other than a list says so and writes nothing."""
    before = await snapshot(storage)
    with pytest.raises(ValidationError, match="must be a list"):
        await getattr(storage, method)(arg)
    assert await snapshot(storage) == before


async def test_batch_methods_refuse_a_single_model(storage: Storage) -> None:
    """Passing one model where a list is expected is a ValidationError, not a TypeError."""
    for method, model in (("store_events", event("e-1")), ("store_metrics", metric("m-1", 1.0))):
        with pytest.raises(ValidationError, match="must be a list"):
            await getattr(storage, method)(model)
    assert await storage.read_events() == []


__all__ = [name for name in list(globals()) if name.startswith("test_")]
