"""IndexedDBStorage over an emulated IndexedDB: what it writes, when, and what it refuses.

The semantics are the conformance suite's (``tests/browser/emulated``); these tests pin what is
the browser backend's own: one IndexedDB transaction per commit, shared by concurrent writers,
events in segments, the schema version, the lock, the failure of a write, the URL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from ruv_swarm_persistence import (
    AgentModel,
    DatabaseError,
    EventModel,
    MessageModel,
    MetricModel,
    MigrationError,
    StorageError,
    TaskModel,
    ValidationError,
    init_storage,
    urls,
)
from ruv_swarm_persistence.backends.browser import IndexedDBStorage, delete_database
from ruv_swarm_persistence.backends.browser.engine import SCHEMA_VERSION, SEGMENT
from ruv_swarm_persistence.backends.browser.idb import PyodideBridge
from ruv_swarm_persistence.storage import QueueLimit
from ruv_swarm_persistence.testing import FakeClock
from ruv_swarm_persistence.testing._support import T0
from tests.browser.fake_idb import FakeDatabase, FakeIndexedDB


@pytest.fixture
def idb() -> FakeIndexedDB:
    return FakeIndexedDB()


async def open_storage(idb: FakeIndexedDB, name: str = "swarm", **options: Any) -> IndexedDBStorage:
    return await IndexedDBStorage.open(name, bridge=idb, **options)


def events_in(idb: FakeIndexedDB, name: str = "swarm") -> list[dict[str, Any]]:
    segments = idb.values(name, "events")
    return [rec for key in sorted(segments) for rec in json.loads(segments[key])]


async def test_every_kind_of_record_survives_a_reopen(idb: FakeIndexedDB) -> None:
    agent = AgentModel.new("w1", "worker", ["x"])
    first = TaskModel.new("build", {"n": 1})
    second = TaskModel.new("test", {"n": 2}, dependencies=[first.id])
    async with await open_storage(idb) as s:
        await s.store_agent(agent)
        await s.store_tasks([first, second])
        assert await s.claim_task(first.id, agent.id)
        await s.complete_task(first.id, agent.id, {"ok": True})
        await s.store_event(EventModel.new("started", {"big": 2**60, "f": 37.0}))
        await s.store_message(MessageModel.new(agent.id, "w2", "hello", {"text": "hi"}))
        await s.store_metric(MetricModel.new("cpu", 0.5, "ratio").with_agent(agent.id))
    async with await open_storage(idb) as s:
        assert await s.get_agent(agent.id) == agent
        done = await s.get_task(first.id)
        assert done is not None
        assert done.result == {"ok": True}
        # The dependent became ready when its dependency completed; a reload knows it.
        assert [t.id for t in await s.get_ready_tasks()] == [second.id]
        (event,) = await s.read_events()
        assert event.payload == {"big": 2**60, "f": 37.0}
        assert isinstance(event.payload["f"], float)
        assert len(await s.get_unread_messages("w2")) == 1
        (metric,) = await s.get_metrics_by_agent(agent.id)
        assert metric.value == 0.5


async def test_each_write_is_one_indexeddb_transaction_after_which_it_returns(
    idb: FakeIndexedDB,
) -> None:
    s = await open_storage(idb)
    before = idb.transactions
    await s.store_agent(AgentModel.new("w1", "worker"))
    # Returned: IndexedDB has it already.
    assert idb.transactions == before + 1
    assert len(idb.values("swarm", "agents")) == 1
    await s.get_agent("nobody")  # a read writes nothing
    assert idb.transactions == before + 1
    await s.close()


async def test_concurrent_writers_share_indexeddb_transactions(idb: FakeIndexedDB) -> None:
    s = await open_storage(idb)
    before = idb.transactions

    async def producer(n: int) -> None:
        for i in range(10):
            await s.store_event(EventModel.new("tick", {"producer": n, "i": i}))

    await asyncio.gather(*(producer(n) for n in range(64)))
    # 640 writes, each acknowledged after its IndexedDB transaction: far fewer transactions.
    assert idb.transactions - before <= 640 // 16
    assert len(events_in(idb)) == 640
    assert [e["sequence"] for e in events_in(idb)] == list(range(1, 641))
    await s.close()


async def test_a_large_batch_is_written_in_segments(idb: FakeIndexedDB) -> None:
    s = await open_storage(idb)
    n = SEGMENT * 2 + 5
    await s.store_events([EventModel.new("bulk", {"i": i}) for i in range(n)])
    segments = idb.values("swarm", "events")
    assert sorted(segments) == [1, SEGMENT + 1, 2 * SEGMENT + 1]
    assert json.loads(idb.values("swarm", "meta")["event_seq"]) == n
    await s.close()


async def test_prune_rewrites_the_segments_it_touches_and_sequences_go_on(
    idb: FakeIndexedDB,
) -> None:
    from ruv_swarm_persistence.testing import FakeClock

    clock = FakeClock()
    s = await open_storage(idb, clock=clock)
    old = [EventModel.new("old", {}) for _ in range(3)]
    for e in old:
        e.timestamp = clock()
    await s.store_events(old)
    cutoff = clock.advance(60)
    new = EventModel.new("new", {})
    new.timestamp = cutoff
    await s.store_event(new)
    await s.prune(events_before=cutoff)
    assert [e["event_type"] for e in events_in(idb)] == ["new"]
    await s.store_event(EventModel.new("later", {}))
    await s.prune(events_before=clock.advance(60))
    assert events_in(idb) == []
    await s.close()
    s = await open_storage(idb)
    # Every event was pruned: the last sequence handed out is remembered all the same.
    assert await s.store_event(EventModel.new("after", {})) == 6
    await s.close()


async def test_a_transaction_is_one_indexeddb_transaction_at_its_commit(
    idb: FakeIndexedDB,
) -> None:
    s = await open_storage(idb)
    before = idb.transactions
    async with s.transaction() as tx:
        await tx.store_agent(AgentModel.new("w1", "worker"))
        await s.store_task(TaskModel.new("build", {}))  # joins the transaction
        await tx.store_event(EventModel.new("e", {}))
        assert idb.transactions == before  # nothing written before the commit
    assert idb.transactions == before + 1
    assert len(idb.values("swarm", "agents")) == len(idb.values("swarm", "tasks")) == 1
    await s.close()


async def test_a_rolled_back_transaction_writes_nothing(idb: FakeIndexedDB) -> None:
    s = await open_storage(idb)
    await s.store_agent(AgentModel.new("w1", "worker"))
    before = idb.transactions

    async def abandoned() -> None:
        async with s.transaction() as tx:
            await tx.store_event(EventModel.new("e", {}))
            await tx.delete_agent((await tx.list_agents())[0].id)
            raise KeyError("abandon")

    with pytest.raises(KeyError):
        await abandoned()
    assert idb.transactions == before
    await s.store_event(EventModel.new("kept", {}))
    await s.close()
    s = await open_storage(idb)
    assert len(await s.list_agents()) == 1
    assert [e.event_type for e in await s.read_events()] == ["kept"]
    await s.close()


async def test_a_refused_write_fails_its_callers_and_closes_the_storage(
    idb: FakeIndexedDB,
) -> None:
    s = await open_storage(idb)
    await s.store_agent(AgentModel.new("kept", "worker"))
    idb.fail_commits = 1
    results = await asyncio.gather(
        *(s.store_event(EventModel.new("lost", {})) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, DatabaseError) for r in results), results
    assert "QuotaExceededError" in str(results[0])
    # Each caller has an exception of its own, its cause the browser's refusal.
    assert len({id(r) for r in results}) == 5
    assert len({str(r) for r in results}) == 1
    assert all(isinstance(r, BaseException) and r.__cause__ is not None for r in results)
    # Memory may hold what IndexedDB does not: every later call refuses, reads too.
    with pytest.raises(DatabaseError, match="reopen"):
        await s.list_agents()
    with pytest.raises(DatabaseError):
        async with s.transaction() as tx:
            await tx.store_event(EventModel.new("also lost", {}))
    await s.close()
    s = await open_storage(idb)
    assert [a.name for a in await s.list_agents()] == ["kept"]
    assert await s.read_events() == []
    await s.close()


async def test_a_refused_commit_fails_the_transaction(idb: FakeIndexedDB) -> None:
    s = await open_storage(idb)
    idb.fail_commits = 1
    tx = await s.begin_transaction()
    await tx.store_agent(AgentModel.new("w1", "worker"))
    with pytest.raises(DatabaseError):
        await tx.commit()
    assert not tx.is_active
    await s.close()
    s = await open_storage(idb)
    assert await s.list_agents() == []
    await s.close()


async def test_close_writes_what_is_pending(idb: FakeIndexedDB) -> None:
    s = await open_storage(idb)
    writes = [asyncio.ensure_future(s.store_event(EventModel.new("e", {}))) for _ in range(20)]
    await asyncio.sleep(0)
    await s.close()
    assert all(w.done() and w.exception() is None for w in writes)
    assert len(events_in(idb)) == 20


async def test_a_database_of_a_newer_schema_is_refused(idb: FakeIndexedDB) -> None:
    idb.databases["swarm"] = FakeDatabase(SCHEMA_VERSION + 1)
    with pytest.raises(MigrationError) as err:
        await open_storage(idb)
    assert str(err.value) == (
        f"IndexedDB database 'swarm' has schema version {SCHEMA_VERSION + 1}, written by a "
        "newer version of ruv-swarm-persistence than this one "
        f"(schema version {SCHEMA_VERSION}): open it with that version"
    )
    assert not idb.locks  # the lock taken for the attempt is given back


async def test_migrate_false_refuses_to_create_the_database(idb: FakeIndexedDB) -> None:
    with pytest.raises(MigrationError, match="migrate=False"):
        await open_storage(idb, migrate=False)
    assert "swarm" not in idb.databases
    await (await open_storage(idb)).close()  # creates it
    await (await open_storage(idb, migrate=False)).close()


async def test_one_page_at_a_time_writes_a_database(idb: FakeIndexedDB) -> None:
    first = await open_storage(idb)
    with pytest.raises(DatabaseError, match="open in another page or worker"):
        await open_storage(idb)
    other = await open_storage(idb, "another-swarm")  # another name is another lock
    await other.close()
    await first.close()
    again = await open_storage(idb)
    await again.close()


async def test_read_only_refuses_writes_and_writes_nothing(idb: FakeIndexedDB) -> None:
    async with await open_storage(idb) as s:
        await s.store_agent(AgentModel.new("w1", "worker"))
    before = idb.transactions
    async with await open_storage(idb, read_only=True) as s:
        with pytest.raises(DatabaseError, match="read-only"):
            await s.store_event(EventModel.new("x", {}))
        assert len(await s.list_agents()) == 1
    assert idb.transactions == before


async def test_persistence_is_requested_and_reported(idb: FakeIndexedDB) -> None:
    s = await open_storage(idb)
    assert await s.request_persistence() is True
    assert s.persisted is True
    await s.close()
    idb.persistent, idb.grant_persistence = False, False
    s = await open_storage(idb)
    assert await s.request_persistence() is False
    assert s.persisted is False
    await s.close()


async def test_a_stored_value_that_is_not_json_is_a_serialization_error(
    idb: FakeIndexedDB,
) -> None:
    from ruv_swarm_persistence import SerializationError

    await (await open_storage(idb)).close()
    idb.databases["swarm"].stores["agents"]["a1"] = "{not json"
    with pytest.raises(SerializationError, match="agents"):
        await open_storage(idb)
    assert not idb.locks


async def test_delete_database(idb: FakeIndexedDB) -> None:
    async with await open_storage(idb) as s:
        await s.store_agent(AgentModel.new("w1", "worker"))
    await delete_database("swarm", bridge=idb)
    async with await open_storage(idb) as s:
        assert await s.list_agents() == []


@pytest.mark.parametrize("name", ["", "x" * 257, "a\x00b", 3])
async def test_bad_names_are_refused(idb: FakeIndexedDB, name: Any) -> None:
    with pytest.raises(ValidationError) as err:
        await open_storage(idb, name)
    assert err.value.field == "name"


async def test_bad_durability_is_refused(idb: FakeIndexedDB) -> None:
    with pytest.raises(ValidationError) as err:
        await open_storage(idb, durability="sometimes")
    assert err.value.field == "durability"


async def test_durability_reaches_every_commit(
    idb: FakeIndexedDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    s = await open_storage(idb, durability="strict")
    commit = type(s._browser._connection).commit

    def spy(self: Any, stores: Any, ops: Any, durability: str, done: Any) -> None:
        seen.append(durability)
        commit(self, stores, ops, durability, done)

    monkeypatch.setattr(type(s._browser._connection), "commit", spy)
    await s.store_agent(AgentModel.new("w1", "worker"))
    assert seen == ["strict"]
    await s.close()


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name", "options"),
    [
        ("indexeddb://swarm", "swarm", {}),
        ("indexeddb:///swarm", "swarm", {}),
        ("indexeddb://My%20Swarm?durability=strict", "My Swarm", {"durability": "strict"}),
        ("IndexedDB://team/a", "team/a", {}),
    ],
)
def test_indexeddb_urls(url: str, name: str, options: dict[str, str]) -> None:
    parsed = urls.parse_url(url)
    assert (parsed.scheme, parsed.location, parsed.options) == ("indexeddb", name, options)


def test_an_indexeddb_url_needs_a_name() -> None:
    with pytest.raises(ValidationError, match="indexeddb://swarm"):
        urls.parse_url("indexeddb://")


async def test_indexeddb_outside_a_browser_says_what_to_use() -> None:
    with pytest.raises(StorageError) as err:
        await init_storage("indexeddb://swarm")
    assert isinstance(err.value, ImportError)
    assert str(err.value) == (
        "IndexedDB exists only in a browser: indexeddb:// runs under Pyodide; "
        "here use a file path (SQLite) or memory://"
    )
    with pytest.raises(ImportError):
        PyodideBridge()


async def test_url_options_reach_the_storage(
    idb: FakeIndexedDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ruv_swarm_persistence.backends.browser import storage as module

    monkeypatch.setattr(module, "PyodideBridge", lambda: idb)
    s = await init_storage("indexeddb://s1?durability=STRICT&lease=60&read_only=no")
    assert isinstance(s, IndexedDBStorage)
    assert (s.name, s._durability, s._lease_us, s._read_only) == ("s1", "strict", 60_000_000, False)
    await s.close()
    with pytest.raises(ValidationError, match="unknown indexeddb:// option"):
        await init_storage("indexeddb://s1?synchronous=full")


def test_under_pyodide_the_default_is_indexeddb_and_servers_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(urls.sys, "platform", "emscripten")
    monkeypatch.delenv("SWARM_DB_URL", raising=False)
    assert urls.parse_url(None) == urls.ParsedUrl("indexeddb", "swarm", {})
    for scheme in ("sqlite", "postgresql"):
        with pytest.raises(urls.BackendUnavailableError) as err:
            urls.import_backend(scheme, f"the {scheme} backend")
        assert str(err.value) == (
            f"the {scheme} backend does not run in a browser (Pyodide): use indexeddb://NAME, "
            "kept in IndexedDB, or memory:// instead"
        )
    assert urls.import_backend("memory", "memory").__name__.endswith("memory")


@pytest.mark.parametrize(
    ("statement", "what"),
    [
        ("import ruv_swarm_persistence.backends.sqlite", "the sqlite backend"),
        ("import ruv_swarm_persistence.backends.postgres", "the postgresql backend"),
        ("from ruv_swarm_persistence import SqliteStorage", "SqliteStorage"),
        ("from ruv_swarm_persistence import PostgresStorage", "PostgresStorage"),
    ],
)
def test_under_pyodide_importing_a_server_backend_says_what_to_use(
    statement: str, what: str
) -> None:
    # A fresh interpreter that believes it is Pyodide: nothing imported before the guard.
    code = (
        "import sys\n"
        "sys.platform = 'emscripten'\n"
        "from ruv_swarm_persistence import StorageError\n"
        "try:\n"
        f"    {statement}\n"
        "except ImportError as exc:\n"
        "    print(isinstance(exc, StorageError), sorted({'apsw', 'asyncpg'} & set(sys.modules)))\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.splitlines() == [
        "True []",
        f"{what} does not run in a browser (Pyodide): use indexeddb://NAME, kept in IndexedDB, "
        "or memory:// instead",
    ]


def test_under_pyodide_the_browser_backend_is_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    import ruv_swarm_persistence

    monkeypatch.setattr(urls.sys, "platform", "emscripten")
    assert ruv_swarm_persistence.IndexedDBStorage is IndexedDBStorage


def test_under_pyodide_the_blocking_api_and_the_cli_say_what_to_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ruv_swarm_persistence import sync
    from ruv_swarm_persistence.cli import main

    monkeypatch.setattr(urls.sys, "platform", "emscripten")
    with pytest.raises(StorageError, match=r"needs? a thread|runs the storage on a thread"):
        sync.open_storage("memory://")
    with pytest.raises(SystemExit) as exit_:
        main(["status"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "error: swarmdb is a command-line program and does not run in a browser (Pyodide): "
        "use the library's async API there\n"
    )


async def test_a_cancelled_writer_leaves_the_others_their_answer(idb: FakeIndexedDB) -> None:
    s = await open_storage(idb)
    writes = [asyncio.ensure_future(s.store_event(EventModel.new("e", {}))) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait for the same IndexedDB transaction
    writes[0].cancel()
    done = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert done[1:] == [2, 3]
    # The cancelled call's event was applied before it was cancelled: it is stored too.
    assert len(events_in(idb)) == 3
    await s.close()


async def test_a_storage_made_but_not_opened_says_how_to_open_it(idb: FakeIndexedDB) -> None:
    s = IndexedDBStorage("swarm", bridge=idb)
    with pytest.raises(StorageError, match=r"await IndexedDBStorage.open\(name\)"):
        await s.list_agents()


async def test_a_closed_storage_is_freed_without_the_cycle_collector(idb: FakeIndexedDB) -> None:
    # The engine holds the whole swarm: left to the cyclic collector, every collection until
    # then would walk it (reopening a storage in a page would pile swarms up).
    import gc
    import weakref

    s = await open_storage(idb)
    await s.store_events([EventModel.new("e", {"i": i}) for i in range(10)])
    await s.store_event(EventModel.new("e", {}))
    engine = weakref.ref(s._browser)
    tables = weakref.ref(s._browser.tables)
    await s.close()
    gc.disable()
    try:
        del s
        await asyncio.sleep(0)
        assert engine() is None
        assert tables() is None
    finally:
        gc.enable()


async def test_the_queue_controls_survive_a_reopen(idb: FakeIndexedDB) -> None:
    clock = FakeClock(T0)
    async with await open_storage(idb, clock=clock, lease=3600) as s:
        await s.set_concurrency_limit("gpu", 1)
        await s.set_rate_limit("api", 2, per=60)
        await s.store_tasks(
            [TaskModel.new("x", concurrency_key="gpu") for _ in range(2)]
            + [TaskModel.new("x", concurrency_key="api") for _ in range(3)]
        )
        claimed = [await s.claim_next_task("w1") for _ in range(5)]
        assert sum(t is not None for t in claimed) == 3  # one gpu, two api
        await s.store_schedule("tick", "10s", {"task_type": "tick"})
        await s.store_schedule("nightly", "1d", {"task_type": "report"}, missed="run_once")
        clock.advance(10)
        assert len(await s.fire_due_schedules()) == 1
        await s.pause_schedule("nightly")
        await s.apply_retention("events:1h")
        limits = await s.list_queue_limits()
        schedules = await s.list_schedules()
        report = await s.retention_report()
    clock.advance(1)
    async with await open_storage(idb, clock=clock, lease=3600) as s:
        assert await s.list_queue_limits() == limits
        assert await s.list_schedules() == schedules
        assert await s.retention_report() == report
        # The key at its limit and the rate window's claims are still counted.
        assert await s.claim_next_task("w2", ["x"]) is None
        clock.advance(60)
        got = await s.claim_next_task("w2", ["x"])
        assert got is not None
        assert got.concurrency_key == "api"
        # The schedule goes on from the due time it kept.
        assert [f.split("@")[0] for f in await s.fire_due_schedules()] == ["tick"]
        await s.set_rate_limit("api", None)
        await s.delete_schedule("nightly")
        await s.restore_retention_record(None, {})
    assert set(idb.values("swarm", "queue_limits")) == {"gpu"}
    assert idb.values("swarm", "queue_claims") == {}
    assert set(idb.values("swarm", "schedules")) == {"tick"}
    assert "retention.ran_at" not in idb.values("swarm", "meta")
    async with await open_storage(idb, clock=clock) as s:
        assert await s.list_queue_limits() == [QueueLimit("gpu", concurrency=1)]
        assert [x.name for x in await s.list_schedules()] == ["tick"]
        assert (await s.retention_report()).last_run is None


async def test_queue_controls_of_a_rolled_back_transaction_are_not_written(
    idb: FakeIndexedDB,
) -> None:
    async with await open_storage(idb) as s:

        async def change_then_fail() -> None:
            async with s.transaction() as tx:
                await tx.set_concurrency_limit("k", 3)
                await tx.store_schedule("s", "1m", {"task_type": "t"})
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await change_then_fail()
        await s.set_rate_limit("r", 1)
    assert set(idb.values("swarm", "queue_limits")) == {"r"}
    assert idb.values("swarm", "schedules") == {}


async def test_a_database_of_schema_version_1_is_upgraded_keeping_its_swarm(
    idb: FakeIndexedDB,
) -> None:
    assert SCHEMA_VERSION == 2
    async with await open_storage(idb) as s:
        await s.store_agent(AgentModel.new("w1", "worker", id="w1"))
        await s.store_task(TaskModel.new("x", id="t1", concurrency_key="k"))
    # What version 1 left: the same stores but the queue controls' (they lived in memory).
    old = idb.databases["swarm"]
    old.version = 1
    for store in ("queue_limits", "queue_claims", "schedules"):
        del old.stores[store]
    with pytest.raises(MigrationError, match="migrate=False"):
        await open_storage(idb, migrate=False)
    assert old.version == 1
    async with await open_storage(idb) as s:
        assert [a.id for a in await s.list_agents()] == ["w1"]
        assert await s.list_queue_limits() == []
        await s.set_concurrency_limit("k", 0)
        await s.store_schedule("s", "1m", {"task_type": "t"})
    assert old.version == SCHEMA_VERSION
    async with await open_storage(idb, migrate=False) as s:
        assert await s.list_queue_limits() == [QueueLimit("k", concurrency=0)]
        assert [x.name for x in await s.list_schedules()] == ["s"]
        assert not await s.claim_task("t1", "w1")


async def test_a_stored_limit_that_is_not_three_values_is_a_serialization_error(
    idb: FakeIndexedDB,
) -> None:
    from ruv_swarm_persistence import SerializationError

    await (await open_storage(idb)).close()
    idb.databases["swarm"].stores["queue_limits"]["k"] = "[1, 2]"
    with pytest.raises(SerializationError, match="queue_limits"):
        await open_storage(idb)
    assert not idb.locks
