"""Conformance: hostile arguments for every public method, drawn by hypothesis.

:mod:`.arguments` holds every method to one bad value at a time, chosen by hand. This module
draws what an adversary would pass instead — integers past 64 bits, NaN and infinities,
negative zero, lone surrogates, NUL, huge strings, naive and out-of-range datetimes, time zones
that raise, extreme ``timedelta`` values, bools where integers go, enums and subclasses of
built-in types, nested junk, models with any field replaced — mixed with good values so that
some calls succeed, and holds every backend to three rules:

* a call either returns or raises one of the library's typed errors for bad input
  (:data:`INPUT_ERRORS`; a :class:`ValidationError` names its field); never ``TypeError``,
  ``OverflowError``, a driver error, a :class:`DatabaseError` (the database refusing what
  validation let through) or a hang;
* a refused call changes nothing (a snapshot through the public API before and after);
* what was accepted can be read back (the snapshot after every call decodes), and a stored
  model reads back equal to what was stored.

:data:`ARGUMENTS` has one strategy per public ``Storage`` method, found from the class itself;
a method added without one fails :func:`test_every_public_method_has_a_hostile_strategy`.
Each of ``HOSTILE_EXAMPLES`` examples (environment, default 6) calls every method once, in a
drawn order, on one storage that started with agent ``a1`` holding task ``t1``, pending task
``t2``, an event, a message and a metric (what one call leaves, the next call meets).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from enum import IntEnum, StrEnum
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from ..errors import (
    ConflictError,
    LeaseLostError,
    NotFoundError,
    TransactionError,
    ValidationError,
)
from ..models import AgentModel, EventModel, MessageModel, MetricModel, TaskModel
from ..query import QueryBuilder
from ..schedules import ScheduleModel
from ..storage import Storage
from ._support import agent, at, event, message, metric, snapshot

#: The errors a call may raise for what it was given: anything else fails the test.
INPUT_ERRORS: Final = (
    ValidationError,
    NotFoundError,
    ConflictError,
    LeaseLostError,
    TransactionError,
)
#: Methods not drawn for: ``close`` ends the storage every example shares.
NOT_FUZZED: Final = frozenset({"close"})
#: Methods that may wait as long as they were told: an unanswered call after this is fine.
WAITS: Final = frozenset({"wait_for_tasks", "wait_for_task", "wait_for_messages", "subscribe"})
WAIT_BOUND: Final = 0.05
#: A call that takes longer than this is a hang (a checkpoint on a busy server may take a while).
CALL_LIMIT: Final = 60.0

EXAMPLES: Final = int(os.environ.get("HOSTILE_EXAMPLES", "6"))


# --- hostile values ---------------------------------------------------------------------------


class Shade(IntEnum):
    """An int enum: an int by value, not by type."""

    Dark = 1


class Colour(StrEnum):
    """A str enum."""

    Red = "a1"


class IntSub(int):
    """An int subclass."""


class FloatSub(float):
    """A float subclass."""


class StrSub(str):
    """A str subclass (equal to a stored id)."""

    __slots__ = ()


class RaisingZone(tzinfo):
    """A time zone whose offset raises."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("this zone is broken")

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return "odd"


class NoOffsetZone(tzinfo):
    """A time zone without an offset: the datetime is naive in effect."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None

    def dst(self, dt: datetime | None) -> None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return "odd"


class WideZone(tzinfo):
    """A time zone whose offset (30 h) ``datetime`` itself refuses."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)

    def dst(self, dt: datetime | None) -> None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return "odd"


_EAST, _WEST = timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23, minutes=59))

#: Values each chosen to break something: a type check, a range, an encoding, a database column.
SPECIAL: Final[list[Any]] = [
    None, True, False, 0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
    -(2**63), -(2**63) - 1, 10**400, -(10**400), Shade.Dark, IntSub(3),
    0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1.7976931348623157e308,
    -1.7976931348623157e308, 5e-324, 1e300, 0.1, FloatSub(1.5),
    "", " ", "a1", "t1", "t2", "\x00", "a\x00b", "\ud800", "x\udfff", "x" * 257,
    "%", "_", "%a%a%a%b", "a' OR '1'='1", "\u2028", "\U0001f600", "\ufeff", StrSub("a1"),
    Colour.Red, b"a1", bytearray(b"t1"),
    timedelta(0), timedelta(microseconds=1), timedelta(microseconds=-1), timedelta.max,
    timedelta.min, timedelta(days=3_000_000),
    datetime(2024, 1, 1), datetime.min, datetime.max,
    datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC),
    datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    datetime.max.replace(tzinfo=_WEST), datetime.min.replace(tzinfo=_EAST),
]  # fmt: skip


def _cyclic() -> list[Any]:
    v: list[Any] = []
    v.append(v)
    return v


def _deep(levels: int) -> Any:
    v: Any = 0
    for _ in range(levels):
        v = [v]
    return v


#: Fresh each time: containers and objects a call could keep or change.
_MADE: Final[list[Callable[[], Any]]] = [
    object, list, dict, set, tuple, lambda: (1, 2), lambda: {1, 2}, lambda: frozenset({"a1"}),
    lambda: ["a1"], lambda: ("a1",), lambda: {"a1": 1}, lambda: {1: "x"}, lambda: {None: 1},
    lambda: iter(["a1"]), lambda: AgentModel, lambda: QueryBuilder(AgentModel),
    lambda: agent("a1"), lambda: [[[[[[]]]]]], _cyclic, lambda: "x" * 70_000,
    lambda: "é" * 40_000,
    # Not hashable (the zone fails), so not in a sampled list:
    lambda: datetime(2024, 1, 1, tzinfo=RaisingZone()),
    lambda: datetime(2024, 1, 1, tzinfo=NoOffsetZone()),
    lambda: datetime(2024, 1, 1, tzinfo=WideZone()),
]  # fmt: skip


scalars: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from(_MADE).map(lambda make: make()),
    st.integers(),
    st.floats(),
    st.text(st.characters(codec=None), max_size=20),
    st.datetimes(timezones=st.sampled_from([None, UTC, _EAST, _WEST])),
    st.timedeltas(),
    st.binary(max_size=8),
)

#: Anything: a scalar or junk nested in lists, tuples and dicts with keys of any kind.
hostile: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(
            st.one_of(st.text(max_size=5), st.integers(), st.none()), inner, max_size=4
        ),
        st.integers(250, 260).map(_deep),
    ),
    max_leaves=8,
)

#: JSON that may be valid, with values at every edge (depth, 64-bit integers, odd strings).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(st.characters(codec=None), max_size=10),
        st.sampled_from(SPECIAL),
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(codec=None), max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


def good_or_hostile(*good: Any) -> st.SearchStrategy[Any]:
    """One of the ``good`` values (two draws in three, so calls go through), or anything."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), hostile)


IDS = good_or_hostile("a1", "a2", "t1", "t2", "e1", "m1", "x1", "ghost")
TEXTS = good_or_hostile("work", "test.event", "latency", "note", "boom")
COUNTS = good_or_hostile(0, 1, 10, 100)
DURATIONS = good_or_hostile(None, 0.5, 30, timedelta(minutes=5))
TIMES = good_or_hostile(None, 0, at(0), at(60), 1.5e9)
WAIT_TIMEOUTS = good_or_hostile(0, 0.01)
TYPE_LISTS = good_or_hostile(None, ["work"], ("work", "other"), [])
ID_LISTS = good_or_hostile([], ["t1"], ("t2", "t1"), ["ghost"])
#: ``complete_tasks``'s results: pairs or a mapping, of tasks held, not held, unknown.
RESULTS = st.one_of(
    good_or_hostile([], [("t1", None)], {"t1": {"ok": True}}, [("t1", 1), ("t2", 2)]),
    st.lists(st.tuples(IDS, st.one_of(json_values, hostile)), max_size=3),
    st.dictionaries(st.sampled_from(["t1", "t2", "ghost"]), st.one_of(json_values, hostile)),
)


# --- models with hostile fields ---------------------------------------------------------------


def _task(id: str) -> TaskModel:
    return TaskModel(
        id=id, task_type="work", payload={"id": id}, created_at=at(0), updated_at=at(0)
    )


_BASES: Final[dict[type, Callable[[str], Any]]] = {
    AgentModel: agent,
    TaskModel: _task,
    EventModel: lambda id: event(id, agent_id="a1"),
    MessageModel: lambda id: message(id, "a1", "a2"),
    MetricModel: lambda id: metric(id, 2.0),
}


@st.composite
def models(draw: st.DrawFn, cls: type, ids: tuple[str, ...] = ("n1", "n2", "a1", "t2")) -> Any:
    """A valid model of ``cls`` with up to three fields replaced (JSON or anything hostile)."""
    model = _BASES[cls](draw(st.sampled_from(ids)))
    names = [f.name for f in dataclasses.fields(cls)]
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        setattr(model, name, draw(st.one_of(json_values, hostile)))
    return model


def model_or_junk(cls: type) -> st.SearchStrategy[Any]:
    """A (possibly damaged) model, or no model at all."""
    return st.one_of(models(cls), models(cls), hostile)


def batches(cls: type) -> st.SearchStrategy[Any]:
    """A list of (possibly damaged) models, or something else."""
    ids = ("n1", "n2", "n3", "a1", "t2")
    return st.one_of(st.lists(models(cls, ids), max_size=4), st.tuples(models(cls, ids)), hostile)


class Deferred:
    """Arguments made inside the call (a builder whose making may raise, too)."""

    def __init__(self, make: Callable[[], Any], text: str) -> None:
        self.make = make
        self.text = text

    def __repr__(self) -> str:
        return self.text


_MODELS: Final = (AgentModel, TaskModel, EventModel, MessageModel, MetricModel)
_OPS: Final = ("where_eq", "where_ne", "where_gt", "where_gte", "where_lt", "where_lte",
               "where_like", "where_in", "order_by", "limit", "offset")  # fmt: skip


@st.composite
def builders(draw: st.DrawFn) -> Deferred:
    """A ``QueryBuilder`` over any model with hostile conditions, made at the call."""
    model = draw(st.sampled_from(_MODELS))
    names = [f.name for f in dataclasses.fields(model)]
    steps: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(_OPS))
        if op in ("limit", "offset"):
            steps.append((op, (draw(COUNTS),)))
        elif op == "where_in":
            values = draw(st.one_of(st.lists(hostile, max_size=4), hostile))
            steps.append((op, (draw(good_or_hostile(*names)), values)))
        else:
            steps.append((op, (draw(good_or_hostile(*names)), draw(hostile))))

    def make() -> Any:
        b: Any = QueryBuilder(model)
        for name, args in steps:
            b = getattr(b, name)(*args)
        return b

    return Deferred(
        make, f"QueryBuilder({model.__name__}){''.join(f'.{n}{a!r}' for n, a in steps)}"
    )


# --- the strategy of each method's arguments --------------------------------------------------


def args(**params: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    """The arguments of one call, in signature order (names are checked against it)."""
    return st.tuples(*params.values()) if params else st.just(())


_SIGNATURE_NAMES: dict[str, tuple[str, ...]] = {}


_SCHEDULE: Final = ScheduleModel(
    "r1", "30s", {"task_type": "work", "payload": None, "priority": 2, "max_retries": 3}, "UTC",
    "skip", False, at(60), None, at(0), at(0),
)  # fmt: skip
_PAUSED_SCHEDULE: Final = dataclasses.replace(_SCHEDULE, name="r2", paused=True, last_due=at(30))


def _m(name: str, /, **params: st.SearchStrategy[Any]) -> tuple[str, st.SearchStrategy[Any]]:
    _SIGNATURE_NAMES[name] = tuple(params)
    return name, args(**params)


ARGUMENTS: Final[dict[str, st.SearchStrategy[tuple[Any, ...]]]] = dict(
    [
        _m("store_agent", agent=model_or_junk(AgentModel)),
        _m("get_agent", agent_id=IDS),
        _m("update_agent", agent=model_or_junk(AgentModel)),
        _m("delete_agent", agent_id=IDS),
        _m("list_agents"),
        _m("list_agents_by_status", status=good_or_hostile("active", "idle", "error")),
        _m("heartbeat", agent_id=IDS, at=TIMES),
        _m("find_stale_agents", older_than=good_or_hostile(60, 0, at(0), timedelta(hours=1))),
        _m("reap_stale_agents", older_than=good_or_hostile(60, 0, at(0), timedelta(hours=1))),
        _m("store_task", task=model_or_junk(TaskModel)),
        _m("store_tasks", tasks=batches(TaskModel)),
        _m("get_task", task_id=IDS),
        _m("update_task", task=model_or_junk(TaskModel)),
        _m("delete_task", task_id=IDS),
        _m("get_pending_tasks"),
        _m("get_ready_tasks", limit=good_or_hostile(None, 0, 1, 10)),
        _m("get_tasks_by_agent", agent_id=IDS),
        _m("claim_task", task_id=IDS, agent_id=IDS, lease=DURATIONS),
        _m("claim_next_task", agent_id=IDS, task_types=TYPE_LISTS, lease=DURATIONS),
        _m(
            "claim_next_tasks",
            agent_id=IDS,
            n=good_or_hostile(1, 2, 1000),
            task_types=TYPE_LISTS,
            lease=DURATIONS,
        ),
        _m("start_task", task_id=IDS, agent_id=IDS),
        _m("complete_task", task_id=IDS, agent_id=IDS, result=st.one_of(json_values, hostile)),
        _m("complete_tasks", results=RESULTS, agent_id=IDS),
        _m("fail_task", task_id=IDS, agent_id=IDS, error=TEXTS),
        _m("cancel_task", task_id=IDS, reason=good_or_hostile(None, "not needed")),
        _m("heartbeat_task", task_id=IDS, agent_id=IDS, lease=DURATIONS),
        _m("wait_for_tasks", timeout=WAIT_TIMEOUTS, task_types=TYPE_LISTS),
        _m("release_task", task_id=IDS, agent_id=IDS),
        _m("wait_for_task", task_id=IDS, timeout=WAIT_TIMEOUTS),
        _m("get_dependency_results", task_id=IDS),
        _m("get_failed_tasks", task_type=good_or_hostile(None, "work"), limit=COUNTS),
        _m("set_concurrency_limit", key=IDS, limit=good_or_hostile(None, 0, 1, 10)),
        _m("set_rate_limit", key=IDS, limit=good_or_hostile(None, 0, 1, 10), per=DURATIONS),
        _m("list_queue_limits"),
        _m("retry_task", task_id=IDS),
        _m("retry_tasks", task_ids=ID_LISTS),
        _m("retry_failed_tasks", task_type=good_or_hostile(None, "work")),
        _m("store_event", event=model_or_junk(EventModel)),
        _m("store_events", events=batches(EventModel)),
        _m("get_event", event_id=IDS),
        _m("get_events_by_agent", agent_id=IDS, limit=COUNTS),
        _m("get_events_by_type", event_type=TEXTS, limit=COUNTS),
        _m("get_events_since", since=TIMES),
        _m("read_events", after_sequence=COUNTS, limit=COUNTS),
        _m("subscribe", after_sequence=COUNTS, event_types=TYPE_LISTS),
        _m("store_message", message=model_or_junk(MessageModel)),
        _m("get_message", message_id=IDS),
        _m("delete_message", message_id=IDS),
        _m("get_messages_between", agent_a=IDS, agent_b=IDS, limit=COUNTS),
        _m("get_unread_messages", agent_id=IDS),
        _m("mark_message_read", message_id=IDS),
        _m("wait_for_messages", agent_id=IDS, timeout=WAIT_TIMEOUTS),
        _m("store_metric", metric=model_or_junk(MetricModel)),
        _m("store_metrics", metrics=batches(MetricModel)),
        _m("get_metrics_by_agent", agent_id=IDS, metric_type=good_or_hostile(None, "latency")),
        _m("get_aggregated_metrics", metric_type=TEXTS, start=TIMES, end=TIMES),
        _m(
            "aggregate_metrics",
            metric_type=TEXTS,
            start=TIMES,
            end=TIMES,
            group_by=good_or_hostile(("agent_id",), ["tag:k", "agent_id"], [], "agent_id"),
            bucket=DURATIONS,
        ),
        _m("begin_transaction", timeout=DURATIONS),
        _m("transaction", timeout=DURATIONS),
        _m("query", builder=st.one_of(builders(), builders(), hostile)),
        _m("count", builder=st.one_of(builders(), builders(), hostile)),
        _m(
            "count_by",
            builder=st.one_of(builders(), builders(), hostile),
            group_by=good_or_hostile("status", "id", "priority", "read", "created_at"),
        ),
        _m("vacuum"),
        _m("checkpoint"),
        _m("get_storage_size"),
        _m("prune", events_before=TIMES, metrics_before=TIMES, read_messages_before=TIMES),
        _m("apply_retention", policy=good_or_hostile(None, "events:1h", "tasks:10,messages:1d")),
        _m("retention_report"),
        _m(
            "restore_retention_record",
            last_run=TIMES,
            removed=good_or_hostile({}, {"events": 3}, {"tasks": 1, "metrics": 0}),
        ),
        _m(
            "store_schedule",
            name=good_or_hostile("s1", "s2"),
            cron_or_interval=good_or_hostile("1m", 30, timedelta(hours=1), "every 5s"),
            task_template=good_or_hostile({"task_type": "work"}, {"task_type": "w", "payload": 1}),
            timezone=good_or_hostile("UTC", "Europe/Berlin"),
            missed=good_or_hostile("skip", "run_once"),
        ),
        _m("get_schedule", name=good_or_hostile("s1", "ghost")),
        _m("list_schedules"),
        _m("restore_schedule", schedule=good_or_hostile(_SCHEDULE, _PAUSED_SCHEDULE)),
        _m("delete_schedule", name=good_or_hostile("s2", "ghost")),
        _m("pause_schedule", name=good_or_hostile("s1", "ghost")),
        _m("resume_schedule", name=good_or_hostile("s1", "ghost")),
        _m("fire_due_schedules"),
    ]
)


def public_methods() -> list[str]:
    """Every public method of ``Storage`` (what a new backend must implement)."""
    return sorted(
        name
        for name, _ in inspect.getmembers(Storage, callable)
        if not name.startswith("_") and name not in NOT_FUZZED
    )


# --- running one call -------------------------------------------------------------------------


async def _populate(storage: Storage) -> None:
    """Agent a1 holding task t1; pending task t2; event e1, message m1 (a1 → a2), metric x1."""
    await storage.store_agent(agent("a1"))
    await storage.store_tasks([_task("t1"), _task("t2")])
    assert await storage.claim_task("t1", "a1")
    await storage.store_event(event("e1", agent_id="a1"))
    await storage.store_message(message("m1", "a1", "a2"))
    await storage.store_metric(metric("x1", 1.0))


async def call(storage: Storage, name: str, arguments: tuple[Any, ...]) -> Any:
    """Make the call (a wait bounded by ``WAIT_BOUND``, anything else by ``WAIT``)."""
    made = [a.make() if isinstance(a, Deferred) else a for a in arguments]
    fn = getattr(storage, name)
    if name == "subscribe":
        events = fn(*made)
        try:
            return await asyncio.wait_for(anext(events), WAIT_BOUND)
        except TimeoutError:
            return "still waiting"
        finally:
            await events.aclose()
    if name in WAITS:
        try:
            return await asyncio.wait_for(fn(*made), WAIT_BOUND)
        except TimeoutError:
            return "still waiting"
    if name == "begin_transaction":
        tx = await asyncio.wait_for(fn(*made), CALL_LIMIT)
        await tx.rollback()
        return tx
    if name == "transaction":
        async with fn(*made) as tx:
            return tx
    params = list(inspect.signature(getattr(Storage, name)).parameters.values())[1:]
    keywords = {p.name: v for p, v in zip(params, made, strict=False) if p.kind is p.KEYWORD_ONLY}
    positional = made[: len(made) - len(keywords)]
    return await asyncio.wait_for(fn(*positional, **keywords), CALL_LIMIT)


def _stored(name: str, arguments: tuple[Any, ...]) -> list[Any]:
    """The models an accepted ``store_*`` call wrote."""
    if name in ("store_agent", "store_task", "store_event", "store_message", "store_metric"):
        return [arguments[0]]
    if name in ("store_tasks", "store_events", "store_metrics"):
        return list(arguments[0])
    return []


def _find(tables: dict[str, list[Any]], model: Any) -> Any:
    table = {
        AgentModel: "agents",
        TaskModel: "tasks",
        EventModel: "events",
        MessageModel: "messages",
        MetricModel: "metrics",
    }[type(model)]
    return next((m for m in tables[table] if m.id == model.id), None)


async def check_call(storage: Storage, name: str, arguments: tuple[Any, ...]) -> None:
    """Run one drawn call and hold it to the rules of this module."""
    if currently_in_test_context():  # also run outside hypothesis, for the calls kept
        note(f"{name}{arguments!r}"[:2000])
    before = await snapshot(storage)
    refused: Exception | None = None
    try:
        await call(storage, name, arguments)
    except INPUT_ERRORS as exc:
        refused = exc
    except Exception as exc:  # the point of the test: nothing else may escape
        raise AssertionError(f"{name} raised {type(exc).__name__}: {exc}"[:500]) from exc
    if refused is not None:
        after = await snapshot(storage)
        changed = [t for t in before if before[t] != after[t]]
        assert changed == [], f"{name} raised {refused!r} and still changed {changed}"
        if isinstance(refused, ValidationError):
            assert refused.field, f"{name} raised {refused!r}, which names no field"
        return
    after = await snapshot(storage)  # every accepted write reads back
    for model in _stored(name, arguments):
        got = _find(after, model)
        assert got == model, f"{name} stored {model!r}, reads back {got!r}"


@pytest.fixture
async def hostile_storage(storage: Storage) -> Storage:
    """The storage every example of one method runs against (populated once)."""
    await _populate(storage)
    return storage


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_hostile_arguments_raise_typed_errors_and_change_nothing(
    hostile_storage: Storage, data: st.DataObject
) -> None:
    """Each example calls every public method once, in a drawn order, on one storage."""
    for name in data.draw(st.permutations(sorted(ARGUMENTS)), label="order"):
        arguments = data.draw(ARGUMENTS[name], label=name)
        await check_call(hostile_storage, name, arguments)


_UNHASHABLE_DEPS: Any = [["t1"]]

#: Calls these runs found raising untyped errors, kept so they never come back.
FOUND: Final[list[tuple[str, tuple[Any, ...]]]] = [
    ("update_task", (dataclasses.replace(_task("t2"), dependencies=_UNHASHABLE_DEPS),)),
    ("store_tasks", ([dataclasses.replace(_task("n1"), dependencies=_UNHASHABLE_DEPS * 2)],)),
    ("wait_for_tasks", (1.797693134862316e302, None)),
    ("wait_for_task", ("t2", 10**400)),
    ("get_events_since", (-(10**400),)),
    ("get_events_since", (1.7976931348623157e308,)),
    ("transaction", (-(10**400),)),
    ("claim_task", ("t2", "a1", 10**400)),
    ("prune", (None, -1.7976931348623157e308, None)),
    # A transaction timeout past PostgreSQL's longest setting (~24.8 days) was refused by it.
    ("begin_transaction", (timedelta(days=373),)),
    # A datetime whose time zone raises, inside JSON: orjson crashed the process on it.
    ("complete_task", ("t1", "a1", [datetime(2024, 1, 1, tzinfo=RaisingZone())])),
    # The same datetime as an enum value: looking it up hashes it, and the RuntimeError escaped.
    ("list_agents_by_status", (datetime(2024, 1, 1, tzinfo=RaisingZone()),)),
]


@pytest.mark.parametrize("found", FOUND, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FOUND)])
async def test_calls_found_by_hostile_runs(
    hostile_storage: Storage, found: tuple[str, tuple[Any, ...]]
) -> None:
    await check_call(hostile_storage, *found)


def test_every_public_method_has_a_hostile_strategy() -> None:
    """A method added to ``Storage`` needs a strategy here, named as its parameters are."""
    assert sorted(ARGUMENTS) == public_methods()
    for name in ARGUMENTS:
        # Every positional parameter is drawn; keyword-only ones may be (``store_schedule``'s
        # ``timezone``) or not (``raise_on_duplicate``), in signature order either way.
        params = list(inspect.signature(getattr(Storage, name)).parameters.values())[1:]
        positional = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
        drawn = _SIGNATURE_NAMES[name]
        assert drawn == tuple(p.name for p in params)[: len(drawn)], name
        assert len(drawn) >= len(positional), name


async def test_negative_zero_is_stored_as_zero(storage: Storage) -> None:
    """``-0.0`` reads back as ``0.0`` everywhere: one backend could not keep it (``jsonb``)."""
    zeros = {"z": -0.0, "l": [-0.0, {"n": -0.0}], "s": "-0.0", "f": -0.05}
    await storage.store_agent(agent("a1", metadata=dict(zeros)))
    await storage.store_task(dataclasses.replace(_task("t1"), payload=-0.0))
    assert await storage.claim_task("t1", "a1")
    await storage.complete_task("t1", "a1", [-0.0])
    await storage.store_event(event("e1", payload=zeros))
    await storage.store_message(message("m1", "a1", "a2", content=-0.0))
    await storage.store_metrics([metric("x1", -0.0), metric("x2", -0.0)])

    def signs(value: Any) -> Any:
        if isinstance(value, float):
            return math.copysign(1.0, value)
        if isinstance(value, list):
            return [signs(v) for v in value]
        if isinstance(value, dict):
            return {k: signs(v) for k, v in value.items()}
        return value

    stored_agent = await storage.get_agent("a1")
    task = await storage.get_task("t1")
    assert stored_agent is not None
    assert task is not None
    (stored_event,) = await storage.read_events()
    stored_message = await storage.get_message("m1")
    assert stored_message is not None
    metrics = await storage.metrics.find_all()
    aggregates = await storage.aggregate_metrics("latency", at(-1), at(1), group_by=())
    (crate,) = await storage.get_aggregated_metrics("latency", at(-1), at(1))
    positive = {"z": 1.0, "l": [1.0, {"n": 1.0}], "s": "-0.0", "f": -1.0}
    assert signs(stored_agent.metadata) == positive
    assert signs(stored_event.payload) == positive
    assert signs([task.payload, task.result, stored_message.content]) == [1.0, [1.0], 1.0]
    assert signs([m.value for m in metrics]) == [1.0, 1.0]
    (agg,) = aggregates
    assert signs([agg.sum, agg.mean, agg.min, agg.max, agg.p50, agg.p99]) == [1.0] * 6
    assert [signs(crate.value), crate.tags["min"], crate.tags["max"]] == [1.0, "0.0", "0.0"]


__all__ = [name for name in list(globals()) if name.startswith("test_")] + ["hostile_storage"]
