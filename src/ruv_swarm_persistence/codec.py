"""The storage boundary: validate a model once and turn it into a record, and back.

A *record* is a ``dict`` keyed by column name holding only storable values: strings, ints
(times as integer microseconds since the epoch), floats, ``None`` and JSON fields already
encoded as text. Every backend writes records made here and reads models decoded here, so
validation and precision are the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from . import _json
from ._time import from_us, to_us
from .errors import ConflictError, SerializationError, ValidationError
from .models import (
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

__all__ = [
    "COLUMNS",
    "Limits",
    "Record",
    "decode",
    "encode",
    "time_arg",
]

Record = dict[str, Any]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation limits, settable per storage."""

    max_id_length: int = 256
    max_string_length: int = 65_536
    max_json_bytes: int = 1 << 20


DEFAULT_LIMITS: Final = Limits()

COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "agents": (
        "id", "name", "agent_type", "status", "capabilities", "metadata",
        "heartbeat", "created_at", "updated_at",
    ),
    "tasks": (
        "id", "task_type", "priority", "status", "assigned_to", "payload", "result", "error",
        "retry_count", "max_retries", "dependencies", "created_at", "updated_at",
        "started_at", "completed_at", "lease_expires_at", "run_after", "dedup_key",
        "concurrency_key",
    ),
    "events": (
        "id", "event_type", "agent_id", "task_id", "payload", "metadata", "timestamp", "sequence",
    ),
    "messages": (
        "id", "from_agent", "to_agent", "message_type", "content", "priority", "read",
        "created_at", "read_at",
    ),
    "metrics": ("id", "metric_type", "agent_id", "value", "unit", "tags", "timestamp"),
}  # fmt: skip

# --- field checks -----------------------------------------------------------------------


def check_id(value: Any, field: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """An id: a non-empty string of at most ``max_id_length`` characters without NUL."""
    if type(value) is not str:
        raise ValidationError(f"must be a string, got {type(value).__name__}", field=field)
    if not value:
        raise ValidationError("must not be empty", field=field)
    if len(value) > limits.max_id_length:
        raise ValidationError(
            f"is {len(value)} characters, more than the limit of {limits.max_id_length}",
            field=field,
        )
    if "\x00" in value:
        raise ValidationError("must not contain NUL", field=field)
    if not value.isascii():
        _check_encodable(value, field)
    return value


def _check_encodable(value: str, field: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValidationError("is not valid Unicode (lone surrogate)", field=field) from None


def check_text(
    value: Any, field: str, limits: Limits = DEFAULT_LIMITS, *, empty_ok: bool = False
) -> str:
    """A plain string field: no NUL, valid Unicode, at most ``max_string_length``."""
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {type(value).__name__}", field=field)
    if not value and not empty_ok:
        raise ValidationError("must not be empty", field=field)
    if len(value) > limits.max_string_length:
        raise ValidationError(
            f"is {len(value)} characters, more than the limit of {limits.max_string_length}",
            field=field,
        )
    if "\x00" in value:
        raise ValidationError("must not contain NUL", field=field)
    if not value.isascii():
        _check_encodable(value, field)
    return value if type(value) is str else str(value)  # a subclass is stored as plain text


def _opt_id(value: Any, field: str, limits: Limits) -> str | None:
    return None if value is None else check_id(value, field, limits)


#: The times a stored row can hold and read back: the years 1 to 9999 of ``datetime``.
MIN_US: Final = to_us(datetime.min.replace(tzinfo=UTC))
MAX_US: Final = to_us(datetime.max.replace(tzinfo=UTC))
#: The longest duration: one that keeps any time of the range within it and within 64 bits.
MAX_DURATION_US: Final = MAX_US - MIN_US
#: The longest wait: longer ones (up to 1e308 seconds) wait as long, which is for ever.
MAX_WAIT_US: Final = 2**100
#: Limits, offsets and sequence numbers are 64-bit integers in every database.
MAX_INT64: Final = 2**63 - 1


def _in_range(us: int, field: str) -> int:
    if not MIN_US <= us <= MAX_US:
        raise ValidationError("must be a time within the years 1 to 9999 (UTC)", field=field)
    return us


def check_time(value: Any, field: str) -> int:
    """An aware datetime as integer microseconds since the epoch."""
    if type(value) is datetime and value.tzinfo is UTC:  # the common case, checked cheaply
        return to_us(value)
    if not isinstance(value, datetime):
        raise ValidationError(f"must be a datetime, got {type(value).__name__}", field=field)
    try:
        offset = value.utcoffset()
    except Exception as exc:
        # A caller's tzinfo may raise anything, or return an offset datetime refuses (a
        # day or more): either way the value is unusable, which is a validation error.
        raise ValidationError(f"its time zone failed: {exc}", field=field) from None
    if value.tzinfo is None or offset is None:
        raise ValidationError("must be timezone-aware (naive datetimes are ambiguous)", field=field)
    return _in_range(to_us(value), field)


def _opt_time(value: Any, field: str) -> int | None:
    return None if value is None else check_time(value, field)


def time_arg(value: Any, field: str) -> int:
    """A query time argument: an aware datetime, or epoch seconds (int or float)."""
    if isinstance(value, datetime):
        return check_time(value, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"must be a datetime or epoch seconds, got {type(value).__name__}",
            field=field,
        )
    if isinstance(value, int):
        return _in_range(value * 1_000_000, field)
    if not math.isfinite(value):
        raise ValidationError("must be finite", field=field)
    return _in_range(_float_us(value), field)


def _float_us(seconds: float) -> int:
    """Finite seconds as integer microseconds (exact beyond the float range, too)."""
    if isinstance(seconds, int):
        return seconds * 1_000_000  # math on a float would overflow past 1e308
    scaled = seconds * 1_000_000
    return round(scaled) if math.isfinite(scaled) else int(seconds) * 1_000_000


def _json_field(value: Any, field: str, limits: Limits) -> str:
    text = _json.dumps(value, field, limits.max_json_bytes)
    if "\\u0000" in text:
        _reject_nul(value, field)
    return text


def _reject_nul(value: Any, field: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError("JSON strings must not contain NUL", field=field)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item, field)
    elif isinstance(value, dict):
        for k, item in value.items():
            _reject_nul(k, field)
            _reject_nul(item, field)


def _json_object(value: Any, field: str, limits: Limits) -> str:
    if type(value) is dict and not value:
        return "{}"
    if not isinstance(value, dict):
        raise ValidationError(
            f"must be a JSON object (dict), got {type(value).__name__}", field=field
        )
    return _json_field(value, field, limits)


def _str_list(value: Any, field: str, limits: Limits, *, ids: bool = False) -> str:
    if not isinstance(value, list):
        raise ValidationError(f"must be a list of strings, got {type(value).__name__}", field=field)
    for item in value:
        if ids:
            check_id(item, field, limits)
        else:
            check_text(item, field, limits)
    return _json_field(value, field, limits)


def _str_dict(value: Any, field: str, limits: Limits) -> str:
    if not isinstance(value, dict):
        raise ValidationError(f"must be a dict of strings, got {type(value).__name__}", field=field)
    for k, v in value.items():
        check_text(k, field, limits)
        check_text(v, field, limits, empty_ok=True)
    return _json_field(value, field, limits)


def _enum(enum: Any, value: Any, field: str) -> Any:
    try:
        if isinstance(value, bool):
            raise ValueError
        return enum(value)
    except Exception:  # the lookup hashes the value, which may raise anything
        allowed = ", ".join(repr(m.value) for m in enum)
        shown = repr(value) if isinstance(value, (str, int)) else type(value).__name__
        raise ValidationError(f"{shown} is not one of {allowed}", field=field) from None


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"must be an integer, got {type(value).__name__}", field=field)
    if not 0 <= value <= 1_000_000:
        raise ValidationError("must be between 0 and 1000000", field=field)
    return int(value)


def _check_type(model: Any, cls: type, field: str) -> None:
    if not isinstance(model, cls):
        raise ValidationError(f"expected {cls.__name__}, got {type(model).__name__}", field=field)


# --- encoders ---------------------------------------------------------------------------


def encode_agent(a: AgentModel, limits: Limits = DEFAULT_LIMITS) -> Record:
    """Validate an agent and return its record."""
    _check_type(a, AgentModel, "agent")
    return {
        "id": check_id(a.id, "agent.id", limits),
        "name": check_text(a.name, "agent.name", limits),
        "agent_type": check_text(a.agent_type, "agent.agent_type", limits),
        "status": _enum(AgentStatus, a.status, "agent.status").value,
        "capabilities": _str_list(a.capabilities, "agent.capabilities", limits),
        "metadata": _json_object(a.metadata, "agent.metadata", limits),
        "heartbeat": check_time(a.heartbeat, "agent.heartbeat"),
        "created_at": check_time(a.created_at, "agent.created_at"),
        "updated_at": check_time(a.updated_at, "agent.updated_at"),
    }


def encode_task(t: TaskModel, limits: Limits = DEFAULT_LIMITS) -> Record:
    """Validate a task and return its record (``dependencies`` as a JSON list of ids)."""
    _check_type(t, TaskModel, "task")
    task_id = check_id(t.id, "task.id", limits)
    deps = t.dependencies
    if (
        isinstance(deps, list)
        and all(type(d) is str for d in deps)  # other items are refused below, by field order
        and len(set(deps)) != len(deps)
    ):
        raise ValidationError("lists a dependency more than once", field="task.dependencies")
    return {
        "id": task_id,
        "task_type": check_text(t.task_type, "task.task_type", limits),
        "priority": int(_enum(TaskPriority, t.priority, "task.priority")),
        "status": _enum(TaskStatus, t.status, "task.status").value,
        "assigned_to": _opt_id(t.assigned_to, "task.assigned_to", limits),
        "payload": _json_field(t.payload, "task.payload", limits),
        "result": None if t.result is None else _json_field(t.result, "task.result", limits),
        "error": None
        if t.error is None
        else check_text(t.error, "task.error", limits, empty_ok=True),
        "retry_count": _count(t.retry_count, "task.retry_count"),
        "max_retries": _count(t.max_retries, "task.max_retries"),
        "dependencies": _str_list(deps, "task.dependencies", limits, ids=True),
        "created_at": check_time(t.created_at, "task.created_at"),
        "updated_at": check_time(t.updated_at, "task.updated_at"),
        "started_at": _opt_time(t.started_at, "task.started_at"),
        "completed_at": _opt_time(t.completed_at, "task.completed_at"),
        "lease_expires_at": _opt_time(t.lease_expires_at, "task.lease_expires_at"),
        "run_after": _opt_time(t.run_after, "task.run_after"),
        "dedup_key": _opt_id(t.dedup_key, "task.dedup_key", limits),
        "concurrency_key": _opt_id(t.concurrency_key, "task.concurrency_key", limits),
    }


#: An event's columns in ``COLUMNS["events"]`` order, without the sequence.
EventValues = tuple[str, str, str | None, str | None, str, str, int]


def event_values(e: EventModel, limits: Limits = DEFAULT_LIMITS) -> EventValues:
    """Validate an event and return its columns as a tuple, ``sequence`` left out.

    The form SQL backends bind directly: appending events is the hottest write path, and a
    tuple skips building and reading back a record. The common event (ASCII ids and type
    within their limits, no metadata, a UTC timestamp) is recognised in one expression rather
    than a call per field; any other takes :func:`_checked_event_values`, which words the
    errors. A property test holds the two to the same results.
    """
    if type(e) is EventModel:
        id_, event_type, agent_id, task_id = e.id, e.event_type, e.agent_id, e.task_id
        metadata, ts = e.metadata, e.timestamp
        n = limits.max_id_length
        if (
            type(id_) is str and 0 < len(id_) <= n and id_.isascii() and "\x00" not in id_
            and type(event_type) is str and 0 < len(event_type) <= limits.max_string_length
            and event_type.isascii() and "\x00" not in event_type
            and (agent_id is None or (
                type(agent_id) is str and 0 < len(agent_id) <= n
                and agent_id.isascii() and "\x00" not in agent_id
            ))
            and (task_id is None or (
                type(task_id) is str and 0 < len(task_id) <= n
                and task_id.isascii() and "\x00" not in task_id
            ))
            and type(metadata) is dict and not metadata
            and type(ts) is datetime and ts.tzinfo is UTC
        ):  # fmt: skip
            payload = _json_field(e.payload, "event.payload", limits)
            return (id_, event_type, agent_id, task_id, payload, "{}", to_us(ts))
    return _checked_event_values(e, limits)


def _checked_event_values(e: EventModel, limits: Limits) -> EventValues:
    """:func:`event_values` field by field, raising on the first field that is wrong."""
    _check_type(e, EventModel, "event")
    agent_id = e.agent_id
    task_id = e.task_id
    return (
        check_id(e.id, "event.id", limits),
        check_text(e.event_type, "event.event_type", limits),
        None if agent_id is None else check_id(agent_id, "event.agent_id", limits),
        None if task_id is None else check_id(task_id, "event.task_id", limits),
        _json_field(e.payload, "event.payload", limits),
        _json_object(e.metadata, "event.metadata", limits),
        check_time(e.timestamp, "event.timestamp"),
    )


def encode_event(e: EventModel, limits: Limits = DEFAULT_LIMITS) -> Record:
    """Validate an event and return its record (``sequence`` left for the backend)."""
    return event_record(event_values(e, limits))


def event_record(values: EventValues) -> Record:
    """The record of an event's validated values (``sequence`` left for the backend)."""
    id_, event_type, agent_id, task_id, payload, metadata, timestamp = values
    return {
        "id": id_,
        "event_type": event_type,
        "agent_id": agent_id,
        "task_id": task_id,
        "payload": payload,
        "metadata": metadata,
        "timestamp": timestamp,
        "sequence": None,
    }


def encode_message(m: MessageModel, limits: Limits = DEFAULT_LIMITS) -> Record:
    """Validate a message and return its record."""
    _check_type(m, MessageModel, "message")
    # Fields are checked in declaration order, so the first bad one is the one named.
    rec: Record = {
        "id": check_id(m.id, "message.id", limits),
        "from_agent": check_id(m.from_agent, "message.from_agent", limits),
        "to_agent": check_id(m.to_agent, "message.to_agent", limits),
        "message_type": check_text(m.message_type, "message.message_type", limits),
        "content": _json_field(m.content, "message.content", limits),
        "priority": int(_enum(MessagePriority, m.priority, "message.priority")),
    }
    if not isinstance(m.read, bool):
        raise ValidationError("must be a bool", field="message.read")
    created_at = check_time(m.created_at, "message.created_at")
    read_at = _opt_time(m.read_at, "message.read_at")
    if m.read and read_at is None:
        raise ValidationError("a read message needs read_at", field="message.read_at")
    rec["read"] = 1 if m.read else 0
    rec["created_at"] = created_at
    rec["read_at"] = read_at if m.read else None
    return rec


def encode_metric(m: MetricModel, limits: Limits = DEFAULT_LIMITS) -> Record:
    """Validate a metric and return its record."""
    _check_type(m, MetricModel, "metric")
    # Fields are checked in declaration order, so the first bad one is the one named.
    id_ = check_id(m.id, "metric.id", limits)
    metric_type = check_text(m.metric_type, "metric.metric_type", limits)
    agent_id = _opt_id(m.agent_id, "metric.agent_id", limits)
    value = m.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"must be a number, got {type(value).__name__}", field="metric.value")
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        raise ValidationError("is too large for a float", field="metric.value") from None
    if not math.isfinite(value):
        raise ValidationError(f"{value!r} is not a finite number", field="metric.value")
    value += 0.0  # -0.0 becomes 0.0: SQLite's REAL columns keep no negative zero
    return {
        "id": id_,
        "metric_type": metric_type,
        "agent_id": agent_id,
        "value": value,
        "unit": check_text(m.unit, "metric.unit", limits, empty_ok=True),
        "tags": _str_dict(m.tags, "metric.tags", limits),
        "timestamp": check_time(m.timestamp, "metric.timestamp"),
    }


# --- decoders ---------------------------------------------------------------------------


def _t(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def _undecodable(table: str, r: Record, exc: Exception) -> SerializationError:
    """A row that cannot be decoded: an error naming the table and the id, never skipped."""
    if isinstance(exc, SerializationError):
        return exc
    row_id = r.get("id") if isinstance(r, dict) else None
    return SerializationError(table, str(row_id), f"{type(exc).__name__}: {exc}")


def decode_agent(r: Record) -> AgentModel:
    """Build an agent from its record; one that cannot be decoded is a SerializationError."""
    try:
        return AgentModel(
            id=r["id"],
            name=r["name"],
            agent_type=r["agent_type"],
            status=AgentStatus(r["status"]),
            capabilities=_json.loads(r["capabilities"]),
            metadata=_json.loads(r["metadata"]),
            heartbeat=from_us(r["heartbeat"]),
            created_at=from_us(r["created_at"]),
            updated_at=from_us(r["updated_at"]),
        )
    except Exception as exc:
        raise _undecodable("agents", r, exc) from exc


def decode_task(r: Record) -> TaskModel:
    """Build a task from its record; one that cannot be decoded is a SerializationError."""
    try:
        res = r["result"]
        return TaskModel(
            id=r["id"],
            task_type=r["task_type"],
            priority=TaskPriority(r["priority"]),
            status=TaskStatus(r["status"]),
            assigned_to=r["assigned_to"],
            payload=_json.loads(r["payload"]),
            result=None if res is None else _json.loads(res),
            error=r["error"],
            retry_count=r["retry_count"],
            max_retries=r["max_retries"],
            dependencies=_json.loads(r["dependencies"]),
            created_at=from_us(r["created_at"]),
            updated_at=from_us(r["updated_at"]),
            started_at=_t(r["started_at"]),
            completed_at=_t(r["completed_at"]),
            lease_expires_at=_t(r["lease_expires_at"]),
            run_after=_t(r["run_after"]),
            dedup_key=r["dedup_key"],
            concurrency_key=r["concurrency_key"],
        )
    except Exception as exc:
        raise _undecodable("tasks", r, exc) from exc


def decode_event(r: Record) -> EventModel:
    """Build an event from its record; one that cannot be decoded is a SerializationError."""
    try:
        return EventModel(
            id=r["id"],
            event_type=r["event_type"],
            agent_id=r["agent_id"],
            task_id=r["task_id"],
            payload=_json.loads(r["payload"]),
            metadata=_json.loads(r["metadata"]),
            timestamp=from_us(r["timestamp"]),
            sequence=r["sequence"],
        )
    except Exception as exc:
        raise _undecodable("events", r, exc) from exc


def decode_message(r: Record) -> MessageModel:
    """Build a message from its record; one that cannot be decoded is a SerializationError."""
    try:
        return MessageModel(
            id=r["id"],
            from_agent=r["from_agent"],
            to_agent=r["to_agent"],
            message_type=r["message_type"],
            content=_json.loads(r["content"]),
            priority=MessagePriority(r["priority"]),
            read=bool(r["read"]),
            created_at=from_us(r["created_at"]),
            read_at=_t(r["read_at"]),
        )
    except Exception as exc:
        raise _undecodable("messages", r, exc) from exc


def decode_metric(r: Record) -> MetricModel:
    """Build a metric from its record; one that cannot be decoded is a SerializationError."""
    try:
        return MetricModel(
            id=r["id"],
            metric_type=r["metric_type"],
            agent_id=r["agent_id"],
            value=float(r["value"]),
            unit=r["unit"],
            tags=_json.loads(r["tags"]),
            timestamp=from_us(r["timestamp"]),
        )
    except Exception as exc:
        raise _undecodable("metrics", r, exc) from exc


ENCODERS: Final[dict[str, Callable[[Any, Limits], Record]]] = {
    "agents": encode_agent,
    "tasks": encode_task,
    "events": encode_event,
    "messages": encode_message,
    "metrics": encode_metric,
}

DECODERS: Final[dict[str, Callable[[Record], Any]]] = {
    "agents": decode_agent,
    "tasks": decode_task,
    "events": decode_event,
    "messages": decode_message,
    "metrics": decode_metric,
}

TABLE_OF: Final[dict[type, str]] = {
    AgentModel: "agents",
    TaskModel: "tasks",
    EventModel: "events",
    MessageModel: "messages",
    MetricModel: "metrics",
}


def encode(model: Any, limits: Limits = DEFAULT_LIMITS) -> Record:
    """Validate any model and return its record."""
    table = TABLE_OF.get(type(model))
    if table is None:
        raise ValidationError(f"{type(model).__name__} is not a storable model")
    return ENCODERS[table](model, limits)


def decode(table: str, record: Record) -> Any:
    """Decode a record of ``table``; an undecodable row is a :class:`SerializationError`."""
    try:
        return DECODERS[table](record)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(
            table, str(record.get("id")), f"{type(exc).__name__}: {exc}"
        ) from exc


def utc(dt: datetime) -> datetime:
    """``dt`` converted to UTC."""
    return dt.astimezone(UTC)


def opt_time_arg(value: Any, field: str) -> int | None:
    """An optional time argument: ``None``, or what :func:`time_arg` accepts."""
    return None if value is None else time_arg(value, field)


def duration_arg(value: Any, field: str, *, allow_zero: bool = False, bounded: bool = True) -> int:
    """A duration argument (``timedelta`` or seconds) as integer microseconds.

    ``bounded`` (the default) refuses a duration longer than the range of times, so that a
    time computed from it (a lease's end, a cut-off) can be stored and read back; a wait's
    timeout is not stored and may be as long as the caller likes.
    """
    if isinstance(value, timedelta):
        us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"must be a timedelta or seconds, got {type(value).__name__}", field=field
        )
    elif not isinstance(value, int) and not math.isfinite(value):
        raise ValidationError("must be finite", field=field)
    else:
        us = _float_us(value)
    if us < 0 or (us == 0 and not allow_zero):
        raise ValidationError("must be positive", field=field)
    if us > MAX_DURATION_US:
        if bounded:
            raise ValidationError("must be shorter than the range of times (about 10,000 years)",
                                  field=field)  # fmt: skip
        return MAX_WAIT_US if us > MAX_WAIT_US else us
    return us


def cutoff_arg(value: Any, field: str, now: int) -> int:
    """``older_than``: an age (``timedelta`` or seconds) or a cut-off time (``datetime``).

    A number is an age, as the ``Duration | datetime`` signature says: ``older_than=60``
    means a minute ago, not one minute after the epoch.
    """
    if isinstance(value, datetime):
        return check_time(value, field)
    return now - duration_arg(value, field, allow_zero=True)


_FLAG_TEXT: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def flag_arg(value: Any, field: str) -> bool:
    """A boolean option: a bool, or URL text (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if isinstance(value, str) and value.lower() in _FLAG_TEXT:
        return _FLAG_TEXT[value.lower()]
    if not isinstance(value, bool):
        raise ValidationError(f"{value!r} is not true or false", field=field)
    return value


def bool_arg(value: Any, field: str) -> bool:
    """A keyword option of the API: ``True`` or ``False``, nothing else."""
    if not isinstance(value, bool):
        raise ValidationError(f"must be True or False, got {type(value).__name__}", field=field)
    return value


def limit_arg(value: Any, field: str = "limit") -> int:
    """A row limit: a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("must be a non-negative integer", field=field)
    if value > MAX_INT64:
        raise ValidationError("must fit in 64 bits (below 2**63)", field=field)
    return int(value)


#: Limits are counts every database stores as a 32-bit integer.
MAX_QUEUE_LIMIT: Final = 2**31 - 1


def queue_limit_arg(value: Any, field: str) -> int | None:
    """A queue limit: ``None`` (no limit) or a count from 0 (nothing admitted) up."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("must be None or a non-negative integer", field=field)
    if value > MAX_QUEUE_LIMIT:
        raise ValidationError(f"must be at most {MAX_QUEUE_LIMIT}", field=field)
    return int(value)


def types_arg(types: Sequence[str] | None, field: str = "task_types") -> list[str] | None:
    """A filter by type (task or event types): ``None`` or a list of texts.

    A bare string is refused: iterating it would filter by its single characters.
    """
    if types is None:
        return None
    if isinstance(types, str) or not isinstance(types, Sequence):
        raise ValidationError("must be a list of types, not a single string", field=field)
    return [check_text(t, field) for t in types]


def ids_arg(ids: Any, field: str, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """A list of ids (a bare string is refused, as in :func:`types_arg`); repeats dropped."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise ValidationError("must be a list of ids, not a single string", field=field)
    return list(dict.fromkeys(check_id(i, field, limits) for i in ids))


#: Most tasks one ``claim_next_tasks`` call claims.
MAX_BATCH: Final = 1000


def batch_size_arg(value: Any, field: str = "n") -> int:
    """How many tasks a batch call takes: an integer from 1 to :data:`MAX_BATCH`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ValidationError(f"must be an integer from 1 to {MAX_BATCH}", field=field)
    return int(value)


def results_arg(results: Any, limits: Limits = DEFAULT_LIMITS) -> list[tuple[str, str | None]]:
    """``complete_tasks``'s ``results``: ``(task_id, result)`` pairs or a mapping, as
    ``(task_id, JSON text or None)`` in order; a task listed twice is refused."""
    items: list[tuple[Any, Any]]
    if isinstance(results, Mapping):
        items = list(results.items())
    elif isinstance(results, (str, bytes)) or not isinstance(results, Sequence):
        raise ValidationError(
            f"must be a list of (task_id, result) pairs or a dict, got {type(results).__name__}",
            field="results",
        )
    else:
        items = []
        for item in results:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValidationError("each item must be a (task_id, result) pair", field="results")
            items.append((item[0], item[1]))
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for task_id, result in items:
        check_id(task_id, "task_id", limits)
        if task_id in seen:
            raise ValidationError(f"{task_id!r} is listed twice", field="task_id")
        seen.add(task_id)
        out.append((task_id, None if result is None else _json_field(result, "result", limits)))
    return out


def encode_batch(
    items: Any, encode: Callable[[Any, Limits], _T], field: str, limits: Limits
) -> list[_T]:
    """Validate a batch argument (a list of models) and encode every item."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValidationError(f"must be a list of {field}, got {type(items).__name__}", field=field)
    return [encode(item, limits) for item in items]


def check_unique_ids(ids: Iterable[str], kind: str, existing: Container[str] = ()) -> None:
    """A batch may not repeat an id, nor (when ``existing`` is given) reuse a stored one."""
    seen: set[str] = set()
    for rid in ids:
        if rid in seen or rid in existing:
            raise ConflictError(kind, rid)
        seen.add(rid)
