"""LISTEN/NOTIFY: waiters wake on writes from other connections and other processes.

Each storage object has its own pool and listener, so a write through one storage reaches the
waiters of another only through PostgreSQL's notifications. Polling is switched off
(``poll_interval`` of an hour), so a missing notification hangs the test into its bound.
"""

from __future__ import annotations

import asyncio
import sys

from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.models import EventModel, MessageModel, TaskModel

from ._support import WAIT, Opener, kill_backends, url_with, wait_until


async def _listening(open_storage: Opener) -> PostgresStorage:
    storage = await open_storage()
    storage.listener.poll_interval = 3600.0
    storage.listener.start()
    await wait_until(lambda: storage.listener.connected)
    return storage


async def _blocked(task: asyncio.Future[object]) -> None:
    """Let ``task`` reach its wait; it must not finish on its own."""
    for _ in range(50):
        await asyncio.sleep(0.001)
    assert not task.done()


async def test_subscriber_wakes_on_another_connections_event(open_storage: Opener) -> None:
    reader = await _listening(open_storage)
    writer = await open_storage()
    sub = reader.subscribe()
    first = asyncio.ensure_future(anext(sub))
    await _blocked(first)
    await writer.store_event(EventModel.new("hello", {"n": 1}))
    got = await asyncio.wait_for(first, WAIT)
    assert got.event_type == "hello"
    await sub.aclose()


async def test_mail_waiter_wakes_on_another_connections_message(open_storage: Opener) -> None:
    reader = await _listening(open_storage)
    writer = await open_storage()
    waiter = asyncio.ensure_future(reader.wait_for_messages("bob", timeout=WAIT * 3))
    await _blocked(waiter)
    await writer.store_message(MessageModel.new("alice", "someone-else", "note", {}))
    await writer.store_message(MessageModel.new("alice", "bob", "note", {"hi": True}))
    got = await asyncio.wait_for(waiter, WAIT)
    assert [m.content for m in got] == [{"hi": True}]


async def test_task_waiter_wakes_when_a_dependency_completes_elsewhere(
    open_storage: Opener,
) -> None:
    reader = await _listening(open_storage)
    writer = await open_storage()
    parent = TaskModel.new("job", {}, id="parent")
    child = TaskModel.new("job", {}, id="child", dependencies=["parent"])
    await writer.store_tasks([parent, child])
    claimed = await writer.claim_next_task("w")
    assert claimed is not None
    assert claimed.id == "parent"
    waiter = asyncio.ensure_future(reader.wait_for_tasks(timeout=WAIT * 3))
    await _blocked(waiter)
    await writer.complete_task("parent", "w")
    assert await asyncio.wait_for(waiter, WAIT) is True
    got = await reader.claim_next_task("r")
    assert got is not None
    assert got.id == "child"


async def test_task_waiter_times_out_without_ready_tasks(open_storage: Opener) -> None:
    storage = await open_storage()
    assert await storage.wait_for_tasks(timeout=0.05) is False


async def test_notification_is_sent_only_on_commit(open_storage: Opener) -> None:
    reader = await _listening(open_storage)
    writer = await open_storage()
    sub = reader.subscribe()
    first = asyncio.ensure_future(anext(sub))
    await _blocked(first)
    tx = await writer.begin_transaction()
    await tx.store_event(EventModel.new("undone", {}))
    await tx.rollback()
    await _blocked(first)
    async with writer.transaction() as tx:
        await tx.store_event(EventModel.new("done", {}))
        await _blocked(first)
    assert (await asyncio.wait_for(first, WAIT)).event_type == "done"
    await sub.aclose()


async def test_subscriber_wakes_on_another_process(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    reader = await _listening(open_storage)
    sub = reader.subscribe()
    first = asyncio.ensure_future(anext(sub))
    await _blocked(first)
    code = (
        "import asyncio, sys\n"
        "from ruv_swarm_persistence import init_storage, EventModel\n"
        "async def main():\n"
        "    s = await init_storage(sys.argv[1])\n"
        "    await s.store_event(EventModel.new('from-afar', {'pid': 1}))\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, url_with(pg_url, schema=schema)
    )
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    got = await asyncio.wait_for(first, WAIT)
    assert got.event_type == "from-afar"
    await sub.aclose()


async def test_listener_reconnects_and_loses_nothing(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    reader = await _listening(open_storage)
    writer = await open_storage()
    await writer.store_event(EventModel.new("before", {}))
    sub = reader.subscribe()
    assert (await asyncio.wait_for(anext(sub), WAIT)).event_type == "before"
    assert reader.listener.connections == 1
    assert await kill_backends(pg_url, schema, "listener") == 1
    # Written while the listener is down or reconnecting: nobody is notified of these.
    await writer.store_events([EventModel.new(f"gap{i}", {}) for i in range(3)])
    got = [await asyncio.wait_for(anext(sub), WAIT) for _ in range(3)]
    assert [e.event_type for e in got] == ["gap0", "gap1", "gap2"]
    await wait_until(lambda: reader.listener.connected and reader.listener.connections == 2)
    # Notifications flow again on the new connection.
    nxt = asyncio.ensure_future(anext(sub))
    await _blocked(nxt)
    await writer.store_event(EventModel.new("after", {}))
    assert (await asyncio.wait_for(nxt, WAIT)).event_type == "after"
    await sub.aclose()


async def test_close_releases_waiters(open_storage: Opener) -> None:
    storage = await _listening(open_storage)
    mail = asyncio.ensure_future(storage.wait_for_messages("bob"))
    tasks = asyncio.ensure_future(storage.wait_for_tasks())
    await _blocked(mail)
    await _blocked(tasks)
    await storage.close()
    assert await asyncio.wait_for(mail, WAIT) == []
    assert await asyncio.wait_for(tasks, WAIT) is False


async def test_waiters_poll_while_the_listener_cannot_connect(open_storage: Opener) -> None:
    reader = await open_storage()
    writer = await open_storage()

    async def refuse() -> object:
        raise ConnectionRefusedError("the server is restarting")

    reader.listener._connect = refuse  # type: ignore[assignment]
    reader.listener.poll_interval = 0.05
    waiter = asyncio.ensure_future(reader.wait_for_messages("bob", timeout=WAIT * 3))
    await _blocked(waiter)
    assert not reader.listener.connected
    await writer.store_message(MessageModel.new("alice", "bob", "note", {"hi": True}))
    got = await asyncio.wait_for(waiter, WAIT)
    assert [m.content for m in got] == [{"hi": True}]


async def test_a_local_commit_wakes_local_waiters_without_the_listener(
    open_storage: Opener,
) -> None:
    storage = await open_storage()
    storage.listener.poll_interval = 3600.0

    async def refuse() -> object:
        raise ConnectionRefusedError("the server is restarting")

    storage.listener._connect = refuse  # type: ignore[assignment]
    waiter = asyncio.ensure_future(storage.wait_for_messages("bob", timeout=WAIT * 3))
    await _blocked(waiter)
    tx = await storage.begin_transaction()
    await storage.store_message(MessageModel.new("alice", "bob", "note", {"n": 1}))
    await _blocked(waiter)  # not before the commit
    await tx.commit()
    got = await asyncio.wait_for(waiter, WAIT)
    assert [m.content for m in got] == [{"n": 1}]
