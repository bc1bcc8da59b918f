"""Conformance: messages — mailboxes, priorities, read receipts and waiting for mail."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ..errors import ConflictError, NotFoundError, ValidationError
from ..models import MessageModel, MessagePriority
from ..storage import Storage
from . import FakeClock
from ._support import at, message, within


async def test_store_and_get_round_trips_every_field(storage: Storage) -> None:
    m = MessageModel(
        id="m1",
        from_agent="alice",
        to_agent="bob",
        message_type="task.handoff",
        content={"task": "t-9", "steps": [1, 2, 3], "note": "ünïcødé ✓", "ok": None},
        priority=MessagePriority.High,
        read=False,
        created_at=at(0.000_001),
        read_at=None,
    )
    await storage.store_message(m)
    got = await storage.get_message("m1")
    assert got == m
    assert isinstance(got.priority, MessagePriority)


async def test_read_message_round_trips(storage: Storage) -> None:
    m = message("r", "a", "b")
    m.read, m.read_at = True, at(9.5)
    await storage.store_message(m)
    assert await storage.get_message("r") == m
    assert await storage.get_unread_messages("b") == []


async def test_crate_constructor_chain_persists(storage: Storage) -> None:
    m = MessageModel.new("a", "b", "ping", {"n": 1}).with_priority(MessagePriority.Urgent)
    await storage.store_message(m)
    assert await storage.get_message(m.id) == m


async def test_get_missing_message_returns_none(storage: Storage) -> None:
    assert await storage.get_message("nope") is None


async def test_store_existing_id_conflicts(storage: Storage) -> None:
    await storage.store_message(message("dup", "a", "b", content={"v": 1}))
    with pytest.raises(ConflictError):
        await storage.store_message(message("dup", "c", "d", content={"v": 2}))
    got = await storage.get_message("dup")
    assert got is not None
    assert got.content == {"v": 1}
    assert await storage.get_unread_messages("d") == []


async def test_delete_message_is_idempotent(storage: Storage) -> None:
    await storage.store_message(message("d", "a", "b"))
    await storage.store_message(message("k", "a", "b", ts=1))
    await storage.delete_message("d")
    assert await storage.get_message("d") is None
    await storage.delete_message("d")
    await storage.delete_message("never")
    assert [m.id for m in await storage.get_unread_messages("b")] == ["k"]


async def test_unread_messages_urgent_first_then_oldest(storage: Storage) -> None:
    p = MessagePriority
    for id, ts, prio in [
        ("low-old", 0, p.Low),
        ("normal-new", 5, p.Normal),
        ("urgent-new", 9, p.Urgent),
        ("normal-old", 1, p.Normal),
        ("high", 3, p.High),
        ("urgent-old", 2, p.Urgent),
    ]:
        await storage.store_message(message(id, "sender", "me", ts=ts, priority=prio))
    unread = await storage.get_unread_messages("me")
    assert [m.id for m in unread] == [
        "urgent-old",
        "urgent-new",
        "high",
        "normal-old",
        "normal-new",
        "low-old",
    ]


async def test_unread_messages_only_unread_mail_to_the_agent(storage: Storage) -> None:
    await storage.store_message(message("to-me", "x", "me"))
    await storage.store_message(message("from-me", "me", "x", ts=1))
    await storage.store_message(message("to-other", "x", "other", ts=2))
    await storage.store_message(message("read-one", "x", "me", ts=3))
    await storage.mark_message_read("read-one")
    assert [m.id for m in await storage.get_unread_messages("me")] == ["to-me"]
    assert await storage.get_unread_messages("nobody") == []


async def test_mark_message_read_records_the_clock_time(storage: Storage, clock: FakeClock) -> None:
    await storage.store_message(message("m", "a", "b"))
    now = clock.advance(3.000_001)
    marked = await storage.mark_message_read("m")
    assert marked.read is True
    assert marked.read_at == now
    got = await storage.get_message("m")
    assert got == marked
    assert got.created_at == at(0)


async def test_second_read_keeps_the_first_time(storage: Storage, clock: FakeClock) -> None:
    await storage.store_message(message("m", "a", "b"))
    first = clock()
    await storage.mark_message_read("m")
    clock.advance(timedelta(hours=1))
    again = await storage.mark_message_read("m")
    assert again.read_at == first
    got = await storage.get_message("m")
    assert got is not None
    assert got.read_at == first


async def test_mark_missing_message_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await storage.mark_message_read("missing")
    assert await storage.get_message("missing") is None


async def test_messages_between_both_directions_newest_first(storage: Storage) -> None:
    await storage.store_message(message("ab1", "a", "b", ts=1))
    await storage.store_message(message("ba2", "b", "a", ts=2))
    await storage.store_message(message("ab3", "a", "b", ts=3))
    await storage.store_message(message("ac4", "a", "c", ts=4))
    await storage.store_message(message("cb5", "c", "b", ts=5))
    await storage.store_message(message("aa6", "a", "a", ts=6))
    assert [m.id for m in await storage.get_messages_between("a", "b")] == ["ab3", "ba2", "ab1"]
    assert [m.id for m in await storage.get_messages_between("b", "a")] == ["ab3", "ba2", "ab1"]
    assert [m.id for m in await storage.get_messages_between("a", "b", limit=2)] == [
        "ab3",
        "ba2",
    ]
    assert await storage.get_messages_between("a", "b", limit=0) == []
    assert await storage.get_messages_between("b", "d") == []


async def test_messages_between_include_read_ones(storage: Storage) -> None:
    await storage.store_message(message("x", "a", "b"))
    await storage.mark_message_read("x")
    (got,) = await storage.get_messages_between("a", "b")
    assert got.read is True


async def test_wait_for_messages_returns_at_once_when_mail_exists(storage: Storage) -> None:
    await storage.store_message(message("early", "a", "me"))
    got = await within(storage.wait_for_messages("me", timeout=3600))
    assert [m.id for m in got] == ["early"]
    got = await within(storage.wait_for_messages("me"))
    assert [m.id for m in got] == ["early"]


async def test_wait_for_messages_wakes_when_mail_arrives(storage: Storage) -> None:
    waiter = asyncio.create_task(storage.wait_for_messages("me", timeout=3600))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    await storage.store_message(message("for-other", "x", "other"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()

    async def send() -> None:
        await storage.store_message(message("hello", "a", "me", priority=MessagePriority.High))

    await asyncio.create_task(send())
    got = await within(waiter)
    assert [m.id for m in got] == ["hello"]


async def test_wait_for_messages_wakes_on_a_committed_transaction(storage: Storage) -> None:
    waiter = asyncio.create_task(storage.wait_for_messages("me", timeout=3600))
    for _ in range(20):
        await asyncio.sleep(0)

    async def send() -> None:
        async with storage.transaction() as tx:
            await tx.store_message(message("txmail", "a", "me"))

    await asyncio.create_task(send())
    assert [m.id for m in await within(waiter)] == ["txmail"]


@pytest.mark.parametrize("timeout", [0, 0.05, timedelta(milliseconds=20)], ids=repr)
async def test_wait_for_messages_returns_empty_on_timeout(storage: Storage, timeout: Any) -> None:
    await storage.store_message(message("elsewhere", "a", "other"))
    assert await within(storage.wait_for_messages("me", timeout=timeout)) == []


async def test_wait_for_messages_ignores_read_mail(storage: Storage) -> None:
    await storage.store_message(message("old", "a", "me"))
    await storage.mark_message_read("old")
    assert await within(storage.wait_for_messages("me", timeout=0.01)) == []


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("get_message", ("",)),
        ("delete_message", ("x" * 257,)),
        ("mark_message_read", ("a\x00",)),
        ("get_unread_messages", (None,)),
        ("get_messages_between", ("a", 5)),
        ("get_messages_between", ("a", "b", -1)),
        ("wait_for_messages", ("me", -1)),
        ("wait_for_messages", ("me", "soon")),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) else v,
)
async def test_message_calls_reject_bad_arguments(storage: Storage, call: str, args: Any) -> None:
    with pytest.raises(ValidationError):
        await getattr(storage, call)(*args)


async def test_read_message_without_read_at_is_rejected(storage: Storage) -> None:
    m = message("r", "a", "b")
    m.read = True
    with pytest.raises(ValidationError, match="read_at"):
        await storage.store_message(m)
    assert await storage.get_message("r") is None


__all__ = [name for name in list(globals()) if name.startswith("test_")]
