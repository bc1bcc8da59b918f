"""The storage boundary: field checks, argument parsing, and model <-> record conversion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruv_swarm_persistence import codec
from ruv_swarm_persistence._time import from_us
from ruv_swarm_persistence.codec import Limits
from ruv_swarm_persistence.errors import SerializationError, ValidationError
from ruv_swarm_persistence.models import (
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

T = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC)
T_US = 1_714_564_800_123_456


def _models() -> dict[str, Any]:
    return {
        "agents": AgentModel(
            id="a",
            name="n",
            agent_type="t",
            status=AgentStatus.Busy,
            capabilities=["x"],
            metadata={"k": [1]},
            heartbeat=T,
            created_at=T,
            updated_at=T,
        ),
        "tasks": TaskModel(
            id="t",
            task_type="w",
            priority=TaskPriority.Critical,
            status=TaskStatus.Running,
            assigned_to="a",
            payload=[1, 2],
            result={"ok": True},
            error="",
            retry_count=2,
            max_retries=5,
            dependencies=["d1", "d2"],
            created_at=T,
            updated_at=T,
            started_at=T,
            completed_at=None,
            lease_expires_at=T + timedelta(seconds=30),
            run_after=None,
        ),
        "events": EventModel(
            id="e", event_type="x", agent_id="a", payload="text", metadata={}, timestamp=T
        ),
        "messages": MessageModel(
            id="m",
            from_agent="a",
            to_agent="b",
            message_type="t",
            content=None,
            priority=MessagePriority.Urgent,
            read=True,
            created_at=T,
            read_at=T,
        ),
        "metrics": MetricModel(
            id="x", metric_type="cpu", value=1.25, unit="%", tags={"h": "1"}, timestamp=T
        ),
    }


@pytest.mark.parametrize("table", list(codec.COLUMNS))
def test_records_hold_only_storable_values_in_column_order(table: str) -> None:
    model = _models()[table]
    record = codec.encode(model)
    assert tuple(record) == codec.COLUMNS[table]
    for column, value in record.items():
        assert value is None or type(value) in (str, int, float), column
    back = codec.decode(table, record)
    if table == "events":
        assert back.sequence is None
    assert back == model


def test_times_are_integer_microseconds() -> None:
    rec = codec.encode_agent(_models()["agents"])
    assert rec["created_at"] == T_US
    other_zone = T.astimezone(timezone(timedelta(hours=-7, minutes=-30)))
    assert codec.check_time(other_zone, "f") == T_US
    assert codec.decode_agent(rec).created_at.tzinfo is UTC


def test_enums_are_stored_as_values() -> None:
    rec = codec.encode_task(_models()["tasks"])
    assert (rec["status"], rec["priority"]) == ("running", 3)
    msg = codec.encode_message(_models()["messages"])
    assert (msg["priority"], msg["read"]) == (3, 1)


def test_unread_message_stores_no_read_time() -> None:
    m = _models()["messages"]
    m.read = False
    assert codec.encode_message(m)["read_at"] is None


def test_read_message_needs_a_read_time() -> None:
    m = _models()["messages"]
    m.read_at = None
    with pytest.raises(ValidationError, match=r"message\.read_at"):
        codec.encode_message(m)


def test_duplicate_dependencies_are_refused() -> None:
    t = _models()["tasks"]
    t.dependencies = ["d", "d"]
    with pytest.raises(ValidationError, match=r"task\.dependencies"):
        codec.encode_task(t)


def test_metric_value_becomes_float() -> None:
    m = _models()["metrics"]
    m.value = 3
    rec = codec.encode_metric(m)
    assert rec["value"] == 3.0
    assert type(rec["value"]) is float


@pytest.mark.parametrize("model", [object(), {"id": "x"}, None, "agent"], ids=repr)
def test_encode_refuses_non_models(model: Any) -> None:
    with pytest.raises(ValidationError):
        codec.encode(model)


@pytest.mark.parametrize("table", list(codec.COLUMNS))
def test_encoder_refuses_the_wrong_model(table: str) -> None:
    wrong = _models()["metrics" if table != "metrics" else "agents"]
    with pytest.raises(ValidationError, match="expected"):
        codec.ENCODERS[table](wrong, codec.DEFAULT_LIMITS)


@pytest.mark.parametrize(
    ("table", "column", "bad"),
    [
        ("agents", "status", "sleeping"),
        ("agents", "metadata", "{not json"),
        ("tasks", "priority", 9),
        ("tasks", "created_at", "yesterday"),
        ("events", "payload", None),
        ("messages", "content", b"\xff"),
        ("metrics", "value", "NaN?"),
    ],
)
def test_undecodable_row_is_a_serialization_error(table: str, column: str, bad: Any) -> None:
    record = codec.encode(_models()[table])
    record[column] = bad
    with pytest.raises(SerializationError) as info:
        codec.decode(table, record)
    assert info.value.table == table
    assert info.value.id == record["id"]
    assert info.value.__cause__ is not None


# --- field checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "x" * 256, "ünïcødé", "with space", "🚀"])
def test_check_id_accepts(good: str) -> None:
    assert codec.check_id(good, "f") == good


@pytest.mark.parametrize("bad", ["", "x" * 257, "a\x00", "\ud800", 1, None, b"id", ["a"]], ids=repr)
def test_check_id_refuses(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        codec.check_id(bad, "agent.id")
    assert info.value.field == "agent.id"


def test_check_id_limit_is_a_setting() -> None:
    limits = Limits(max_id_length=4)
    assert codec.check_id("abcd", "f", limits) == "abcd"
    with pytest.raises(ValidationError, match="limit of 4"):
        codec.check_id("abcde", "f", limits)


def test_check_text() -> None:
    assert codec.check_text("x", "f") == "x"
    assert codec.check_text("", "f", empty_ok=True) == ""
    for bad in ("", "a\x00", "\udcff", 5, None):
        with pytest.raises(ValidationError):
            codec.check_text(bad, "f")
    limits = Limits(max_string_length=3)
    assert codec.check_text("abc", "f", limits) == "abc"
    with pytest.raises(ValidationError, match="limit of 3"):
        codec.check_text("abcd", "f", limits)


@pytest.mark.parametrize(
    ("value", "us"),
    [
        (T, T_US),
        (T.astimezone(timezone(timedelta(hours=14))), T_US),
        (1_714_564_800, 1_714_564_800_000_000),
        (1_714_564_800.5, 1_714_564_800_500_000),
        (0, 0),
        (-1.5, -1_500_000),
    ],
)
def test_time_arg(value: Any, us: int) -> None:
    assert codec.time_arg(value, "since") == us


@pytest.mark.parametrize(
    "bad", [datetime(2024, 1, 1), "2024-01-01", None, True, float("nan"), float("inf")], ids=repr
)
def test_time_arg_refuses(bad: Any) -> None:
    with pytest.raises(ValidationError, match="since"):
        codec.time_arg(bad, "since")


@pytest.mark.parametrize(
    ("value", "us"),
    [(timedelta(minutes=1, microseconds=1), 60_000_001), (2, 2_000_000), (0.25, 250_000)],
)
def test_duration_arg(value: Any, us: int) -> None:
    assert codec.duration_arg(value, "lease") == us


@pytest.mark.parametrize(
    "bad", [0, -1, timedelta(seconds=-1), "30s", None, True, float("nan")], ids=repr
)
def test_duration_arg_refuses(bad: Any) -> None:
    with pytest.raises(ValidationError, match="lease"):
        codec.duration_arg(bad, "lease")


def test_duration_arg_zero_when_allowed() -> None:
    assert codec.duration_arg(0, "timeout", allow_zero=True) == 0
    assert codec.duration_arg(timedelta(0), "timeout", allow_zero=True) == 0


def test_cutoff_arg_takes_an_age_or_a_time() -> None:
    now = T_US
    assert codec.cutoff_arg(timedelta(seconds=60), "older_than", now) == now - 60_000_000
    assert codec.cutoff_arg(60, "older_than", now) == now - 60_000_000
    assert codec.cutoff_arg(0.5, "older_than", now) == now - 500_000
    assert codec.cutoff_arg(T - timedelta(hours=1), "older_than", now) == now - 3_600_000_000
    for bad in (datetime(2024, 1, 1), -1, "1h", None):
        with pytest.raises(ValidationError, match="older_than"):
            codec.cutoff_arg(bad, "older_than", now)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (10, True), (-1, False), (1.0, False)])
def test_limit_arg(value: Any, ok: bool) -> None:
    if ok:
        assert codec.limit_arg(value) == value
    else:
        with pytest.raises(ValidationError, match="limit"):
            codec.limit_arg(value)


def test_limit_arg_refuses_bool() -> None:
    with pytest.raises(ValidationError):
        codec.limit_arg(True)


def test_json_fields_refuse_nul_in_strings() -> None:
    e = _models()["events"]
    e.payload = {"k": ["ok", "bad\x00"]}
    with pytest.raises(ValidationError, match=r"event\.payload.*NUL"):
        codec.encode_event(e)
    e.payload = {"key\x00": 1}
    with pytest.raises(ValidationError, match="NUL"):
        codec.encode_event(e)
    e.payload = {"escaped text is fine": "\\u0000"}
    assert codec.encode_event(e)["payload"] == '{"escaped text is fine":"\\\\u0000"}'


# --- the fast path of event_values ---------------------------------------------------------

_SMALL = Limits(max_id_length=8, max_string_length=12)
_Str = type("Str", (str,), {})
_IDS = ["a", "", "x" * 8, "x" * 9, "a\x00b", "ü", "\ud800", _Str("s"), 1, b"id"]
#: For each field, values on both sides of every rule (a valid event has the first of each).
_EDGES: dict[str, list[Any]] = {
    "id": _IDS,
    "event_type": ["t", "", "x" * 12, "x" * 13, "a\x00", "ü", "\udfff", _Str("s"), None, 3],
    "agent_id": [None, *_IDS],
    "task_id": [None, *_IDS],
    "payload": [{"n": 1}, None, [1, "a"], {"a": "\x00"}, {"k\x00": 1}, float("nan"), (1, 2)],
    "metadata": [{}, {"k": 1}, None, [], {"k": "\x00"}, {1: 2}],
    "timestamp": [T, T.astimezone(timezone(timedelta(hours=2))), T.replace(tzinfo=None), None],
}


def _outcome(encode: Any, event: EventModel) -> Any:
    try:
        return encode(event, _SMALL)
    except ValidationError as exc:
        return ("error", exc.field, str(exc))


def _event(fields: dict[str, Any]) -> EventModel:
    return EventModel(**{name: values[0] for name, values in _EDGES.items()} | fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f, values in _EDGES.items() for v in values],
    ids=lambda x: repr(x)[:20],
)
def test_event_values_fast_path_agrees_with_the_field_checks(field: str, value: Any) -> None:
    event = _event({field: value})
    assert _outcome(codec.event_values, event) == _outcome(codec._checked_event_values, event)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: st.sampled_from(values) for name, values in _EDGES.items()}))
def test_event_values_fast_path_agrees_on_any_mix(fields: dict[str, Any]) -> None:
    event = _event(fields)
    assert _outcome(codec.event_values, event) == _outcome(codec._checked_event_values, event)


def test_event_values_takes_the_fast_path_for_the_common_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "_checked_event_values", None)  # calling it would fail
    event = _event({"agent_id": "x" * 8})
    assert codec.event_values(event, _SMALL) == ("a", "t", "x" * 8, None, '{"n":1}', "{}", T_US)


# --- ranges: what can be stored can be read back ------------------------------------------


class _BadZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset today")

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class _FarZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        3e11,
        -7e10,
        10**12,
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    ],
    ids=repr,
)
def test_a_time_outside_the_years_1_to_9999_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="years 1 to 9999") as caught:
        codec.time_arg(value, "at")
    assert caught.value.field == "at"


@pytest.mark.parametrize("zone", [_BadZone(), _FarZone()], ids=["raises", "30h"])
def test_a_time_zone_that_fails_is_a_validation_error(zone: tzinfo) -> None:
    with pytest.raises(ValidationError) as caught:
        codec.check_time(datetime(2024, 1, 1, tzinfo=zone), "event.timestamp")
    assert caught.value.field == "event.timestamp"


def test_the_edges_of_the_range_round_trip() -> None:
    for edge in (codec.MIN_US, codec.MAX_US):
        assert codec.time_arg(from_us(edge), "at") == edge


@pytest.mark.parametrize("value", [3e11 * 1000, timedelta.max], ids=repr)
def test_a_stored_duration_longer_than_the_range_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="range of times"):
        codec.duration_arg(value, "lease")


def test_a_wait_may_be_as_long_as_the_caller_likes() -> None:
    assert codec.duration_arg(10**18, "timeout", bounded=False) == 10**24


@pytest.mark.parametrize("value", [2**63, 2**70], ids=repr)
def test_limits_fit_in_64_bits(value: int) -> None:
    assert codec.limit_arg(2**63 - 1) == 2**63 - 1
    with pytest.raises(ValidationError, match="64 bits"):
        codec.limit_arg(value, "after_sequence")


def test_a_metric_value_too_large_for_a_float() -> None:
    with pytest.raises(ValidationError) as caught:
        codec.encode_metric(MetricModel.new("m", 10**400, "u"))
    assert caught.value.field == "metric.value"


def test_model_fields_are_checked_in_declaration_order() -> None:
    message = MessageModel.new("a", "b", "note", {})
    message.id, message.read = "", "yes"  # type: ignore[assignment]
    with pytest.raises(ValidationError) as caught:
        codec.encode_message(message)
    assert caught.value.field == "message.id"
    metric = MetricModel.new("m", float("nan"), "u")
    metric.id = ""
    with pytest.raises(ValidationError) as caught:
        codec.encode_metric(metric)
    assert caught.value.field == "metric.id"
