"""The blocking API: its surface, its threads, transactions joined by thread, subscriptions."""

from __future__ import annotations

import asyncio
import gc
import inspect
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import (
    AgentModel,
    AgentStatus,
    ConflictError,
    EventModel,
    MessageModel,
    MetricModel,
    NotFoundError,
    QueryBuilder,
    StorageError,
    TaskModel,
    TaskStatus,
    TransactionError,
    ValidationError,
)
from ruv_swarm_persistence.repository import Repository
from ruv_swarm_persistence.storage import Storage, Transaction
from ruv_swarm_persistence.sync import (
    SyncRepository,
    SyncStorage,
    SyncTransaction,
    open_storage,
)
from tests import pgserver

ROOT = Path(__file__).resolve().parents[2]
#: Bounds a wait for another thread; never an assertion about speed.
WAIT = 30.0

#: Backends the blocking API is exercised on.
BACKENDS: list[Any] = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of the parametrized backend."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield str(tmp_path / "sync.db")
    else:
        base = request.getfixturevalue("pg_url")
        schema = pgserver.new_schema_name("sync")
        yield f"{base}?schema={schema}"
        asyncio.run(pgserver.drop_schema(base, schema))


@pytest.fixture
def store(url: str) -> Iterator[SyncStorage]:
    with open_storage(url) as s:
        yield s


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("swarm-sync")]


def _in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Start ``fn(*args)`` on a thread; the list receives its result or exception."""
    out: list[Any] = []

    def work() -> None:
        try:
            out.append(fn(*args))
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=work)
    t.start()
    return t, out


# --- the surface --------------------------------------------------------------------------


def test_generated_wrappers_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_sync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_every_public_storage_member_is_exposed() -> None:
    assert _public(Storage) - _public(SyncStorage) == set()
    # settle_inactive is the hook Transaction.__aexit__ calls; the blocking ``with`` runs it.
    assert _public(Transaction) - {"settle_inactive"} - _public(SyncTransaction) == set()
    assert _public(Repository) - _public(SyncRepository) == set()


@pytest.mark.parametrize(
    ("async_cls", "sync_cls"), [(Storage, SyncStorage), (Repository, SyncRepository)]
)
def test_wrappers_keep_the_async_signatures(async_cls: type, sync_cls: type) -> None:
    checked = 0
    for name, member in vars(async_cls).items():
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue
        if name in ("close", "begin_transaction"):
            continue
        mine = inspect.signature(getattr(sync_cls, name))
        theirs = inspect.signature(member)
        assert list(mine.parameters.values()) == list(theirs.parameters.values()), name
        assert mine.return_annotation == theirs.return_annotation, name
        assert getattr(sync_cls, name).__doc__ == member.__doc__ or inspect.getdoc(
            getattr(sync_cls, name)
        ) == inspect.getdoc(member), name
        checked += 1
    assert checked >= 6


# --- every method family, blocking --------------------------------------------------------


def test_agents_tasks_events_messages_metrics(store: SyncStorage) -> None:
    a = AgentModel.new("worker-1", "researcher", ["analysis"], id="a1")
    store.store_agent(a)
    with pytest.raises(ConflictError):
        store.store_agent(a)
    got = store.get_agent("a1")
    assert got is not None
    assert got.capabilities == ["analysis"]
    got.set_status(AgentStatus.Idle)
    store.update_agent(got)
    assert [x.id for x in store.list_agents_by_status("idle")] == ["a1"]
    store.heartbeat("a1")
    with pytest.raises(NotFoundError):
        store.heartbeat("nobody")

    first = TaskModel.new("analysis", {"n": 1}, id="t1")
    second = TaskModel.new("analysis", {"n": 2}, id="t2", dependencies=["t1"])
    store.store_tasks([first, second])
    assert [t.id for t in store.get_ready_tasks()] == ["t1"]
    claimed = store.claim_next_task("a1", ["analysis"], lease=timedelta(seconds=30))
    assert claimed is not None
    assert claimed.id == "t1"
    store.start_task("t1", "a1")
    done = store.complete_task("t1", "a1", {"ok": True})
    assert done.status is TaskStatus.Completed
    assert [t.id for t in store.get_ready_tasks()] == ["t2"]

    seq = store.store_event(EventModel.new("task.completed", {"id": "t1"}, agent_id="a1"))
    assert store.read_events(seq - 1)[0].event_type == "task.completed"
    assert [e.sequence for e in store.get_events_by_agent("a1")] == [seq]

    m = MessageModel.new("a1", "a2", "hello", {"text": "hi"})
    store.store_message(m)
    assert [x.id for x in store.get_unread_messages("a2")] == [m.id]
    assert store.mark_message_read(m.id).read
    assert store.wait_for_messages("a2", timeout=0.01) == []

    store.store_metrics([MetricModel.new("cpu_usage", v, "percent", agent_id="a1") for v in (1, 3)])
    (agg,) = store.aggregate_metrics("cpu_usage", 0, 4_000_000_000)
    assert (agg.count, agg.mean) == (2, 2.0)

    assert [t.id for t in store.query(QueryBuilder(TaskModel).where_eq("status", "pending"))] == [
        "t2"
    ]
    assert store.get_storage_size() > 0
    store.checkpoint()
    store.vacuum()


def test_repositories_block(store: SyncStorage) -> None:
    store.agents.save(AgentModel.new("n", "t", id="r1"))
    assert store.agents.find_by_id("r1") is not None
    assert [a.id for a in store.agents.find_all()] == ["r1"]
    builder = store.agents.builder().where_eq("name", "n")
    assert [a.id for a in store.agents.query(builder)] == ["r1"]
    store.agents.delete("r1")
    assert store.agents.find_by_id("r1") is None
    with pytest.raises(ValidationError):
        store.events.delete("x")


def test_call_runs_a_coroutine_on_the_storage(store: SyncStorage) -> None:
    async def count(s: Storage) -> int:
        return len(await s.list_agents())

    store.store_agent(AgentModel.new("n", "t"))
    assert store.call(count) == 1


def test_a_blocking_call_from_the_loop_thread_is_refused(store: SyncStorage) -> None:
    async def reenter(_: Storage) -> None:
        store.list_agents()

    with pytest.raises(RuntimeError, match="own event-loop thread"):
        store.call(reenter)


# --- transactions -------------------------------------------------------------------------


def test_calls_from_the_thread_that_began_a_transaction_join_it(store: SyncStorage) -> None:
    tx = store.begin_transaction()
    store.store_task(TaskModel.new("x", id="t1"))
    store.store_task(TaskModel.new("x", id="t2"))
    tx.rollback()
    assert store.get_task("t1") is None
    assert store.get_task("t2") is None

    with store.transaction():
        store.store_task(TaskModel.new("x", id="t3"))
        store.agents.save(AgentModel.new("n", "t", id="a3"))
    assert store.get_task("t3") is not None
    assert store.get_agent("a3") is not None


def test_other_threads_do_not_join(store: SyncStorage) -> None:
    tx = store.begin_transaction()
    store.store_task(TaskModel.new("x", id="mine"))
    other, out = _in_thread(store.store_agent, AgentModel.new("n", "t", id="theirs"))
    tx.rollback()
    other.join(WAIT)
    assert out == [None]
    assert store.get_task("mine") is None
    assert store.get_agent("theirs") is not None


def test_an_exception_rolls_back_and_propagates(store: SyncStorage) -> None:
    opened: list[SyncTransaction] = []

    def fail_inside() -> None:
        with store.transaction() as tx:
            opened.append(tx)
            tx.store_task(TaskModel.new("x", id="t1"))
            store.store_task(TaskModel.new("x", id="t2"))
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail_inside()
    assert store.get_task("t1") is None
    assert store.get_task("t2") is None
    assert not opened[0].is_active


def test_transactions_do_not_nest(store: SyncStorage) -> None:
    with store.transaction() as tx:
        with pytest.raises(TransactionError):
            store.begin_transaction()
        with pytest.raises(TransactionError):
            tx.begin_transaction()
        store.store_agent(AgentModel.new("n", "t", id="kept"))
    assert store.get_agent("kept") is not None


def test_a_finished_transaction_refuses_calls(store: SyncStorage) -> None:
    tx = store.begin_transaction()
    tx.commit()
    with pytest.raises(TransactionError):
        tx.store_agent(AgentModel.new("n", "t"))
    with pytest.raises(TransactionError):
        tx.commit()
    store.store_agent(AgentModel.new("n", "t", id="after"))  # no longer joins anything
    assert store.get_agent("after") is not None


def test_a_transaction_past_its_timeout_raises_on_exit(store: SyncStorage) -> None:
    def outlive_the_timeout() -> None:
        with store.transaction(timeout=0.05) as tx:
            tx.store_agent(AgentModel.new("n", "t", id="late"))
            waited = threading.Event()
            for _ in range(int(WAIT / 0.01)):
                if not tx.is_active:
                    break
                waited.wait(0.01)

    with pytest.raises(TransactionError):
        outlive_the_timeout()
    assert store.get_agent("late") is None


# --- subscriptions ------------------------------------------------------------------------


def test_subscribe_is_a_blocking_iterator(store: SyncStorage) -> None:
    store.store_events([EventModel.new("old", id="e1"), EventModel.new("old", id="e2")])
    with store.subscribe() as sub:
        assert [next(sub).id, next(sub).id] == ["e1", "e2"]
        waiting, out = _in_thread(next, sub)
        store.store_event(EventModel.new("new", id="e3"))
        waiting.join(WAIT)
        assert [e.id for e in out] == ["e3"]


def test_subscribe_filters_types_and_starts_after_a_sequence(store: SyncStorage) -> None:
    seqs = store.store_events([EventModel.new(t) for t in ("a", "b", "a", "b")])
    sub = store.subscribe(after_sequence=seqs[0], event_types=["b"])
    assert [next(sub).sequence, next(sub).sequence] == [seqs[1], seqs[3]]
    sub.close()
    assert list(sub) == []


def test_closing_a_subscription_ends_a_waiting_next(store: SyncStorage) -> None:
    sub = store.subscribe()
    waiting, out = _in_thread(lambda: list(sub))
    threading.Event().wait(0.05)  # let it block; correctness does not depend on it
    sub.close()
    waiting.join(WAIT)
    assert out == [[]]


def test_closing_the_storage_ends_its_subscriptions(url: str) -> None:
    s = open_storage(url)
    sub = s.subscribe()
    waiting, out = _in_thread(lambda: list(sub))
    threading.Event().wait(0.05)
    s.close()
    waiting.join(WAIT)
    assert out == [[]]


def test_a_transaction_does_not_subscribe(store: SyncStorage) -> None:
    with store.transaction() as tx, pytest.raises(TransactionError):
        next(tx.subscribe())


# --- threads and lifecycle ----------------------------------------------------------------


def test_many_threads_claim_each_task_once(store: SyncStorage) -> None:
    store.store_tasks([TaskModel.new("work", id=f"t{i:03d}") for i in range(200)])
    claims: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (task := store.claim_next_task(name)) is not None:
            store.complete_task(task.id, name)
            with lock:
                claims.setdefault(task.id, []).append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(claims) == [f"t{i:03d}" for i in range(200)]
    assert all(len(who) == 1 for who in claims.values())


def test_close_stops_the_thread_and_later_calls_fail(url: str) -> None:
    before = len(_loop_threads())
    s = open_storage(url)
    assert len(_loop_threads()) == before + 1
    s.close()
    s.close()  # idempotent
    assert len(_loop_threads()) == before
    assert s.closed
    with pytest.raises(StorageError, match="closed"):
        s.list_agents()


def test_with_closes(url: str) -> None:
    with open_storage(url) as s:
        s.store_agent(AgentModel.new("n", "t"))
    assert s.closed


def test_an_unclosed_storage_warns_when_collected_and_stops_its_thread(url: str) -> None:
    before = len(_loop_threads())
    s = open_storage(url)
    s.store_agent(AgentModel.new("n", "t"))
    with pytest.warns(ResourceWarning, match="unclosed SyncStorage"):  # noqa: PT031
        del s
        gc.collect()
    assert len(_loop_threads()) == before


def test_a_process_that_forgets_to_close_exits(tmp_path: Path) -> None:
    script = (
        "from ruv_swarm_persistence.sync import open_storage\n"
        "from ruv_swarm_persistence import AgentModel\n"
        "s = open_storage('memory://')\n"
        "s.store_agent(AgentModel.new('n', 't'))\n"
        "sub = s.subscribe()\n"
        "print('done')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert "unclosed SyncStorage" in done.stderr


def test_opening_a_bad_url_raises_and_leaves_no_thread() -> None:
    before = len(_loop_threads())
    with pytest.raises(ValidationError, match="unknown scheme"):
        open_storage("bogus://nowhere")
    assert len(_loop_threads()) == before
