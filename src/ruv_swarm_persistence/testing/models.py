"""Conformance: models round-trip unchanged; invalid input is refused and stores nothing.

The round trips are properties (hypothesis): any valid field values come back identical.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..codec import Limits
from ..errors import ValidationError
from ..models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MessagePriority,
    MetricModel,
    TaskModel,
    TaskPriority,
    TaskStatus,
)
from ..storage import Storage
from . import FakeClock
from ._support import EMPTY, agent, event, message, metric, snapshot

StorageFactory = Callable[..., Awaitable[Storage]]

# --- strategies ---------------------------------------------------------------------------

_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
#: Caller-chosen ids: any non-empty text without NUL (length bounded for speed).
ids = st.text(_CHARS, min_size=1, max_size=40)
#: Non-empty text fields (names, types).
texts = st.text(_CHARS, min_size=1, max_size=60)
#: Text that may be empty (unit, error, tag values).
maybe_empty = st.text(_CHARS, max_size=30)
#: Aware datetimes with microseconds, in UTC and in other fixed offsets.
times = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_CHARS, max_size=20)
)
#: Strict JSON values.
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_CHARS, max_size=8), inner),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(_CHARS, max_size=8), json_values, max_size=5)


@st.composite
def agents(draw: st.DrawFn) -> AgentModel:
    """Any valid agent."""
    return AgentModel(
        id=draw(ids),
        name=draw(texts),
        agent_type=draw(texts),
        status=draw(st.sampled_from(AgentStatus)),
        capabilities=draw(st.lists(texts, max_size=4)),
        metadata=draw(json_objects),
        heartbeat=draw(times),
        created_at=draw(times),
        updated_at=draw(times),
    )


@st.composite
def tasks(draw: st.DrawFn) -> TaskModel:
    """Any valid task without dependencies (in any status)."""
    status = draw(st.sampled_from(TaskStatus))
    held = status in (TaskStatus.Assigned, TaskStatus.Running)
    return TaskModel(
        id=draw(ids),
        task_type=draw(texts),
        priority=draw(st.sampled_from(TaskPriority)),
        status=status,
        assigned_to=draw(ids if held else st.none() | ids),
        payload=draw(json_values),
        result=draw(json_values),
        error=draw(st.none() | maybe_empty),
        retry_count=draw(st.integers(0, 10)),
        max_retries=draw(st.integers(0, 10)),
        created_at=draw(times),
        updated_at=draw(times),
        started_at=draw(st.none() | times),
        completed_at=draw(st.none() | times),
        lease_expires_at=draw(st.none() | times),
        run_after=draw(st.none() | times),
    )


@st.composite
def events(draw: st.DrawFn) -> EventModel:
    """Any valid event (without a sequence: the storage assigns it)."""
    return EventModel(
        id=draw(ids),
        event_type=draw(texts),
        agent_id=draw(st.none() | ids),
        task_id=draw(st.none() | ids),
        payload=draw(json_values),
        metadata=draw(json_objects),
        timestamp=draw(times),
    )


@st.composite
def messages(draw: st.DrawFn) -> MessageModel:
    """Any valid message, read or not."""
    read = draw(st.booleans())
    return MessageModel(
        id=draw(ids),
        from_agent=draw(ids),
        to_agent=draw(ids),
        message_type=draw(texts),
        content=draw(json_values),
        priority=draw(st.sampled_from(MessagePriority)),
        read=read,
        created_at=draw(times),
        read_at=draw(times) if read else None,
    )


@st.composite
def metrics(draw: st.DrawFn) -> MetricModel:
    """Any valid measurement."""
    return MetricModel(
        id=draw(ids),
        metric_type=draw(texts),
        value=draw(st.floats(allow_nan=False, allow_infinity=False)),
        unit=draw(maybe_empty),
        agent_id=draw(st.none() | ids),
        tags=draw(st.dictionaries(texts, maybe_empty, max_size=4)),
        timestamp=draw(times),
    )


_property = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)


def _same_instants(got: Any, want: Any) -> None:
    """Dataclass equality compares datetimes as instants; also require UTC on the way out."""
    assert got == want
    for name in got.__slots__:
        value = getattr(got, name)
        if isinstance(value, datetime):
            assert value.utcoffset() == timedelta(0), name


# --- round trips --------------------------------------------------------------------------


@_property
@given(a=agents())
async def test_agent_round_trip(storage_factory: StorageFactory, a: AgentModel) -> None:
    s = await storage_factory(clock=FakeClock())
    await s.store_agent(a)
    got = await s.get_agent(a.id)
    _same_instants(got, a)
    assert await s.agents.find_by_id(a.id) == a


@_property
@given(t=tasks())
async def test_task_round_trip(storage_factory: StorageFactory, t: TaskModel) -> None:
    s = await storage_factory(clock=FakeClock())
    await s.store_task(t)
    _same_instants(await s.get_task(t.id), t)


@_property
@given(e=events())
async def test_event_round_trip(storage_factory: StorageFactory, e: EventModel) -> None:
    s = await storage_factory(clock=FakeClock())
    seq = await s.store_event(e)
    assert e.sequence == seq
    (got,) = await s.read_events(0)
    _same_instants(got, e)
    assert await s.events.find_by_id(e.id) == e


@_property
@given(m=messages())
async def test_message_round_trip(storage_factory: StorageFactory, m: MessageModel) -> None:
    s = await storage_factory(clock=FakeClock())
    await s.store_message(m)
    _same_instants(await s.get_message(m.id), m)


@_property
@given(m=metrics())
async def test_metric_round_trip(storage_factory: StorageFactory, m: MetricModel) -> None:
    s = await storage_factory(clock=FakeClock())
    await s.store_metric(m)
    (got,) = await s.metrics.find_all()
    _same_instants(got, m)


# --- invalid JSON -------------------------------------------------------------------------


def _cyclic_list() -> Any:
    v: list[Any] = [1]
    v.append(v)
    return v


def _cyclic_dict() -> Any:
    v: dict[str, Any] = {}
    v["self"] = v
    return v


def _deep(levels: int) -> Any:
    v: Any = 1
    for _ in range(levels):
        v = [v]
    return v


BAD_JSON: dict[str, Callable[[], Any]] = {
    "nan": lambda: float("nan"),
    "inf": lambda: float("inf"),
    "-inf": lambda: -float("inf"),
    "int-key": lambda: {1: "one"},
    "none-key": lambda: {None: "none"},
    "tuple": lambda: (1, 2),
    "set": lambda: {1, 2},
    "list-cycle": _cyclic_list,
    "dict-cycle": _cyclic_dict,
    "datetime": lambda: datetime(2024, 1, 1, tzinfo=UTC),
    "bytes": lambda: b"raw",
    "object": object,
    "int>u64": lambda: 2**64,
    "int<i64": lambda: -(2**63) - 1,
    "too-deep": lambda: _deep(300),
    "nul-string": lambda: "a\x00b",
    "nul-key": lambda: {"k\x00": 1},
    "lone-surrogate": lambda: "\ud800",
}


async def _store_with_json(
    storage: Storage, field: str, value: Any
) -> Callable[[], Awaitable[Any]]:
    """Store a model whose JSON ``field`` holds ``value``; returns a re-read of that model."""
    if field == "agent.metadata":
        await storage.store_agent(agent("x", metadata={"k": value}))
        return lambda: storage.get_agent("x")
    if field == "task.payload":
        await storage.store_task(TaskModel(id="x", task_type="work", payload=value))
        return lambda: storage.get_task("x")
    if field == "task.result":
        await storage.store_task(TaskModel(id="x", task_type="work", result=[value]))
        return lambda: storage.get_task("x")
    if field == "event.payload":
        await storage.store_event(event("x", payload=value))
        return lambda: storage.events.find_by_id("x")
    if field == "event.metadata":
        e = event("x")
        e.metadata = {"nested": {"k": value}}
        await storage.store_event(e)
        return lambda: storage.events.find_by_id("x")
    assert field == "message.content"
    await storage.store_message(message("x", "a", "b", content={"k": [value]}))
    return lambda: storage.get_message("x")


JSON_FIELDS = [
    "agent.metadata",
    "task.payload",
    "task.result",
    "event.payload",
    "event.metadata",
    "message.content",
]


@pytest.mark.parametrize("field", JSON_FIELDS)
@pytest.mark.parametrize("kind", list(BAD_JSON))
async def test_invalid_json_is_refused_naming_the_field(
    storage: Storage, field: str, kind: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(field)) as info:
        await _store_with_json(storage, field, BAD_JSON[kind]())
    assert info.value.field == field
    assert await snapshot(storage) == EMPTY


@pytest.mark.parametrize("field", JSON_FIELDS)
async def test_valid_json_edge_values_are_accepted(storage: Storage, field: str) -> None:
    value = {
        "deep": _deep(250),
        "u64": 2**64 - 1,
        "i64": -(2**63),
        "float": 1.5e-300,
        "text": "ünïcødé ✓ \U0001f600",
        "empty": [{}, [], ""],
    }
    reread = await _store_with_json(storage, field, value)
    assert await reread() is not None


async def test_json_size_limit_is_a_setting(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    s = await storage_factory(clock=clock, limits=Limits(max_json_bytes=64))
    # {"s":"…"} takes 8 bytes around the string; "é" is two bytes in UTF-8.
    await s.store_event(event("fits", payload={"s": "x" * 56}))
    await s.store_event(event("fits-2", payload={"s": "é" * 28}))
    with pytest.raises(ValidationError, match=r"event\.payload.*64") as info:
        await s.store_event(event("big", payload={"s": "x" * 57}))
    assert info.value.field == "event.payload"
    with pytest.raises(ValidationError, match=r"message\.content"):
        await s.store_message(message("big", "a", "b", content={"s": "é" * 29}))
    assert [e.id for e in await s.read_events(0)] == ["fits", "fits-2"]
    assert await s.get_message("big") is None


async def test_default_json_limit_is_one_mebibyte(storage: Storage) -> None:
    await storage.store_event(event("fits", payload="x" * ((1 << 20) - 2)))
    with pytest.raises(ValidationError, match=r"event\.payload"):
        await storage.store_event(event("big", payload="x" * ((1 << 20) - 1)))
    assert [e.id for e in await storage.read_events(0)] == ["fits"]


# --- ids and other fields -----------------------------------------------------------------

BAD_IDS: dict[str, Any] = {
    "empty": "",
    "257-chars": "x" * 257,
    "nul": "a\x00b",
    "int": 42,
    "none": None,
    "bytes": b"id",
    "surrogate": "\udc80",
}

ID_FIELDS: dict[str, Callable[[Any], Any]] = {
    "agent.id": lambda v: agent(v),
    "task.id": lambda v: TaskModel(id=v, task_type="work"),
    "task.assigned_to": lambda v: TaskModel(
        id="t", task_type="work", status=TaskStatus.Assigned, assigned_to=v
    ),
    "task.dependencies": lambda v: TaskModel(id="t", task_type="work", dependencies=[v]),
    "event.id": lambda v: event(v),
    "event.agent_id": lambda v: event("e", agent_id=v if v is not None else ""),
    "message.id": lambda v: message(v, "a", "b"),
    "message.from_agent": lambda v: message("m", v, "b"),
    "message.to_agent": lambda v: message("m", "a", v),
    "metric.id": lambda v: metric(v, 1.0),
    "metric.agent_id": lambda v: metric("m", 1.0, agent_id=v if v is not None else ""),
}


async def _store_any(storage: Storage, model: Any) -> None:
    if isinstance(model, AgentModel):
        await storage.store_agent(model)
    elif isinstance(model, TaskModel):
        await storage.store_task(model)
    elif isinstance(model, EventModel):
        await storage.store_event(model)
    elif isinstance(model, MessageModel):
        await storage.store_message(model)
    else:
        await storage.store_metric(model)


@pytest.mark.parametrize("field", list(ID_FIELDS))
@pytest.mark.parametrize("bad", list(BAD_IDS))
async def test_bad_ids_are_refused(storage: Storage, field: str, bad: str) -> None:
    model = ID_FIELDS[field](BAD_IDS[bad])
    with pytest.raises(ValidationError, match=re.escape(field)):
        await _store_any(storage, model)
    assert await snapshot(storage) == EMPTY


@pytest.mark.parametrize("field", list(ID_FIELDS))
async def test_ids_of_256_characters_are_accepted(storage: Storage, field: str) -> None:
    long_id = "é" * 256
    if field == "task.dependencies":
        await storage.store_task(TaskModel(id=long_id, task_type="work"))
    model = ID_FIELDS[field](long_id)
    await _store_any(storage, model)


async def test_id_length_limit_is_a_setting(
    storage_factory: StorageFactory, clock: FakeClock
) -> None:
    s = await storage_factory(clock=clock, limits=Limits(max_id_length=8))
    await s.store_agent(agent("12345678"))
    with pytest.raises(ValidationError, match=r"agent\.id"):
        await s.store_agent(agent("123456789"))
    assert [a.id for a in await s.list_agents()] == ["12345678"]


def _naive(model: Any, name: str) -> Any:
    setattr(model, name, datetime(2024, 1, 1))
    return model


BAD_FIELDS: dict[str, Callable[[], Any]] = {
    "agent.name": lambda: agent("a", name=""),
    "agent.agent_type": lambda: AgentModel(id="a", name="n", agent_type="t\x00"),
    "agent.status": lambda: agent("a", status="sleeping"),  # type: ignore[arg-type]
    "agent.capabilities": lambda: agent("a", capabilities="analysis"),
    "agent.heartbeat": lambda: _naive(agent("a"), "heartbeat"),
    "agent.created_at": lambda: _naive(agent("a"), "created_at"),
    "task.task_type": lambda: TaskModel(id="t", task_type=""),
    "task.priority": lambda: TaskModel(id="t", task_type="w", priority=7),  # type: ignore[arg-type]
    "task.status": lambda: TaskModel(id="t", task_type="w", status="done"),  # type: ignore[arg-type]
    "task.retry_count": lambda: TaskModel(id="t", task_type="w", retry_count=-1),
    "task.max_retries": lambda: TaskModel(id="t", task_type="w", max_retries=True),
    "task.run_after": lambda: _naive(TaskModel(id="t", task_type="w"), "run_after"),
    "event.event_type": lambda: EventModel(id="e", event_type=""),
    "event.timestamp": lambda: _naive(event("e"), "timestamp"),
    "event.metadata": lambda: EventModel(id="e", event_type="t", metadata=[]),  # type: ignore[arg-type]
    "message.message_type": lambda: MessageModel(
        id="m", from_agent="a", to_agent="b", message_type=""
    ),
    "message.priority": lambda: message("m", "a", "b", priority=9),  # type: ignore[arg-type]
    "message.read": lambda: MessageModel(
        id="m",
        from_agent="a",
        to_agent="b",
        message_type="t",
        read="yes",  # type: ignore[arg-type]
    ),
    "message.created_at": lambda: _naive(message("m", "a", "b"), "created_at"),
    "metric.metric_type": lambda: metric("m", 1.0, metric_type=""),
    "metric.unit": lambda: metric("m", 1.0, unit=None),  # type: ignore[arg-type]
    "metric.timestamp": lambda: _naive(metric("m", 1.0), "timestamp"),
}


@pytest.mark.parametrize("field", list(BAD_FIELDS))
async def test_bad_fields_are_refused_naming_the_field(storage: Storage, field: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(field)):
        await _store_any(storage, BAD_FIELDS[field]())
    assert await snapshot(storage) == EMPTY


@pytest.mark.parametrize("model", [None, {"id": "x"}, "agent"], ids=repr)
async def test_store_needs_a_model(storage: Storage, model: Any) -> None:
    for store in (storage.store_agent, storage.store_task, storage.store_event):
        with pytest.raises(ValidationError):
            await store(model)
    assert await snapshot(storage) == EMPTY


__all__ = [name for name in list(globals()) if name.startswith("test_")]
