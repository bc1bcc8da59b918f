"""PostgreSQL backend: opening, options, schemas, column types and maintenance."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import asyncpg
import pytest

from ruv_swarm_persistence import init_storage
from ruv_swarm_persistence._time import to_us
from ruv_swarm_persistence.backends.postgres import PostgresStorage
from ruv_swarm_persistence.backends.postgres.storage import PoolOptions, jsonb_text
from ruv_swarm_persistence.errors import (
    ConflictError,
    DatabaseError,
    PoolError,
    StorageError,
    TransactionError,
    ValidationError,
)
from ruv_swarm_persistence.models import AgentModel, EventModel, TaskModel
from ruv_swarm_persistence.testing import FakeClock
from ruv_swarm_persistence.testing._support import agent, event, metric
from tests import pgserver

from ._support import Opener, url_with, wait_until

# --- opening -------------------------------------------------------------------------------


async def test_init_storage_reads_pool_options_from_the_url(pg_url: str, schema: str) -> None:
    url = url_with(
        pg_url,
        schema=schema,
        min_size="1",
        max_size="3",
        command_timeout="7.5",
        max_inactive_connection_lifetime="60",
        acquire_timeout="2",
        lease="12",
        transaction_timeout="3",
    )
    storage = await init_storage(url)
    try:
        assert isinstance(storage, PostgresStorage)
        assert storage.schema == schema
        # The idle-in-transaction limit follows the transaction timeout (3 s + 10 s).
        assert storage.pool_options == PoolOptions(1, 3, 7.5, 60.0, 2.0, None, 13.0)
        await storage.store_agent(agent("a"))
        assert await storage.get_agent("a") == agent("a")
    finally:
        await storage.close()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pool_size": "3"}, "url"),
        ({"max_size": "three"}, "max_size"),
        ({"command_timeout": "-1"}, "command_timeout"),
        ({"min_size": "5", "max_size": "2"}, "min_size"),
        ({"migrate": "perhaps"}, "migrate"),
    ],
)
async def test_bad_url_options_are_refused_before_connecting(
    params: dict[str, str], field: str
) -> None:
    # Port 1 answers nothing: a refusal must come from the options, not the connection.
    with pytest.raises(ValidationError) as info:
        await init_storage(url_with("postgresql://nobody@127.0.0.1:1/none", **params))
    assert info.value.field == field


async def test_unknown_keyword_option_is_refused() -> None:
    with pytest.raises(ValidationError, match="pool_size"):
        await PostgresStorage.open("postgresql://nobody@127.0.0.1:1/none", pool_size=3)


async def test_unreachable_server_is_a_database_error() -> None:
    with pytest.raises(DatabaseError) as info:
        await PostgresStorage.open("postgresql://nobody@127.0.0.1:1/none")
    assert info.value.__cause__ is not None


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith("ruv_swarm_persistence.backends.postgres"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(StorageError, match=r"pip install 'ruv-swarm-persistence\[postgres\]'"):
        asyncio.run(init_storage("postgresql://someone@127.0.0.1/db"))


# --- schemas -------------------------------------------------------------------------------


async def test_schemas_keep_swarms_apart(pg_url: str, open_storage: Opener) -> None:
    odd = 'Swarm "Two" ünïcode'
    first = await open_storage()
    try:
        second = await open_storage(schema=odd)
        await first.store_agent(agent("only-in-first"))
        await second.store_event(event("only-in-second"))
        assert await second.get_agent("only-in-first") is None
        assert await first.read_events() == []
        assert [e.id for e in await second.read_events()] == ["only-in-second"]
        conn = await asyncpg.connect(pg_url)
        try:
            tables = {
                r[0]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = $1", odd
                )
            }
        finally:
            await conn.close()
        assert {"agents", "tasks", "events", "messages", "metrics", "schema_migrations"} <= tables
    finally:
        await pgserver.drop_schema(pg_url, odd)


async def test_schema_name_is_checked() -> None:
    with pytest.raises(ValidationError) as info:
        await PostgresStorage.open("postgresql://nobody@127.0.0.1:1/none", schema="x" * 64)
    assert info.value.field == "schema"


# --- column types --------------------------------------------------------------------------


async def test_json_fields_are_jsonb_and_keep_their_values(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    storage = await open_storage()
    payload = {
        "z": 1,
        "a": [1e16, 1e300, -2.5e20, 1.5e-7, 0.1, 5e-324, 1.7976931348623157e308],
        "big": 2**63,
        "neg": -(2**63),
        "text": 'é \u2028 "quoted" 1e16',
        "nested": {"b": {"c": [True, False, None]}},
        "float_int": 3.0,
    }
    task = TaskModel.new("job", payload)
    await storage.store_task(task)
    got = await storage.get_task(task.id)
    assert got is not None
    assert got.payload == payload
    # Floats stay floats (jsonb would print 1e16 as an integer without the rewrite).
    assert all(type(v) is float for v in got.payload["a"])
    assert type(got.payload["float_int"]) is float
    conn = await asyncpg.connect(pg_url)
    try:
        kinds = {
            (r[0], r[1]): r[2]
            for r in await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = $1",
                schema,
            )
        }
    finally:
        await conn.close()
    for table, column in [
        ("agents", "capabilities"),
        ("agents", "metadata"),
        ("tasks", "payload"),
        ("tasks", "result"),
        ("tasks", "dependencies"),
        ("events", "payload"),
        ("events", "metadata"),
        ("messages", "content"),
        ("metrics", "tags"),
    ]:
        assert kinds[(table, column)] == "jsonb", (table, column)
    for table, column in [
        ("agents", "heartbeat"),
        ("tasks", "lease_expires_at"),
        ("events", "timestamp"),
    ]:
        assert kinds[(table, column)] == "bigint", (table, column)


def test_jsonb_text_rewrites_only_positive_exponents_outside_strings() -> None:
    assert jsonb_text('{"a":1e16}') == '{"a":10000000000000000.0}'
    assert jsonb_text("[1.5e+3,2E2,-1e1]") == "[1500.0,200.0,-10.0]"
    assert jsonb_text('[1.5e-7,"1e16"]') == '[1.5e-7,"1e16"]'
    assert jsonb_text('{"k\\"1e5":"2e5"}') == '{"k\\"1e5":"2e5"}'
    plain = '{"a":[1,2.5,"x"]}'
    assert jsonb_text(plain) is plain


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 0, 0, 123_457, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ],
)
async def test_times_round_trip_to_the_microsecond(
    pg_url: str, schema: str, open_storage: Opener, when: datetime
) -> None:
    storage = await open_storage()
    a = AgentModel(
        id="a", name="n", agent_type="t", heartbeat=when, created_at=when, updated_at=when
    )
    await storage.store_agent(a)
    got = await storage.get_agent("a")
    assert got is not None
    assert got.heartbeat == when
    assert got.created_at == when
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": f'"{schema}"'})
    try:
        assert await conn.fetchval("SELECT heartbeat FROM agents") == to_us(when)
    finally:
        await conn.close()


# --- errors --------------------------------------------------------------------------------


async def test_driver_errors_are_the_cause(open_storage: Opener) -> None:
    storage = await open_storage()
    await storage.store_agent(agent("a"))
    with pytest.raises(ConflictError) as info:
        await storage.store_agent(agent("a"))
    assert isinstance(info.value.__cause__, asyncpg.UniqueViolationError)
    assert info.value.id == "a"


async def test_a_statement_past_command_timeout_is_a_database_error(
    open_storage: Opener,
) -> None:
    holder = await open_storage()
    impatient = await open_storage(command_timeout=0.2)
    await holder.store_agent(agent("a"))
    tx = await holder.begin_transaction()
    await tx.update_agent(agent("a", name="locked"))
    try:
        with pytest.raises(DatabaseError):
            await impatient.update_agent(agent("a", name="blocked"))
    finally:
        await tx.rollback()
    await impatient.update_agent(agent("a", name="after"))
    got = await holder.get_agent("a")
    assert got is not None
    assert got.name == "after"


async def test_pool_exhaustion_is_a_pool_error(open_storage: Opener) -> None:
    storage = await open_storage(max_size=1, acquire_timeout=0.2)
    tx = await storage.begin_transaction()
    try:
        # The only connection is the transaction's; a call from elsewhere cannot get one.
        # (Other tasks wait for the transaction; a second storage object would not.)
        with pytest.raises(PoolError):
            await storage._pooled_read(lambda conn: conn.fetchval("SELECT 1"))
    finally:
        await tx.rollback()
    assert await storage.get_agent("x") is None


# --- transactions --------------------------------------------------------------------------


async def test_timed_out_transaction_gives_its_connection_back(open_storage: Opener) -> None:
    storage = await open_storage(max_size=1)
    tx = await storage.begin_transaction(timeout=0.05)
    await tx.store_agent(agent("gone"))
    await wait_until(lambda: not tx.is_active)
    with pytest.raises(TransactionError):
        await tx.commit()
    # The pool's only connection is usable again, and the write was rolled back.
    assert await storage.get_agent("gone") is None
    await storage.store_agent(agent("kept"))
    assert await storage.get_agent("kept") is not None


async def test_other_storages_are_isolated_not_blocked(open_storage: Opener) -> None:
    first = await open_storage()
    second = await open_storage()
    tx = await first.begin_transaction()
    try:
        await tx.store_agent(agent("uncommitted"))
        # Another process (here another storage object) reads at once, without the row.
        assert await second.get_agent("uncommitted") is None
        await second.store_agent(agent("other"))
    finally:
        await tx.commit()
    assert await second.get_agent("uncommitted") is not None


async def test_claim_skips_rows_locked_by_another_connection(
    pg_url: str, schema: str, open_storage: Opener
) -> None:
    clock = FakeClock()
    storage = await open_storage(clock=clock)
    first = TaskModel.new("job", {}, id="t1")
    second = TaskModel.new("job", {}, id="t2")
    await storage.store_tasks([first, second])
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": f'"{schema}"'})
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", first.id)
            claimed = await asyncio.wait_for(storage.claim_next_task("w"), 10)
            assert claimed is not None
            assert claimed.id == second.id
    finally:
        await conn.close()


# --- maintenance ---------------------------------------------------------------------------


async def test_maintenance(open_storage: Opener) -> None:
    clock = FakeClock()
    storage = await open_storage(clock=clock)
    empty = await storage.get_storage_size()
    assert empty > 0
    await storage.store_events([event(f"e{i}", ts=i) for i in range(500)])
    await storage.store_metrics([metric(f"m{i}", float(i), ts=i) for i in range(200)])
    assert await storage.get_storage_size() > empty
    await storage.vacuum()
    await storage.checkpoint()
    pruned = await storage.prune(events_before=event("x", ts=100).timestamp)
    assert pruned.events == 100
    assert [e.sequence for e in await storage.read_events(0, 1)] == [101]
    # Sequences keep counting after a prune.
    assert await storage.store_event(EventModel.new("after", {})) == 501
    async with storage.transaction() as tx:
        await tx.vacuum()
        await tx.checkpoint()


# --- large event batches -------------------------------------------------------------------


async def test_large_batches_are_all_or_nothing(open_storage: Opener) -> None:
    from ruv_swarm_persistence.backends.postgres.storage import COPY_ROWS

    storage = await open_storage()
    n = COPY_ROWS + 500
    good = [EventModel.new("bulk", {"i": i, "f": 1e16}) for i in range(n)]
    bad = [EventModel.new("bulk", {"i": i}) for i in range(n)]
    bad[n - 3].payload = {"nan": float("nan")}
    with pytest.raises(ValidationError):
        await storage.store_events(bad)
    twice = [EventModel.new("bulk", {"i": i}) for i in range(n)]
    twice[-1].id = twice[7].id
    with pytest.raises(ConflictError):
        await storage.store_events(twice)
    assert await storage.read_events() == []
    seqs = await storage.store_events(good)
    assert seqs == list(range(1, n + 1))
    assert [e.sequence for e in good] == seqs
    back = await storage.read_events(0, n + 10)
    assert [e.id for e in back] == [e.id for e in good]
    assert all(type(e.payload["f"]) is float for e in back)
    with pytest.raises(ConflictError):
        await storage.store_events(good[:COPY_ROWS])
    assert await storage.store_event(EventModel.new("next", {})) == n + 1
