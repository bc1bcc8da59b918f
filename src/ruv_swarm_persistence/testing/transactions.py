"""Conformance: transactions — commit, rollback of every table, timeouts and the task join."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from ..errors import ConflictError, TransactionError
from ..models import AgentStatus, TaskModel
from ..storage import Storage, Transaction
from . import FakeClock
from ._support import agent, at, event, message, metric, snapshot, within

#: The timeout of transactions that are meant to run out: long enough that the calls made
#: before it ends finish first even on a loaded machine, short enough to wait for.
SHORT = 0.4

T = TypeVar("T")


def _outside(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coro`` as an unrelated task (a task spawned normally would join the transaction)."""
    return asyncio.create_task(coro, context=contextvars.Context())


async def _snapshot(storage: Storage) -> dict[str, Any]:
    """Everything a storage holds, and which tasks are ready."""
    return {**await snapshot(storage), "ready": [t.id for t in await storage.get_ready_tasks()]}


def _task(id: str, created: float = 0.0) -> TaskModel:
    return TaskModel(
        id=id, task_type="work", payload={"id": id}, created_at=at(created), updated_at=at(created)
    )


async def _populate(storage: Storage) -> int:
    """One row in every table; returns the last event sequence."""
    await storage.store_agent(agent("a0"))
    await storage.store_task(_task("t0"))
    await storage.store_message(message("m0", "a0", "a1"))
    await storage.store_metric(metric("x0", 1.0))
    return await storage.store_event(event("e0"))


async def _await_inactive(tx: Transaction) -> None:
    async def poll() -> None:
        # The API has no "timed out" notification; a bounded poll stays backend-neutral.
        while tx.is_active:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await within(poll())


async def test_transaction_block_commits(storage: Storage) -> None:
    async with storage.transaction() as tx:
        await tx.store_agent(agent("a1"))
        await tx.store_event(event("e1"))
        await tx.store_message(message("m1", "a1", "a2"))
        await tx.store_metric(metric("x1", 2.0))
        assert tx.is_active
    assert not tx.is_active
    assert await storage.get_agent("a1") is not None
    assert [e.id for e in await storage.read_events()] == ["e1"]
    assert await storage.get_message("m1") is not None
    assert [m.id for m in await storage.get_metrics_by_agent("a1")] == ["x1"]


async def test_reads_inside_a_transaction_see_its_writes(storage: Storage) -> None:
    async with storage.transaction() as tx:
        await tx.store_agent(agent("own"))
        assert await tx.get_agent("own") is not None
        assert await storage.get_agent("own") is not None
        assert [a.id for a in await tx.list_agents()] == ["own"]


async def test_exception_rolls_back_every_table_and_the_sequence(storage: Storage) -> None:
    last_seq = await _populate(storage)
    before = await _snapshot(storage)

    class Boom(Exception):
        pass

    async def change_everything_then_fail() -> None:
        async with storage.transaction() as tx:
            await tx.store_agent(agent("a1"))
            a0 = agent("a0", name="renamed", status=AgentStatus.Busy)
            await tx.update_agent(a0)
            await tx.heartbeat("a0", at=at(99))
            await tx.store_task(_task("t1", created=1))
            claimed = await tx.claim_next_task("a0")
            assert claimed is not None
            assert claimed.id == "t0"
            await tx.store_events([event("e1"), event("e2")])
            await tx.store_message(message("m1", "a0", "a1"))
            await tx.mark_message_read("m0")
            await tx.store_metrics([metric("x1", 2.0), metric("x2", 3.0)])
            await storage.delete_agent("a0")
            raise Boom

    with pytest.raises(Boom):
        await change_everything_then_fail()

    assert await _snapshot(storage) == before
    nxt = event("next")
    assert await storage.store_event(nxt) == last_seq + 1
    # The queue is usable again: the task claimed inside the transaction is claimable.
    again = await storage.claim_next_task("a0")
    assert again is not None
    assert again.id == "t0"


async def test_begin_commit(storage: Storage) -> None:
    tx = await storage.begin_transaction()
    assert tx.is_active
    await tx.store_agent(agent("c"))
    await tx.commit()
    assert not tx.is_active
    assert await storage.get_agent("c") is not None


async def test_begin_rollback(storage: Storage) -> None:
    await _populate(storage)
    before = await _snapshot(storage)
    tx = await storage.begin_transaction()
    await tx.store_agent(agent("r"))
    await tx.store_event(event("r-ev"))
    await tx.delete_message("m0")
    await tx.rollback()
    assert not tx.is_active
    assert await _snapshot(storage) == before


async def test_transaction_object_is_its_own_context_manager(storage: Storage) -> None:
    async with await storage.begin_transaction() as tx:
        await tx.store_agent(agent("cm"))
    assert await storage.get_agent("cm") is not None

    async def fail_inside() -> None:
        async with await storage.begin_transaction() as tx:
            await tx.store_agent(agent("cm2"))
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        await fail_inside()
    assert await storage.get_agent("cm2") is None


async def test_crate_readme_example_is_atomic(storage: Storage) -> None:
    tx = await storage.begin_transaction()
    a, b = _task("task-a"), _task("task-b", created=1)
    await storage.store_task(a)
    # Another task does not see the first write while the transaction is open.
    peek = _outside(storage.get_task("task-a"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not peek.done()
    await storage.store_task(b)
    assert await storage.get_task("task-a") is not None
    await tx.commit()
    assert await within(peek) == a
    assert await storage.get_task("task-b") == b


async def test_crate_readme_example_rolled_back_leaves_nothing(storage: Storage) -> None:
    tx = await storage.begin_transaction()
    await storage.store_task(_task("task-a"))
    await storage.store_task(_task("task-b", created=1))
    await tx.rollback()
    assert await storage.get_task("task-a") is None
    assert await storage.get_task("task-b") is None
    assert await storage.get_pending_tasks() == []


async def test_tasks_spawned_inside_a_transaction_join_it(storage: Storage) -> None:
    tx = await storage.begin_transaction()
    await asyncio.create_task(storage.store_agent(agent("child")))
    assert await storage.get_agent("child") is not None
    await tx.rollback()
    assert await storage.get_agent("child") is None


async def test_other_tasks_wait_for_the_transaction_then_succeed(storage: Storage) -> None:
    await storage.store_agent(agent("shared"))
    tx = await storage.begin_transaction()
    await tx.store_agent(agent("inside", created=1))

    async def outsider() -> list[str]:
        await storage.store_agent(agent("outside", created=5))
        await storage.store_event(event("out-ev"))
        return [a.id for a in await storage.list_agents()]

    other = _outside(outsider())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not other.done()
    assert await tx.get_agent("outside") is None
    await tx.store_event(event("in-ev"))
    await tx.commit()
    assert await within(other) == ["shared", "inside", "outside"]
    assert [e.id for e in await storage.read_events()] == ["in-ev", "out-ev"]


async def test_other_transactions_wait_their_turn(storage: Storage) -> None:
    order: list[str] = []

    async def second() -> None:
        async with storage.transaction() as tx:
            order.append("second")
            await tx.store_agent(agent("second"))

    tx = await storage.begin_transaction()
    waiting = _outside(second())
    for _ in range(20):
        await asyncio.sleep(0)
    order.append("first")
    await tx.store_agent(agent("first"))
    await tx.commit()
    await within(waiting)
    assert order == ["first", "second"]
    assert {a.id for a in await storage.list_agents()} == {"first", "second"}


async def test_timeout_rolls_back_and_later_use_raises(storage: Storage) -> None:
    tx = await storage.begin_transaction(timeout=SHORT)
    await tx.store_agent(agent("late"))
    await storage.store_event(event("late-ev"))
    await _await_inactive(tx)
    # Other tasks see nothing of it and can use the storage.
    assert await within(_outside(storage.get_agent("late"))) is None
    await _outside(storage.store_agent(agent("after")))
    with pytest.raises(TransactionError):
        await tx.store_agent(agent("more"))
    with pytest.raises(TransactionError):
        await storage.store_agent(agent("joined"))
    with pytest.raises(TransactionError):
        await tx.commit()
    assert await _outside(storage.get_agent("more")) is None
    assert await _outside(storage.get_agent("joined")) is None
    assert [e.id for e in await _outside(storage.read_events())] == []


async def test_a_timeout_releases_tasks_waiting_for_the_transaction(storage: Storage) -> None:
    tx = await storage.begin_transaction(timeout=SHORT)
    await tx.store_agent(agent("abandoned"))
    waiting = _outside(storage.store_agent(agent("patient")))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    await within(waiting)
    assert not tx.is_active
    names = await _outside(storage.list_agents())
    assert [a.id for a in names] == ["patient"]
    with pytest.raises(TransactionError):
        await tx.rollback()


async def test_timeout_in_a_block_raises_on_exit(storage: Storage) -> None:
    async def outlive_the_timeout() -> None:
        async with storage.transaction(timeout=SHORT) as tx:
            await tx.store_agent(agent("slow"))
            await _await_inactive(tx)

    with pytest.raises(TransactionError):
        await outlive_the_timeout()
    assert await _outside(storage.get_agent("slow")) is None


async def test_default_timeout_comes_from_the_storage_option(
    storage_factory: Any, clock: FakeClock
) -> None:
    short: Storage = await storage_factory(clock=clock, transaction_timeout=SHORT)
    tx = await short.begin_transaction()
    await tx.store_agent(agent("x"))
    await _await_inactive(tx)
    with pytest.raises(TransactionError):
        await tx.commit()
    assert await _outside(short.get_agent("x")) is None


async def test_nested_begin_in_the_same_task_raises(storage: Storage) -> None:
    async with storage.transaction() as tx:
        await tx.store_agent(agent("outer"))
        with pytest.raises(TransactionError):
            await storage.begin_transaction()
        with pytest.raises(TransactionError):
            async with storage.transaction():
                pass
        with pytest.raises(TransactionError):
            await tx.begin_transaction()
        # The outer transaction is unharmed.
        await tx.store_agent(agent("still"))
    assert {a.id for a in await storage.list_agents()} == {"outer", "still"}


async def test_a_new_transaction_after_commit(storage: Storage) -> None:
    async with storage.transaction() as tx:
        await tx.store_agent(agent("one"))
    async with storage.transaction() as tx:
        await tx.store_agent(agent("two"))
    assert {a.id for a in await storage.list_agents()} == {"one", "two"}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("rollback", "commit"),
        ("commit", "rollback"),
        ("commit", "commit"),
        ("rollback", "rollback"),
    ],
)
async def test_finished_transaction_cannot_finish_again(
    storage: Storage, first: str, second: str
) -> None:
    tx = await storage.begin_transaction()
    await tx.store_agent(agent("once"))
    await getattr(tx, first)()
    with pytest.raises(TransactionError):
        await getattr(tx, second)()
    with pytest.raises(TransactionError):
        await tx.store_agent(agent("after"))
    stored = await storage.get_agent("once")
    assert (stored is not None) == (first == "commit")
    assert await storage.get_agent("after") is None


async def test_refused_write_leaves_the_transaction_usable(storage: Storage) -> None:
    await storage.store_agent(agent("exists"))
    async with storage.transaction() as tx:
        await tx.store_agent(agent("new"))
        with pytest.raises(ConflictError):
            await tx.store_agent(agent("exists"))
        with pytest.raises(ConflictError):
            await tx.store_events([event("ok"), event("ok")])
        await tx.store_event(event("kept"))
    assert {a.id for a in await storage.list_agents()} == {"exists", "new"}
    assert [e.id for e in await storage.read_events()] == ["kept"]


async def test_subscribe_is_not_part_of_a_transaction(storage: Storage) -> None:
    async with storage.transaction() as tx:
        with pytest.raises(TransactionError):
            await anext(tx.subscribe())


async def test_back_to_back_transactions_do_not_starve_other_writers(storage: Storage) -> None:
    """A task running transactions back to back still lets waiting writers through."""
    finished: list[str] = []
    go = asyncio.Event()

    async def plain_writes() -> None:
        await go.wait()
        for i in range(5):
            await storage.store_event(event(f"plain-{i}"))
        finished.append("plain")

    # Created outside any transaction, so its writes do not join one.
    writer = asyncio.ensure_future(plain_writes())
    for i in range(200):
        async with storage.transaction() as tx:
            if i == 0:
                go.set()  # the other writer now waits for this transaction
                for _ in range(5):
                    await asyncio.sleep(0)
            await tx.store_event(event(f"tx-{i}"))
    finished.append("transactions")
    await within(writer)
    assert finished == ["plain", "transactions"]
    assert len(await storage.read_events(0, 1000)) == 205


__all__ = [name for name in list(globals()) if name.startswith("test_")]
