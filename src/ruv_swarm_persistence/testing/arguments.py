"""Conformance: every public method refuses every kind of bad argument, at once, the same way.

Each case calls one public method (of ``Storage`` or of a repository: ``storage.agents.delete``
…) with one kind of bad argument and expects, on every backend:

* a :class:`ValidationError` (not a ``TypeError``, a driver error, or a quiet ``None``);
* whose ``field`` names the offending parameter (``task_id``, ``limit``, ``lease``, …). For a
  model argument it is the model field as :mod:`~ruv_swarm_persistence.codec` names it
  (``task.id``, ``agent.status``; ``task`` when the value is not a task at all); for a batch of
  models, the batch parameter (``tasks``) when it is not a list, else the item's field;
* raised before any waiting or I/O: the call is made while another task's transaction holds
  the storage, and must raise without waiting for it;
* and nothing written.

**Arguments are checked left to right, in signature order** (the front's rule): when several
arguments of one call are bad — ``complete_task("", "a", float("nan"))`` — the error names the
first (``task_id``), never a later one (``result``). The multi-argument cases below hold every
backend to that.

The cases are generated from :data:`METHODS`, one line per method: each parameter has a good
value and a table of bad values by kind (:data:`BAD_IDS`, :data:`BAD_COUNTS`, …); a case sets
one parameter to one bad value and keeps the others good, so a backend that let the value
through would do something visible (the storage holds an agent ``a1``, a task ``t1`` claimed
by it, a pending task ``t2``, an event, a message and a metric). :data:`SEVERAL_BAD` adds the
calls with several bad arguments. Methods without parameters (``list_agents``, ``vacuum``,
``find_all`` …) have no case.

Decisions this suite takes (where the API's signature and docstrings leave room):

* ``None`` is bad wherever the signature does not say ``| None``; where it does (``heartbeat``'s
  ``at``, ``lease``, ``timeout``, ``limit`` of ``get_ready_tasks``, ``reason``, ``result``,
  ``metric_type`` of ``get_metrics_by_agent``, ``prune``'s times, type filters), it is good.
* Epoch seconds may be negative (a time before 1970 is a time). A time outside the years 1
  to 9999 (what a stored row can be read back as), or a stored duration (``lease``,
  ``older_than``, ``bucket``) longer than that range, is out of range; a wait's ``timeout``
  may be as long as the caller likes (it never reaches a database).
* A limit or a sequence number must fit in a signed 64-bit integer (the column type).
* A zero duration is bad where codec requires a positive one (``lease``, ``bucket``, a
  transaction's ``timeout``) and good for ``older_than`` and the waits' ``timeout`` (a poll).
* A type filter (``task_types``, ``event_types``) must be a sequence of non-empty texts, not
  a bare string (its characters would filter); ``group_by`` names ``agent_id`` or ``tag:<name>``.
* Fields of one model are checked in the order the model declares them, as arguments are: a
  message with a bad ``id`` and a bad ``read`` names ``message.id``.
* A repository's methods name their own parameters: ``storage.agents.delete("")`` names ``id``
  (not ``agent_id``, the parameter of the storage method it delegates to), and ``find_by_id``
  refuses a bad id as ``get_agent`` does, for every kind; ``update`` of a kind that cannot be
  updated (events, messages, metrics) names ``entity`` whatever the value.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ..errors import ValidationError
from ..models import AgentModel, EventModel, MessageModel, MetricModel, TaskModel
from ..query import QueryBuilder
from ..schedules import ScheduleModel
from ..storage import Storage, Transaction
from ._support import agent, at, event, message, metric, snapshot, within

#: How long a bad call may take while the storage is held before it counts as waiting.
GATE_WAIT = 2.0
#: How long a call that waited is given, once the storage is free, to show what it then does.
AFTER_GATE = 2.0

Make = Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Bad:
    """A bad value (made fresh per case) and the field it is expected to be named by.

    ``field`` ``None`` means the parameter's own name.
    """

    make: Make
    field: str | None = None


def _v(value: Any) -> Bad:
    """A bad value shared between cases (only for immutable values)."""
    return Bad(lambda: value)


def _new(make: Make) -> Bad:
    return Bad(make)


# --- bad values, by kind ------------------------------------------------------------------

#: Seconds (of a time or a duration) whose microseconds do not fit in a 64-bit column.
_HUGE = 10**18


def _naive() -> datetime:
    return datetime(2024, 1, 1)


def _cyclic() -> Any:
    v: list[Any] = []
    v.append(v)
    return v


def _deep(levels: int) -> Any:
    v: Any = 1
    for _ in range(levels):
        v = [v]
    return v


BAD_IDS: dict[str, Bad] = {
    "int": _v(42),
    "none": _v(None),
    "bytes": _v(b"a1"),
    "empty": _v(""),
    "too-long": _v("x" * 257),
    "nul": _v("a\x00b"),
    "surrogate": _v("\udc80"),
}

BAD_TEXTS: dict[str, Bad] = {
    "int": _v(42),
    "none": _v(None),
    "bytes": _v(b"x"),
    "empty": _v(""),
    "too-long": _v("x" * 65_537),
    "nul": _v("a\x00b"),
    "surrogate": _v("\udc80"),
}

#: Limits and sequence numbers: non-negative integers.
BAD_COUNTS: dict[str, Bad] = {
    "negative": _v(-1),
    "float": _v(1.5),
    "nan": _v(math.nan),
    "str": _v("10"),
    "bool": _v(True),
    "none": _v(None),
    "beyond-int64": _v(2**63),
}

#: Durations: a ``timedelta`` or seconds, finite and positive.
BAD_DURATIONS: dict[str, Bad] = {
    "nan": _v(math.nan),
    "inf": _v(math.inf),
    "negative": _v(-1),
    "negative-timedelta": _v(timedelta(seconds=-1)),
    "zero": _v(0),
    "str": _v("30"),
    "bool": _v(True),
    "datetime": _v(datetime(2024, 1, 1, tzinfo=UTC)),
    "none": _v(None),
    "beyond-int64": _v(_HUGE),
}

#: Time arguments: an aware ``datetime`` or finite epoch seconds.
BAD_TIMES: dict[str, Bad] = {
    "nan": _v(math.nan),
    "inf": _v(math.inf),
    "-inf": _v(-math.inf),
    "str": _v("today"),
    "bool": _v(True),
    "naive": Bad(_naive),
    "timedelta": _v(timedelta(seconds=1)),
    "none": _v(None),
    "beyond-int64": _v(_HUGE),
}

#: JSON values: strict JSON only.
BAD_JSON: dict[str, Bad] = {
    "nan": _v(math.nan),
    "inf": _v(math.inf),
    "int-key": _new(lambda: {1: "one"}),
    "tuple": _v((1, 2)),
    "set": _new(lambda: {1, 2}),
    "cycle": _new(_cyclic),
    "bytes": _v(b"raw"),
    "object": _new(object),
    "datetime": _v(datetime(2024, 1, 1, tzinfo=UTC)),
    "int>u64": _v(2**64),
    "too-deep": _new(lambda: _deep(300)),
    "nul-string": _v({"k": "a\x00b"}),
    "surrogate": _v("\ud800"),
    "too-big": _new(lambda: "x" * (1 << 20)),
}

BAD_STATUSES: dict[str, Bad] = {
    "unknown": _v("sleeping"),
    "member-name": _v("Active"),
    "empty": _v(""),
    "int": _v(3),
    "bool": _v(True),
    "none": _v(None),
}

#: ``task_types`` / ``event_types``: a sequence of texts.
BAD_TYPES: dict[str, Bad] = {
    "bare-str": _v("work"),
    "int": _v(5),
    "dict": _new(lambda: {"work": 1}),
    "set": _new(lambda: {"work"}),
    "int-item": _new(lambda: [1]),
    "none-item": _new(lambda: [None]),
    "empty-item": _new(lambda: [""]),
    "nul-item": _new(lambda: ["a\x00b"]),
}

#: A list of ids (``ids_arg``).
BAD_ID_LISTS: dict[str, Bad] = {
    "bare-str": _v("t1"),
    "int": _v(5),
    "none": _v(None),
    "set": _new(lambda: {"t1"}),
    "int-item": _new(lambda: [1]),
    "none-item": _new(lambda: [None]),
    "empty-item": _new(lambda: [""]),
    "too-long-item": _new(lambda: ["x" * 257]),
}

#: How many tasks a batch takes (``batch_size_arg``): 1 to 1,000.
BAD_BATCH_SIZES: dict[str, Bad] = {
    **BAD_COUNTS,
    "zero": _v(0),
    "too-many": _v(1001),
}

#: ``complete_tasks``'s results: ``(task_id, result)`` pairs or a mapping; the field named is
#: the batch's when its shape is wrong, else the item's part at fault.
BAD_RESULTS: dict[str, Bad] = {
    "bare-str": _v("t1"),
    "int": _v(5),
    "none": _v(None),
    "set": _new(lambda: {("t1", None)}),
    "iterator": _new(lambda: iter([("t1", None)])),
    "bare-id-item": _new(lambda: ["t1"]),
    "triple-item": _new(lambda: [("t1", None, None)]),
    "empty-id": Bad(lambda: [("", None)], "task_id"),
    "int-id": Bad(lambda: [(1, None)], "task_id"),
    "int-key": Bad(lambda: {1: None}, "task_id"),
    "repeated-id": Bad(lambda: [("t1", 1), ("t1", 2)], "task_id"),
    "nan-result": Bad(lambda: [("t1", math.nan)], "result"),
    "set-result": Bad(lambda: {"t1": {1, 2}}, "result"),
    "bad-second-item": Bad(lambda: [("t1", None), ("t2", _cyclic())], "result"),
}

#: ``apply_retention``'s policy (``parse_retention``); the field named is the argument, or
#: its part at fault.
BAD_RETENTION: dict[str, Bad] = {
    "int": _v(5),
    "list": _new(lambda: ["events:1d"]),
    "int-list": _new(lambda: [1]),
    "no-rule": _v("events"),
    "unknown-table": _v("trucks:1d"),
    "bad-age": Bad(lambda: "events:soon", field="policy.events"),
    "not-a-keep": Bad(lambda: {"events": [1]}, field="policy.events"),
    "bad-every": Bad(lambda: "every:soon", field="policy.every"),
    "negative-count": Bad(lambda: {"events": -1}, field="policy.events"),
}

#: A schedule's timing (cron expressions left out: checking one needs the ``cron`` extra).
BAD_TIMINGS: dict[str, Bad] = {
    "zero": _v("0s"),
    "negative": _v(-5),
    "nan": _v(math.nan),
    "list": _new(lambda: ["1m"]),
    "none": _v(None),
}
BAD_TEMPLATES: dict[str, Bad] = {
    "str": _v("work"),
    "no-type": _new(lambda: {"payload": 1}),
    "unknown-key": _new(lambda: {"task_type": "w", "colour": "red"}),
    "nan-payload": Bad(lambda: {"task_type": "w", "payload": math.nan}, field="task.payload"),
}
BAD_ZONES: dict[str, Bad] = {"unknown": _v("Mars/Olympus"), "int": _v(5), "empty": _v("")}
BAD_MISSED: dict[str, Bad] = {"unknown": _v("catch_up"), "none": _v(None)}


def _schedule_model(**fields: Any) -> ScheduleModel:
    """A schedule as ``list_schedules`` reads it (``restore_schedule``'s argument)."""
    t = datetime(2024, 1, 1, tzinfo=UTC)
    template = {"task_type": "work", "payload": None, "priority": 2, "max_retries": 3}
    schedule = ScheduleModel("r1", "1m", template, "UTC", "skip", False, t, None, t, t)
    return replace(schedule, **fields)


BAD_SCHEDULES: dict[str, Bad] = {
    "none": Bad(lambda: None, "schedule"),
    "dict": Bad(lambda: {"name": "r1"}, "schedule"),
    "empty-name": Bad(lambda: _schedule_model(name=""), "schedule.name"),
    "zero-interval": Bad(lambda: _schedule_model(spec="0s"), "schedule.spec"),
    "unknown-zone": Bad(lambda: _schedule_model(timezone="Mars/Olympus"), "schedule.timezone"),
    "no-type": Bad(lambda: _schedule_model(task_template={}), "schedule.task_template"),
    "missed": Bad(lambda: _schedule_model(missed="catch_up"), "schedule.missed"),
    "paused-int": Bad(lambda: _schedule_model(paused=1), "schedule.paused"),
    "naive-next": Bad(lambda: _schedule_model(next_due=_naive()), "schedule.next_due"),
    "str-last": Bad(lambda: _schedule_model(last_due="today"), "schedule.last_due"),
}
#: ``restore_retention_record``'s rows removed per table.
BAD_REMOVED: dict[str, Bad] = {
    "none": _v(None),
    "list": _new(lambda: [("events", 1)]),
    "unknown-table": _new(lambda: {"trucks": 1}),
    "negative": Bad(lambda: {"events": -1}, "removed.events"),
    "float": Bad(lambda: {"events": 1.5}, "removed.events"),
    "beyond-int64": Bad(lambda: {"events": 2**63}, "removed.events"),
}

BAD_GROUP_BY: dict[str, Bad] = {
    "unknown": _new(lambda: ["unit"]),
    "bare-unknown": _v("unit"),
    "empty-tag": _new(lambda: ["tag:"]),
    "int-item": _new(lambda: [1]),
    "int": _v(5),
    "none": _v(None),
}

BAD_COUNT_FIELDS: dict[str, Bad] = {
    "none-given": _new(lambda: ()),
    "unknown": _new(lambda: ("colour",)),
    "json": _new(lambda: ("capabilities",)),
    "time": _new(lambda: ("created_at",)),
    "int-item": _new(lambda: (1,)),
    "hostile": _new(lambda: ("status; DROP TABLE agents",)),
}

BAD_BUILDERS: dict[str, Bad] = {
    "str": _v("SELECT 1"),
    "none": _v(None),
    "model-class": _v(AgentModel),
}


def _drop(table: Mapping[str, Bad], *kinds: str) -> dict[str, Bad]:
    return {k: v for k, v in table.items() if k not in kinds}


# --- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a method: a good value and the bad ones that apply to it."""

    good: Make
    bad: Mapping[str, Bad]


def ident(good: str, *, field: str | None = None) -> Param:
    """An id (``check_id``); ``field``: the name errors give it, if not the parameter's."""
    bad = BAD_IDS if field is None else {k: replace(b, field=field) for k, b in BAD_IDS.items()}
    return Param(lambda: good, bad)


def text(good: str | None, *, empty_ok: bool = False, optional: bool = False) -> Param:
    """A plain text (``check_text``)."""
    drop = (("empty",) if empty_ok else ()) + (("none",) if optional else ())
    return Param(lambda: good, _drop(BAD_TEXTS, *drop))


def count(good: int | None, *, optional: bool = False) -> Param:
    """A limit or a sequence number (``limit_arg``)."""
    return Param(lambda: good, _drop(BAD_COUNTS, "none") if optional else BAD_COUNTS)


def duration(
    good: Any = None, *, optional: bool = True, zero_ok: bool = False, stored: bool = True
) -> Param:
    """A duration (``duration_arg``); ``stored`` ones must fit in 64-bit microseconds."""
    drop = (
        (("none",) if optional else ())
        + (("zero",) if zero_ok else ())
        + (() if stored else ("beyond-int64",))
    )
    return Param(lambda: good, _drop(BAD_DURATIONS, *drop))


def cutoff(good: Any) -> Param:
    """``older_than``: an age, or an aware cut-off ``datetime`` (``cutoff_arg``)."""
    bad = _drop(BAD_DURATIONS, "zero", "datetime")
    bad["naive"] = Bad(_naive)
    return Param(lambda: good, bad)


def time(good: Any, *, optional: bool = False) -> Param:
    """A time argument (``time_arg``)."""
    return Param(lambda: good, _drop(BAD_TIMES, "none") if optional else BAD_TIMES)


def json_value() -> Param:
    """An optional JSON value (``complete_task``'s ``result``)."""
    return Param(lambda: None, BAD_JSON)


def status() -> Param:
    """An agent status."""
    return Param(lambda: "active", BAD_STATUSES)


def types() -> Param:
    """An optional type filter (``types_arg``)."""
    return Param(lambda: None, BAD_TYPES)


def id_list(*good: str) -> Param:
    """A list of ids (``ids_arg``)."""
    return Param(lambda: list(good), BAD_ID_LISTS)


def retention() -> Param:
    """An optional retention policy."""
    return Param(lambda: None, BAD_RETENTION)


def group_by() -> Param:
    """``aggregate_metrics``'s ``group_by``."""
    return Param(lambda: ("agent_id",), BAD_GROUP_BY)


def builder(model: type | None = None) -> Param:
    """A ``QueryBuilder`` (of ``model`` for a repository, which refuses another model's)."""
    bad = dict(BAD_BUILDERS)
    if model is not None:
        other = EventModel if model is not EventModel else AgentModel
        bad["other-model"] = _new(lambda: QueryBuilder(other))
    return Param(lambda: QueryBuilder(model or AgentModel), bad)


# --- models -------------------------------------------------------------------------------

Mutate = Callable[[Any], Any]


def _set(**fields: Any) -> Mutate:
    """A mutation that sets model fields (values that are callables are called first)."""

    def mutate(m: Any) -> Any:
        for name, value in fields.items():
            setattr(m, name, value() if callable(value) else value)
        return m

    return mutate


def _other(kind: str) -> Mutate:
    """Replace the model by a valid model of another kind."""
    if kind == "agent":
        return lambda m: TaskModel(id=m.id, task_type="work")
    return lambda m: agent(m.id)


#: Bad variants of each model: a mutation of a valid one, and the field codec names.
BAD_MODELS: dict[str, dict[str, tuple[Mutate, str]]] = {
    "agent": {
        "id-empty": (_set(id=""), "agent.id"),
        "id-int": (_set(id=7), "agent.id"),
        "id-too-long": (_set(id="x" * 257), "agent.id"),
        "name-none": (_set(name=None), "agent.name"),
        "status": (_set(status="sleeping"), "agent.status"),
        "capabilities-str": (_set(capabilities="analysis"), "agent.capabilities"),
        "metadata-nan": (_set(metadata=lambda: {"k": math.nan}), "agent.metadata"),
        "heartbeat-naive": (_set(heartbeat=_naive), "agent.heartbeat"),
        "id-empty+status": (_set(id="", status="sleeping"), "agent.id"),
        "status+heartbeat-naive": (_set(status="x", heartbeat=_naive), "agent.status"),
    },
    "task": {
        "id-empty": (_set(id=""), "task.id"),
        "id-int": (_set(id=7), "task.id"),
        "task_type-empty": (_set(task_type=""), "task.task_type"),
        "priority": (_set(priority=7), "task.priority"),
        "priority-bool": (_set(priority=True), "task.priority"),
        "status": (_set(status="done"), "task.status"),
        "payload-nan": (_set(payload=lambda: {"k": math.nan}), "task.payload"),
        "result-set": (_set(result=lambda: {1, 2}), "task.result"),
        "retry_count-negative": (_set(retry_count=-1), "task.retry_count"),
        "dependencies-str": (_set(dependencies="t1"), "task.dependencies"),
        "run_after-naive": (_set(run_after=_naive), "task.run_after"),
        "id-empty+payload-nan": (_set(id="", payload=math.nan), "task.id"),
        "payload-nan+retry_count-negative": (
            _set(payload=math.nan, retry_count=-1),
            "task.payload",
        ),
    },
    "event": {
        "id-empty": (_set(id=""), "event.id"),
        "id-int": (_set(id=7), "event.id"),
        "event_type-empty": (_set(event_type=""), "event.event_type"),
        "agent_id-int": (_set(agent_id=7), "event.agent_id"),
        "payload-nan": (_set(payload=lambda: {"k": math.nan}), "event.payload"),
        "metadata-list": (_set(metadata=lambda: []), "event.metadata"),
        "timestamp-naive": (_set(timestamp=_naive), "event.timestamp"),
        "id-empty+payload-nan": (_set(id="", payload=math.nan), "event.id"),
    },
    "message": {
        "id-empty": (_set(id=""), "message.id"),
        "id-int": (_set(id=7), "message.id"),
        "from_agent-empty": (_set(from_agent=""), "message.from_agent"),
        "content-set": (_set(content=lambda: {1, 2}), "message.content"),
        "priority": (_set(priority=9), "message.priority"),
        "read-str": (_set(read="yes"), "message.read"),
        "created_at-naive": (_set(created_at=_naive), "message.created_at"),
        "id-empty+priority": (_set(id="", priority=9), "message.id"),
        "id-empty+read-str": (_set(id="", read="yes"), "message.id"),
    },
    "metric": {
        "id-empty": (_set(id=""), "metric.id"),
        "id-int": (_set(id=7), "metric.id"),
        "metric_type-empty": (_set(metric_type=""), "metric.metric_type"),
        "value-nan": (_set(value=math.nan), "metric.value"),
        "value-str": (_set(value="1"), "metric.value"),
        "value-bool": (_set(value=True), "metric.value"),
        "unit-none": (_set(unit=None), "metric.unit"),
        "tags-int-value": (_set(tags=lambda: {"k": 1}), "metric.tags"),
        "timestamp-naive": (_set(timestamp=_naive), "metric.timestamp"),
        "id-empty+value-nan": (_set(id="", value=math.nan), "metric.id"),
    },
}


def _mutated(mutate: Mutate, base: Make) -> Make:
    return lambda: mutate(base())


def model(kind: str, base: Make, *, refused_as: str | None = None) -> Param:
    """A model argument of ``kind`` built from ``base``.

    ``refused_as``: the method refuses every value under this field (a repository's
    ``update`` of a kind that cannot be updated).
    """
    bad: dict[str, Bad] = {
        "none": Bad(lambda: None, kind),
        "dict": Bad(lambda: {"id": "n1"}, kind),
        "other-model": Bad(lambda: _other(kind)(base()), kind),
    }
    for name, (mutate, fld) in BAD_MODELS[kind].items():
        bad[name] = Bad(_mutated(mutate, base), fld)
    if refused_as is not None:
        bad = {name: replace(b, field=refused_as) for name, b in bad.items()}
    return Param(base, bad)


def batch(kind: str, base: Callable[[str], Any]) -> Param:
    """A batch argument: a sequence of ``kind`` models; ``base(id)`` makes a valid one."""

    def bad_item() -> Any:
        m = base("n2")
        m.id = ""
        return m

    bad: dict[str, Bad] = {
        "str": _v("abc"),
        "int": _v(5),
        "none": _v(None),
        "dict": _new(lambda: {"id": "n1"}),
        "single-model": Bad(lambda: base("n1")),
        "iterator": Bad(lambda: iter([base("n1")])),
        "non-model-item": Bad(lambda: [base("n1"), "n2"], kind),
        "other-model-item": Bad(lambda: [base("n1"), _other(kind)(base("n2"))], kind),
        "bad-item": Bad(lambda: [base("n1"), bad_item()], f"{kind}.id"),
    }
    return Param(lambda: [base("n1"), base("n2")], bad)


# --- the storage every case runs against --------------------------------------------------


def _task(id: str, created: float = 0.0) -> TaskModel:
    return TaskModel(
        id=id, task_type="work", payload={"id": id}, created_at=at(created), updated_at=at(created)
    )


def _new_agent() -> AgentModel:
    return agent("n1")


def _stored_agent() -> AgentModel:
    return agent("a1", name="renamed")


def _new_task() -> TaskModel:
    return _task("n1")


def _stored_task() -> TaskModel:
    t = _task("t2", created=1)
    t.payload = {"renamed": True}
    return t


def _new_event(id: str = "n1") -> EventModel:
    return event(id, agent_id="a1")


def _new_message() -> MessageModel:
    return message("n1", "a1", "a2")


def _new_metric(id: str = "n1") -> MetricModel:
    return metric(id, 2.0)


async def _populate(storage: Storage) -> None:
    """Agent a1 holding task t1; pending task t2; event e1, message m1 (a1 → a2), metric x1."""
    await storage.store_agent(agent("a1"))
    await storage.store_tasks([_task("t1"), _task("t2", created=1)])
    assert await storage.claim_task("t1", "a1")
    await storage.store_event(event("e1", agent_id="a1"))
    await storage.store_message(message("m1", "a1", "a2"))
    await storage.store_metric(metric("x1", 1.0))


# --- methods ------------------------------------------------------------------------------

#: How a case calls its method: ``run(bound_method, args)``.
Runner = Callable[[Callable[..., Any], list[Any]], Awaitable[Any]]


async def _await(fn: Callable[..., Any], args: list[Any]) -> Any:
    return await fn(*args)


async def _first_event(fn: Callable[..., Any], args: list[Any]) -> Any:
    """``subscribe``: the arguments are checked by the time the first event is asked for."""
    events = fn(*args)
    try:
        return await anext(events)
    finally:
        await events.aclose()


async def _begin(fn: Callable[..., Any], args: list[Any]) -> Any:
    """``begin_transaction``: roll back what a backend that accepted the argument began."""
    tx: Transaction = await fn(*args)
    await tx.rollback()
    return tx


async def _block(fn: Callable[..., Any], args: list[Any]) -> Any:
    """``transaction``: enter (and leave) the block."""
    async with fn(*args) as tx:
        return tx


async def _count_by(fn: Callable[..., Any], args: list[Any]) -> Any:
    """``count_by``: the fields are its variadic arguments."""
    query, fields = args
    return await fn(query, *fields)


async def _claim_batch(fn: Callable[..., Any], args: list[Any]) -> Any:
    """``claim_next_tasks``: ``task_types`` and ``lease`` are keyword-only."""
    agent_id, n, task_types, lease = args
    return await fn(agent_id, n, task_types=task_types, lease=lease)


async def _schedule(fn: Callable[..., Any], args: list[Any]) -> Any:
    """``store_schedule``: ``timezone`` and ``missed`` are keyword-only."""
    name, spec, template, timezone, missed = args
    return await fn(name, spec, template, timezone=timezone, missed=missed)


@dataclass(frozen=True, slots=True)
class Method:
    """A public method: its dotted name (``tasks.find_by_id`` is on ``storage.tasks``) and
    its parameters in signature order."""

    name: str
    params: tuple[tuple[str, Param], ...]
    run: Runner = field(default=_await, compare=False)

    def bound(self, storage: Storage) -> Callable[..., Any]:
        target: Any = storage
        for part in self.name.split("."):
            target = getattr(target, part)
        return target  # type: ignore[no-any-return]


def M(name: str, /, *, run: Runner = _await, **params: Param) -> Method:
    """One line of the table: ``M("get_task", task_id=ident("t1"))``."""
    return Method(name, tuple(params.items()), run)


def _repository(
    repo: str,
    kind: str,
    id_: str,
    new: Make,
    stored: Make | None,
    model_cls: type,
    *,
    id_field: str | None = None,
) -> list[Method]:
    """The methods of ``storage.<repo>`` that take arguments.

    ``stored``: a valid update of a stored record, or ``None`` where ``update`` is refused.
    ``id_field``: the field a bad ``id`` is named by, if not ``id`` (the parameter).
    """
    update = model(kind, stored) if stored is not None else model(kind, new, refused_as="entity")
    return [
        M(f"{repo}.find_by_id", id=ident(id_, field=id_field)),
        M(f"{repo}.save", entity=model(kind, new)),
        M(f"{repo}.update", entity=update),
        M(f"{repo}.delete", id=ident(id_, field=id_field)),
        M(f"{repo}.query", builder=builder(model_cls)),
    ]


METHODS: list[Method] = [
    # agents
    M("store_agent", agent=model("agent", _new_agent)),
    M("get_agent", agent_id=ident("a1")),
    M("update_agent", agent=model("agent", _stored_agent)),
    M("delete_agent", agent_id=ident("a1")),
    M("list_agents_by_status", status=status()),
    M("heartbeat", agent_id=ident("a1"), at=time(None, optional=True)),
    M("find_stale_agents", older_than=cutoff(60)),
    M("reap_stale_agents", older_than=cutoff(60)),
    # tasks
    M("store_task", task=model("task", _new_task)),
    M("store_tasks", tasks=batch("task", _task)),
    M("get_task", task_id=ident("t1")),
    M("update_task", task=model("task", _stored_task)),
    M("delete_task", task_id=ident("t2")),
    M("get_ready_tasks", limit=count(None, optional=True)),
    M("get_tasks_by_agent", agent_id=ident("a1")),
    M("claim_task", task_id=ident("t2"), agent_id=ident("a1"), lease=duration()),
    M("claim_next_task", agent_id=ident("a1"), task_types=types(), lease=duration()),
    M(
        "claim_next_tasks",
        run=_claim_batch,
        agent_id=ident("a1"),
        n=Param(lambda: 2, BAD_BATCH_SIZES),
        task_types=types(),
        lease=duration(),
    ),
    M("set_concurrency_limit", key=ident("k"), limit=count(2, optional=True)),
    M("restore_schedule", schedule=Param(_schedule_model, BAD_SCHEDULES)),
    M(
        "restore_retention_record",
        last_run=time(None, optional=True),
        removed=Param(lambda: {"events": 1}, BAD_REMOVED),
    ),
    M(
        "set_rate_limit",
        key=ident("k"),
        limit=count(2, optional=True),
        per=duration(10, optional=False),
    ),
    M("start_task", task_id=ident("t1"), agent_id=ident("a1")),
    M("complete_task", task_id=ident("t1"), agent_id=ident("a1"), result=json_value()),
    M("complete_tasks", results=Param(lambda: [("t1", None)], BAD_RESULTS), agent_id=ident("a1")),
    M("fail_task", task_id=ident("t1"), agent_id=ident("a1"), error=text("boom", empty_ok=True)),
    M("cancel_task", task_id=ident("t2"), reason=text(None, empty_ok=True, optional=True)),
    M("heartbeat_task", task_id=ident("t1"), agent_id=ident("a1"), lease=duration()),
    M("wait_for_tasks", timeout=duration(0, zero_ok=True, stored=False), task_types=types()),
    M("release_task", task_id=ident("t1"), agent_id=ident("a1")),
    M("wait_for_task", task_id=ident("t1"), timeout=duration(0, zero_ok=True, stored=False)),
    M("get_dependency_results", task_id=ident("t1")),
    M("get_failed_tasks", task_type=text(None, optional=True), limit=count(100)),
    M("retry_task", task_id=ident("t1")),
    M("retry_tasks", task_ids=id_list("t1")),
    M("retry_failed_tasks", task_type=text(None, optional=True)),
    # events
    M("store_event", event=model("event", _new_event)),
    M("store_events", events=batch("event", _new_event)),
    M("get_event", event_id=ident("e1")),
    M("get_events_by_agent", agent_id=ident("a1"), limit=count(100)),
    M("get_events_by_type", event_type=text("test.event"), limit=count(100)),
    M("get_events_since", since=time(0)),
    M("read_events", after_sequence=count(0), limit=count(1000)),
    M("subscribe", run=_first_event, after_sequence=count(0), event_types=types()),
    # messages
    M("store_message", message=model("message", _new_message)),
    M("get_message", message_id=ident("m1")),
    M("delete_message", message_id=ident("m1")),
    M("get_messages_between", agent_a=ident("a1"), agent_b=ident("a2"), limit=count(100)),
    M("get_unread_messages", agent_id=ident("a2")),
    M("mark_message_read", message_id=ident("m1")),
    M("wait_for_messages", agent_id=ident("a2"), timeout=duration(0, zero_ok=True, stored=False)),
    # metrics
    M("store_metric", metric=model("metric", _new_metric)),
    M("store_metrics", metrics=batch("metric", _new_metric)),
    M("get_metrics_by_agent", agent_id=ident("a1"), metric_type=text(None, optional=True)),
    M("get_aggregated_metrics", metric_type=text("latency"), start=time(0), end=time(at(60))),
    M(
        "aggregate_metrics",
        metric_type=text("latency"),
        start=time(0),
        end=time(at(60)),
        group_by=group_by(),
        bucket=duration(),
    ),
    # transactions, queries, maintenance
    M("begin_transaction", run=_begin, timeout=duration(stored=False)),
    M("transaction", run=_block, timeout=duration(stored=False)),
    M("query", builder=builder()),
    M("count", builder=builder()),
    M(
        "count_by",
        run=_count_by,
        builder=builder(),
        group_by=Param(lambda: ("status",), BAD_COUNT_FIELDS),
    ),
    M(
        "prune",
        events_before=time(None, optional=True),
        metrics_before=time(None, optional=True),
        read_messages_before=time(None, optional=True),
    ),
    M("apply_retention", policy=retention()),
    # schedules
    M(
        "store_schedule",
        run=_schedule,
        name=ident("s1", field="name"),
        cron_or_interval=Param(lambda: "1m", BAD_TIMINGS),
        task_template=Param(lambda: {"task_type": "work"}, BAD_TEMPLATES),
        timezone=Param(lambda: "UTC", BAD_ZONES),
        missed=Param(lambda: "skip", BAD_MISSED),
    ),
    M("get_schedule", name=ident("s1")),
    M("delete_schedule", name=ident("s1")),
    M("pause_schedule", name=ident("s1")),
    M("resume_schedule", name=ident("s1")),
    # repositories
    *_repository("agents", "agent", "a1", _new_agent, _stored_agent, AgentModel),
    *_repository("tasks", "task", "t2", _new_task, _stored_task, TaskModel),
    *_repository("events", "event", "e1", _new_event, None, EventModel),
    *_repository("messages", "message", "m1", _new_message, None, MessageModel),
    *_repository("metrics", "metric", "x1", _new_metric, None, MetricModel),
]

_BY_NAME = {m.name: m for m in METHODS}

#: Calls with several bad arguments: method, then parameter → kind of bad value. The
#: expected field is the first bad parameter in signature order.
SEVERAL_BAD: list[tuple[str, dict[str, str]]] = [
    ("heartbeat", {"agent_id": "empty", "at": "naive"}),
    ("claim_task", {"task_id": "empty", "agent_id": "empty", "lease": "negative"}),
    ("claim_task", {"agent_id": "nul", "lease": "str"}),
    ("claim_next_task", {"agent_id": "empty", "task_types": "bare-str", "lease": "nan"}),
    ("claim_next_task", {"task_types": "int-item", "lease": "nan"}),
    ("claim_next_tasks", {"agent_id": "empty", "n": "zero", "lease": "nan"}),
    ("claim_next_tasks", {"n": "str", "task_types": "bare-str", "lease": "negative"}),
    ("claim_next_tasks", {"task_types": "int-item", "lease": "nan"}),
    ("start_task", {"task_id": "int", "agent_id": "none"}),
    ("complete_task", {"task_id": "empty", "result": "nan"}),
    ("complete_task", {"agent_id": "empty", "result": "set"}),
    ("complete_task", {"task_id": "int", "agent_id": "none", "result": "cycle"}),
    ("complete_tasks", {"results": "nan-result", "agent_id": "empty"}),
    ("complete_tasks", {"results": "repeated-id", "agent_id": "int"}),
    ("fail_task", {"task_id": "empty", "agent_id": "empty", "error": "none"}),
    ("fail_task", {"agent_id": "too-long", "error": "int"}),
    ("cancel_task", {"task_id": "empty", "reason": "int"}),
    ("heartbeat_task", {"task_id": "nul", "lease": "nan"}),
    ("heartbeat_task", {"agent_id": "empty", "lease": "inf"}),
    ("wait_for_tasks", {"timeout": "nan", "task_types": "bare-str"}),
    ("release_task", {"task_id": "empty", "agent_id": "int"}),
    ("release_task", {"agent_id": "nul"}),
    ("wait_for_task", {"task_id": "surrogate", "timeout": "nan"}),
    ("wait_for_task", {"task_id": "none", "timeout": "negative"}),
    ("get_events_by_agent", {"agent_id": "empty", "limit": "negative"}),
    ("get_events_by_type", {"event_type": "empty", "limit": "str"}),
    ("read_events", {"after_sequence": "negative", "limit": "negative"}),
    ("subscribe", {"after_sequence": "negative", "event_types": "bare-str"}),
    ("get_messages_between", {"agent_a": "empty", "agent_b": "empty", "limit": "negative"}),
    ("get_messages_between", {"agent_b": "int", "limit": "bool"}),
    ("wait_for_messages", {"agent_id": "empty", "timeout": "nan"}),
    ("get_metrics_by_agent", {"agent_id": "empty", "metric_type": "int"}),
    ("get_aggregated_metrics", {"metric_type": "empty", "start": "nan", "end": "nan"}),
    ("get_aggregated_metrics", {"start": "str", "end": "naive"}),
    ("aggregate_metrics", {"end": "nan", "group_by": "unknown", "bucket": "negative"}),
    ("aggregate_metrics", {"group_by": "unknown", "bucket": "negative"}),
    ("prune", {"events_before": "str", "metrics_before": "nan", "read_messages_before": "bool"}),
    ("prune", {"metrics_before": "naive", "read_messages_before": "str"}),
]


@dataclass(frozen=True, slots=True)
class Case:
    """One call: the method, the bad values by parameter, and the field the error names."""

    method: Method
    bad: tuple[tuple[str, Bad], ...]
    field: str
    id: str

    def args(self) -> list[Any]:
        bad = dict(self.bad)
        return [bad[n].make() if n in bad else p.good() for n, p in self.method.params]


def _case(method: Method, kinds: Mapping[str, str]) -> Case:
    params = dict(method.params)
    bad = tuple((name, params[name].bad[kind]) for name, kind in kinds.items())
    # Arguments are checked left to right: the first bad one in signature order is named.
    first = next(name for name, _ in method.params if name in kinds)
    expected = params[first].bad[kinds[first]].field or first
    label = ",".join(f"{name}={kind}" for name, kind in kinds.items())
    return Case(method, bad, expected, f"{method.name}({label})")


def _cases() -> list[Case]:
    out = [
        _case(m, {name: kind}) for m in METHODS for name, param in m.params for kind in param.bad
    ]
    out += [_case(_BY_NAME[name], kinds) for name, kinds in SEVERAL_BAD]
    return out


CASES: list[Case] = _cases()


# --- running a case -----------------------------------------------------------------------


def _describe(outcome: BaseException | Any) -> str:
    if isinstance(outcome, ValidationError):
        return f"{type(outcome).__name__}(field={outcome.field!r})"
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {str(outcome)[:80]}"
    return f"returned {repr(outcome)[:60]}"


async def _settle(call: Callable[[], Awaitable[Any]]) -> BaseException | Any:
    """What the call did: the exception it raised, or what it returned."""
    try:
        return await call()
    except Exception as exc:
        return exc


async def _behind_the_gate(storage: Storage, call: Callable[[], Awaitable[Any]]) -> str:
    """Make ``call`` while another task's transaction holds the storage; say what happened."""
    began, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        tx = await storage.begin_transaction()
        began.set()
        try:
            await release.wait()
        finally:
            await tx.rollback()

    # A fresh context: a task spawned normally would join the transaction it begins.
    holder = asyncio.create_task(hold(), context=contextvars.Context())
    await within(began.wait())
    attempt = asyncio.ensure_future(_settle(call))
    waited = False
    try:
        outcome = await asyncio.wait_for(asyncio.shield(attempt), GATE_WAIT)
    except TimeoutError:
        waited = True
    finally:
        release.set()
        await within(holder)
    if not waited:
        return _describe(outcome)
    try:
        outcome = await asyncio.wait_for(attempt, AFTER_GATE)
    except TimeoutError:
        return "waited at the gate, then kept waiting once it opened"
    return f"waited at the gate, then {_describe(outcome)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_argument_is_refused_at_once_naming_it(storage: Storage, case: Case) -> None:
    await _populate(storage)
    before = await snapshot(storage)
    fn = case.method.bound(storage)
    args = case.args()
    outcome = await _behind_the_gate(storage, lambda: case.method.run(fn, args))
    try:
        after = await snapshot(storage)
    except Exception as exc:  # the call stored something that cannot be read back
        written = f"wrote something unreadable ({type(exc).__name__})"
    else:
        changed = [table for table in before if before[table] != after[table]]
        written = f"wrote {', '.join(changed)}" if changed else "nothing written"
    assert f"{outcome}; {written}" == f"ValidationError(field={case.field!r}); nothing written"


async def test_every_public_method_with_parameters_has_cases() -> None:
    """A method added to ``Storage`` or ``Repository`` needs a line in :data:`METHODS`."""
    import inspect

    from ..repository import Repository

    covered = {m.name for m in METHODS}
    missing = []
    repositories = ("agents.", "tasks.", "events.", "messages.", "metrics.")
    for prefixes, cls in ((("",), Storage), (repositories, Repository)):
        for name, fn in inspect.getmembers(cls, callable):
            if name.startswith("_"):
                continue
            params = [p for p in inspect.signature(fn).parameters if p != "self"]
            missing += [p + name for p in prefixes if params and p + name not in covered]
    assert missing == []


__all__ = [name for name in list(globals()) if name.startswith("test_")]
