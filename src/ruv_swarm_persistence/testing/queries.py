"""Conformance: ``QueryBuilder`` run by ``storage.query``, and the five repositories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from ..errors import ConflictError, NotFoundError, ValidationError
from ..models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
    TaskPriority,
)
from ..query import QueryBuilder
from ..storage import Storage
from ._support import agent, at, event, message, metric

Q = QueryBuilder

AGENTS = [
    ("a1", "Alpha", AgentStatus.Idle, 1.0),
    ("a2", "alpha", AgentStatus.Busy, 2.0),
    ("a3", "Beta_1", AgentStatus.Idle, 3.0),
    ("a4", "Beta%2", AgentStatus.Error, 4.0),
    ("a5", "gamma", AgentStatus.Busy, 5.0),
    ("a6", "x' OR '1'='1", AgentStatus.Paused, 6.0),
]


async def _agents(storage: Storage) -> None:
    for id, name, status, created in AGENTS:
        await storage.store_agent(agent(id, name=name, status=status, created=created))


async def _ids(storage: Storage, builder: QueryBuilder[Any]) -> list[str]:
    return [row.id for row in await storage.query(builder)]


A = Q(AgentModel)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: A.where_eq("status", "idle"), ["a1", "a3"]),
        (lambda: A.where_eq("status", AgentStatus.Busy), ["a2", "a5"]),
        (lambda: A.where_ne("status", "idle"), ["a2", "a4", "a5", "a6"]),
        (lambda: A.where_eq("name", "alpha"), ["a2"]),
        (lambda: A.where_like("name", "alpha"), ["a2"]),
        (lambda: A.where_like("name", "Alpha"), ["a1"]),
        (lambda: A.where_like("name", "_lpha"), ["a1", "a2"]),
        (lambda: A.where_like("name", "B%"), ["a3", "a4"]),
        (lambda: A.where_like("name", "%a"), ["a1", "a2", "a5"]),
        (lambda: A.where_like("name", "Beta_2"), ["a4"]),
        (lambda: A.where_like("name", "Beta%"), ["a3", "a4"]),
        (lambda: A.where_like("name", "Beta.1"), []),
        (lambda: A.where_like("name", "%"), ["a1", "a2", "a3", "a4", "a5", "a6"]),
        (lambda: A.where_like("name", "_"), []),
        (lambda: A.where_gt("created_at", at(3)), ["a4", "a5", "a6"]),
        (lambda: A.where_gte("created_at", at(3)), ["a3", "a4", "a5", "a6"]),
        (lambda: A.where_lt("created_at", at(3)), ["a1", "a2"]),
        (lambda: A.where_lte("created_at", at(3)), ["a1", "a2", "a3"]),
        (lambda: A.where_gte("created_at", at(2).timestamp()), ["a2", "a3", "a4", "a5", "a6"]),
        (lambda: A.where_in("status", ["idle", "error"]), ["a1", "a3", "a4"]),
        (lambda: A.where_in("id", ("a5", "a1", "zz")), ["a1", "a5"]),
        (lambda: A.where_in("status", []), []),
        (lambda: A.where_gt("name", "B").where_lt("name", "a"), ["a3", "a4"]),
        (lambda: A.where_eq("status", "idle").where_like("name", "B%"), ["a3"]),
        (lambda: A.where_eq("name", "x' OR '1'='1"), ["a6"]),
        (lambda: A.where_eq("name", "' OR 1=1 --"), []),
        (lambda: A.where_eq("id", "missing"), []),
    ],
    ids=lambda v: "" if callable(v) else ",".join(v) or "none",
)
async def test_filters(
    storage: Storage, build: Callable[[], QueryBuilder[AgentModel]], expected: list[str]
) -> None:
    await _agents(storage)
    assert await _ids(storage, build()) == expected


async def test_order_by_ascending_and_descending(storage: Storage) -> None:
    await _agents(storage)
    assert await _ids(storage, A.order_by("created_at", desc=True)) == [
        "a6",
        "a5",
        "a4",
        "a3",
        "a2",
        "a1",
    ]
    # Text sorts by code point: upper case before lower case, "%" before "_".
    assert await _ids(storage, A.order_by("name")) == ["a1", "a4", "a3", "a2", "a5", "a6"]
    by_status = A.order_by("status").order_by("created_at", desc=True)
    assert await _ids(storage, by_status) == ["a5", "a2", "a4", "a3", "a1", "a6"]


async def test_order_by_puts_missing_values_first_ascending_last_descending(
    storage: Storage,
) -> None:
    await storage.store_message(message("u1", "a", "b", ts=1))
    await storage.store_message(message("u2", "a", "b", ts=2))
    for id, read_at in (("r-late", 50.0), ("r-early", 10.0)):
        m = message(id, "a", "b", ts=3)
        m.read, m.read_at = True, at(read_at)
        await storage.store_message(m)
    q = Q(MessageModel)
    assert await _ids(storage, q.order_by("read_at")) == ["u1", "u2", "r-early", "r-late"]
    assert await _ids(storage, q.order_by("read_at", desc=True)) == [
        "r-late",
        "r-early",
        "u1",
        "u2",
    ]


async def test_none_matches_missing_values(storage: Storage) -> None:
    await storage.store_events(
        [event("with", agent_id="a1"), event("without"), event("other", agent_id="a2")]
    )
    e = Q(EventModel)
    assert await _ids(storage, e.where_eq("agent_id", None)) == ["without"]
    assert await _ids(storage, e.where_ne("agent_id", None)) == ["other", "with"]
    # ``!=`` keeps rows whose value is missing: they are not equal to "a1".
    assert await _ids(storage, e.where_ne("agent_id", "a1")) == ["other", "without"]
    assert await _ids(storage, e.where_gt("agent_id", "a0")) == ["other", "with"]


async def test_limit_and_offset_page_through_everything(storage: Storage) -> None:
    await _agents(storage)
    ordered = A.order_by("created_at", desc=True)
    pages = []
    for start in range(0, 8, 4):
        pages.append(await _ids(storage, ordered.limit(4).offset(start)))
    assert pages == [["a6", "a5", "a4", "a3"], ["a2", "a1"]]
    assert await _ids(storage, ordered.offset(4)) == ["a2", "a1"]
    assert await _ids(storage, ordered.limit(0)) == []
    assert await _ids(storage, ordered.offset(100)) == []
    assert await _ids(storage, A.limit(2)) == ["a1", "a2"]


async def test_queries_over_every_model(storage: Storage) -> None:
    for id, prio, created in [("t1", TaskPriority.Low, 1), ("t2", TaskPriority.High, 2)]:
        await storage.store_task(
            TaskModel(
                id=id, task_type="work", priority=prio, created_at=at(created), updated_at=at(0)
            )
        )
    await storage.store_task(
        TaskModel(id="t3", task_type="other", priority=TaskPriority.High, created_at=at(3))
    )
    t = Q(TaskModel)
    assert await _ids(storage, t.where_eq("priority", TaskPriority.High)) == ["t2", "t3"]
    assert await _ids(storage, t.where_gte("priority", 1).where_eq("task_type", "work")) == ["t2"]
    assert await _ids(storage, t.where_eq("status", "pending").order_by("priority")) == [
        "t1",
        "t2",
        "t3",
    ]

    seqs = await storage.store_events([event(f"e{i}") for i in range(4)])
    assert await _ids(storage, Q(EventModel).where_gt("sequence", seqs[1])) == ["e2", "e3"]

    await storage.store_metrics([metric("m1", 1.0), metric("m2", 2.5), metric("m3", 4.0, unit="s")])
    mq = Q(MetricModel)
    assert await _ids(storage, mq.where_gte("value", 2.5)) == ["m2", "m3"]
    assert await _ids(storage, mq.where_lt("value", 2)) == ["m1"]
    assert await _ids(storage, mq.where_eq("unit", "s")) == ["m3"]

    await storage.store_message(message("unread", "a", "b"))
    seen = message("seen", "a", "b")
    seen.read, seen.read_at = True, at(1)
    await storage.store_message(seen)
    assert await _ids(storage, Q(MessageModel).where_eq("read", True)) == ["seen"]
    assert await _ids(storage, Q(MessageModel).where_eq("read", False)) == ["unread"]


async def test_query_returns_whole_models(storage: Storage) -> None:
    await _agents(storage)
    (got,) = await storage.query(A.where_eq("id", "a3"))
    assert got == await storage.get_agent("a3")
    assert isinstance(got, AgentModel)


async def test_query_inside_a_transaction_sees_its_writes(storage: Storage) -> None:
    async with storage.transaction() as tx:
        await tx.store_agent(agent("tx-agent"))
        assert await _ids(tx, A) == ["tx-agent"]


async def test_count_counts_what_the_query_selects(storage: Storage) -> None:
    await _agents(storage)
    assert await storage.count(A) == 6
    assert await storage.count(A.where_eq("status", "idle")) == 2
    assert await storage.count(A.where_like("name", "B%").where_ne("status", "idle")) == 1
    assert await storage.count(A.where_in("status", [])) == 0
    # The page, not the table: the limit and offset apply as they do to ``query``.
    assert await storage.count(A.order_by("created_at").limit(4)) == 4
    assert await storage.count(A.order_by("created_at").limit(4).offset(4)) == 2
    assert await storage.count(A.offset(5)) == 1
    assert await storage.count(Q(EventModel)) == 0


async def test_count_by_groups_by_stored_values(storage: Storage) -> None:
    await _agents(storage)
    assert await storage.count_by(A, "status") == {"idle": 2, "busy": 2, "error": 1, "paused": 1}
    assert await storage.count_by(A.where_ne("status", "idle"), "status", "name") == {
        ("busy", "alpha"): 1,
        ("busy", "gamma"): 1,
        ("error", "Beta%2"): 1,
        ("paused", "x' OR '1'='1"): 1,
    }
    assert await storage.count_by(A.order_by("created_at").limit(3), "status") == {
        "idle": 2,
        "busy": 1,
    }
    for id, prio, owner in [("t1", TaskPriority.Low, None), ("t2", TaskPriority.High, "a1")]:
        await storage.store_task(TaskModel(id=id, task_type="work", priority=prio))
        if owner:
            assert await storage.claim_task(id, owner)
    tasks = Q(TaskModel)
    assert await storage.count_by(tasks, "priority") == {0: 1, 2: 1}
    assert await storage.count_by(tasks, "assigned_to", "status") == {
        (None, "pending"): 1,
        ("a1", "assigned"): 1,
    }
    await storage.store_message(message("unread", "a", "b"))
    seen = message("seen", "a", "b")
    seen.read, seen.read_at = True, at(1)
    await storage.store_message(seen)
    await storage.store_message(message("unread2", "a", "c"))
    assert await storage.count_by(Q(MessageModel), "read") == {False: 2, True: 1}
    assert await storage.count_by(Q(MetricModel), "unit") == {}


async def test_count_inside_a_transaction_sees_its_writes(storage: Storage) -> None:
    await storage.store_agent(agent("before"))
    async with storage.transaction() as tx:
        await tx.store_agent(agent("tx-agent", status=AgentStatus.Idle))
        assert await tx.count(A) == 2
        assert await tx.count_by(A, "status") == {"active": 1, "idle": 1}
        await tx.rollback()
    assert await storage.count(A) == 1


@pytest.mark.parametrize(
    "fields", [(), ("capabilities",), ("created_at",), ("value",), ("colour",), ("id OR 1=1",)]
)
async def test_count_by_refuses_fields_it_cannot_group_by(
    storage: Storage, fields: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        await storage.count_by(A, *fields)
    assert caught.value.field == "group_by"


HOSTILE_FIELDS = [
    "id; DROP TABLE agents",
    "id OR 1=1",
    "name--",
    "Name",
    "",
    "__class__",
    "agents.id",
    "metadata",
    "capabilities",
    5,
    None,
]


@pytest.mark.parametrize("field", HOSTILE_FIELDS, ids=repr)
async def test_unknown_or_hostile_field_names_are_rejected(storage: Storage, field: Any) -> None:
    await _agents(storage)
    makers: list[Callable[[], object]] = [
        lambda: A.where_eq(field, "x"),
        lambda: A.where_in(field, ["x"]),
        lambda: A.where_like(field, "x"),
        lambda: A.order_by(field),
    ]
    for make in makers:
        with pytest.raises(ValidationError):
            make()
    assert len(await storage.list_agents()) == len(AGENTS)


@pytest.mark.parametrize("field", ["payload", "result", "dependencies"])
def test_json_fields_cannot_be_filtered(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Q(TaskModel).where_eq(field, "x")
    with pytest.raises(ValidationError, match=field):
        Q(TaskModel).order_by(field)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Q(TaskModel).where_gt("priority", "high"),
        lambda: Q(TaskModel).where_eq("retry_count", 1.5),
        lambda: Q(TaskModel).where_eq("priority", True),
        lambda: Q(AgentModel).where_eq("created_at", "yesterday"),
        lambda: Q(AgentModel).where_like("created_at", "2024%"),
        lambda: Q(AgentModel).where_like("name", cast(Any, 5)),
        lambda: Q(AgentModel).where_in("status", "idle"),
        lambda: Q(AgentModel).where_in("status", ["idle", None]),
        lambda: Q(AgentModel).where_gt("name", None),
        lambda: Q(AgentModel).where_eq("name", 5),
        lambda: Q(AgentModel).where_eq("name", "a\x00b"),
        lambda: Q(MessageModel).where_eq("read", 1),
        lambda: Q(MetricModel).where_gt("value", "1"),
        lambda: Q(AgentModel).limit(-1),
        lambda: Q(AgentModel).limit(True),
        lambda: Q(AgentModel).offset(-1),
        lambda: Q(AgentModel).offset(cast(Any, 1.5)),
        lambda: Q(AgentModel).limit(2**63),
        lambda: Q(AgentModel).offset(2**70),
        lambda: Q(dict),
        lambda: Q(cast(Any, [])),
        lambda: Q(cast(Any, "agents")),
        lambda: Q(AgentModel, "tasks"),
        lambda: Q(TaskModel).where_eq("priority", 2**63),
        lambda: Q(TaskModel).where_in("retry_count", [1, -(2**63) - 1]),
        lambda: Q(MetricModel).where_eq("value", 10**400),
        lambda: Q(AgentModel).where_like("name", "%" * 50_001),
        lambda: Q(AgentModel).where_like("name", "é" * 25_001),
    ],
)
def test_bad_values_are_rejected(make: Callable[[], object]) -> None:
    with pytest.raises(ValidationError):
        make()


@pytest.mark.parametrize("builder", ["SELECT * FROM agents", None, AgentModel], ids=repr)
async def test_query_needs_a_builder(storage: Storage, builder: Any) -> None:
    with pytest.raises(ValidationError):
        await storage.query(builder)


async def test_agent_repository(storage: Storage) -> None:
    repo = storage.agents
    a = agent("r1", name="first")
    await repo.save(a)
    assert await repo.find_by_id("r1") == a
    assert await repo.find_by_id("nope") is None
    with pytest.raises(ConflictError):
        await repo.save(agent("r1"))
    await repo.save(agent("r0", created=5))
    assert [x.id for x in await repo.find_all()] == ["r0", "r1"]
    a.name = "renamed"
    await repo.update(a)
    assert await storage.get_agent("r1") == a
    with pytest.raises(NotFoundError):
        await repo.update(agent("ghost"))
    assert [x.id for x in await repo.query(repo.builder().where_eq("name", "renamed"))] == ["r1"]
    await repo.delete("r1")
    await repo.delete("r1")
    assert await repo.find_by_id("r1") is None
    assert [x.id for x in await repo.find_all()] == ["r0"]


async def test_task_repository(storage: Storage) -> None:
    repo = storage.tasks
    t = TaskModel(id="t1", task_type="work", payload={"n": 1}, created_at=at(0))
    await repo.save(t)
    assert await repo.find_by_id("t1") == t
    t.payload = {"n": 2}
    await repo.update(t)
    got = await storage.get_task("t1")
    assert got is not None
    assert got.payload == {"n": 2}
    await repo.delete("t1")
    await repo.delete("t1")
    assert await repo.find_all() == []


async def test_message_repository(storage: Storage) -> None:
    repo = storage.messages
    m = message("m1", "a", "b")
    await repo.save(m)
    assert await repo.find_by_id("m1") == m
    with pytest.raises(ValidationError, match="messages cannot be updated"):
        await repo.update(m)
    await repo.delete("m1")
    await repo.delete("m1")
    assert await repo.find_all() == []


async def test_event_and_metric_repositories_are_append_only(storage: Storage) -> None:
    ev = event("e1")
    await storage.events.save(ev)
    assert ev.sequence is not None
    assert await storage.events.find_by_id("e1") == ev
    m = metric("m1", 3.0)
    await storage.metrics.save(m)
    assert await storage.metrics.find_by_id("m1") == m
    for repo, row in ((storage.events, ev), (storage.metrics, m)):
        with pytest.raises(ValidationError):
            await repo.update(row)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await repo.delete(row.id)
        assert [x.id for x in await repo.find_all()] == [row.id]


async def test_repository_refuses_a_builder_of_another_model(storage: Storage) -> None:
    with pytest.raises(ValidationError):
        await storage.agents.query(Q(TaskModel))  # type: ignore[arg-type]


async def test_integers_beyond_a_column_type_compare_like_integers(storage: Storage) -> None:
    """PostgreSQL's narrower columns (SMALLINT, INTEGER) take any 64-bit value to compare."""
    await storage.store_task(TaskModel.new("t", {}, TaskPriority.High, id="t1"))
    tasks = Q(TaskModel)
    assert await _ids(storage, tasks.where_eq("priority", 40_000)) == []
    assert await _ids(storage, tasks.where_lt("priority", 40_000)) == ["t1"]
    assert await _ids(storage, tasks.where_gt("retry_count", -(2**40))) == ["t1"]
    assert await _ids(storage, tasks.where_in("max_retries", [2**40, 3])) == ["t1"]
    assert await _ids(storage, tasks.where_ne("priority", -(2**63))) == ["t1"]


async def test_in_takes_lists_longer_than_any_parameter_limit(storage: Storage) -> None:
    await _agents(storage)
    many = [f"x{i}" for i in range(40_000)]
    assert await _ids(storage, A.where_in("id", [*many, "a2", "a5"])) == ["a2", "a5"]
    assert await _ids(storage, A.where_in("created_at", list(range(40_000)))) == []


async def test_like_with_many_wildcards_answers(storage: Storage) -> None:
    """A pattern that makes a backtracking matcher take seconds per row is answered."""
    await storage.store_agent(agent("w1", name="a" * 250))
    await storage.store_agent(agent("w2", name="a" * 249 + "b"))
    assert await _ids(storage, A.where_like("name", "%a%a%a%b")) == ["w2"]
    assert await _ids(storage, A.where_like("name", "%a_a%a%")) == ["w1", "w2"]
    assert await _ids(storage, A.where_like("name", "a%b%")) == ["w2"]


async def test_like_has_no_escape_character(storage: Storage) -> None:
    """A backslash in a LIKE pattern is an ordinary character on every backend."""
    for id, name in (("b1", "a\\b"), ("b2", "a%b"), ("b3", "a\\%b"), ("b4", "ab")):
        await storage.store_agent(agent(id, name=name))
    assert await _ids(storage, A.where_like("name", "a\\%")) == ["b1", "b3"]
    assert await _ids(storage, A.where_like("name", "a\\_")) == ["b1"]
    assert await _ids(storage, A.where_like("name", "a_b")) == ["b1", "b2"]


__all__ = [name for name in list(globals()) if name.startswith("test_")]
