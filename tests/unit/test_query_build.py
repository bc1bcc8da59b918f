"""QueryBuilder: SQL text with bound parameters only, and in-memory evaluation equal to SQL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruv_swarm_persistence import codec
from ruv_swarm_persistence.errors import ValidationError
from ruv_swarm_persistence.models import (
    AgentModel,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
)
from ruv_swarm_persistence.query import QueryBuilder, like_matcher, like_regex

A = QueryBuilder(AgentModel)
AGENT_COLUMNS = ", ".join(codec.COLUMNS["agents"])
HOSTILE = "x'); DROP TABLE agents; --"


def test_plain_select_orders_by_id() -> None:
    assert A.build() == (f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY id ASC", [])
    assert str(A) == A.build()[0]


@pytest.mark.parametrize(
    ("model", "table"),
    [
        (AgentModel, "agents"),
        (TaskModel, "tasks"),
        (EventModel, "events"),
        (MessageModel, "messages"),
        (MetricModel, "metrics"),
    ],
)
def test_every_model_selects_its_columns(model: type, table: str) -> None:
    sql, _ = QueryBuilder(model).build("postgres")
    assert sql.startswith(f"SELECT {', '.join(codec.COLUMNS[table])} FROM {table} ")


@pytest.mark.parametrize(
    ("builder", "sqlite", "postgres", "params"),
    [
        (A.where_eq("status", "idle"), "status = ?", "status = $1", ["idle"]),
        (
            A.where_ne("name", "x"),
            "(name IS NULL OR name != ?)",
            "(name IS NULL OR name != $1)",
            ["x"],
        ),
        (A.where_like("name", "a%_"), "name LIKE ?", "name LIKE $1 ESCAPE ''", ["a%_"]),
        (A.where_gt("name", "m"), "name > ?", "name > $1", ["m"]),
        (
            A.where_gte("created_at", 1),
            "created_at >= ?",
            "created_at >= $1::bigint",
            [1_000_000],
        ),
        (A.where_lt("heartbeat", 0.5), "heartbeat < ?", "heartbeat < $1::bigint", [500_000]),
        (A.where_lte("id", "z"), "id <= ?", "id <= $1", ["z"]),
        (
            A.where_in("id", ["a", "b"]),
            "id IN (SELECT value FROM json_each(?))",
            "id = ANY ($1::text[])",
            [["a", "b"]],
        ),
        (A.where_in("id", []), "1 = 0", "1 = 0", []),
        (
            QueryBuilder(EventModel).where_eq("agent_id", None),
            "agent_id IS NULL",
            "agent_id IS NULL",
            [],
        ),
        (
            QueryBuilder(EventModel).where_ne("agent_id", None),
            "agent_id IS NOT NULL",
            "agent_id IS NOT NULL",
            [],
        ),
        (
            QueryBuilder(MessageModel).where_eq("read", True),
            "read = ?",
            "read = $1::bigint",
            [1],
        ),
        (
            QueryBuilder(TaskModel).where_in("priority", [3, 2]),
            "priority IN (SELECT value FROM json_each(?))",
            "priority = ANY ($1::bigint[])",
            [[3, 2]],
        ),
        (
            QueryBuilder(MetricModel).where_gt("value", 2),
            "value > ?",
            "value > $1::float8",
            [2.0],
        ),
    ],
)
def test_conditions_bind_every_value(
    builder: QueryBuilder[Any], sqlite: str, postgres: str, params: list[Any]
) -> None:
    for dialect, where in (("sqlite", sqlite), ("postgres", postgres)):
        sql, got = builder.build(dialect)  # type: ignore[arg-type]
        assert f" WHERE {where} ORDER BY " in sql
        if dialect == "sqlite":
            # An IN list is one JSON array on SQLite.
            got = [json.loads(p) if " IN (SELECT" in where else p for p in got]
        assert got == params
        assert [type(p) for p in got] == [type(p) for p in params]


def test_postgres_placeholders_number_across_the_whole_query() -> None:
    b = A.where_eq("status", "idle").where_in("id", ["a", "b"]).where_gt("name", "m")
    sql, params = b.order_by("name").limit(5).offset(10).build("postgres")
    assert sql.endswith(
        "WHERE status = $1 AND id = ANY ($2::text[]) AND name > $3"
        " ORDER BY name ASC NULLS FIRST, id ASC LIMIT $4 OFFSET $5"
    )
    assert params == ["idle", ["a", "b"], "m", 5, 10]
    sql, params = b.limit(5).offset(10).build("sqlite")
    assert sql.endswith(
        "WHERE status = ? AND id IN (SELECT value FROM json_each(?)) AND name > ?"
        " ORDER BY id ASC LIMIT ? OFFSET ?"
    )
    assert params == ["idle", '["a", "b"]', "m", 5, 10]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_hostile_values_never_reach_the_sql_text(dialect: Any) -> None:
    b = (
        A.where_eq("name", HOSTILE)
        .where_like("agent_type", HOSTILE)
        .where_in("id", [HOSTILE, "ok"])
        .where_ne("status", HOSTILE)
    )
    sql, params = b.build(dialect)
    assert "DROP" not in sql
    assert "'" not in sql.replace("ESCAPE ''", "")
    assert "--" not in sql
    assert params.count(HOSTILE) == 3
    in_list = params[2] if dialect == "postgres" else json.loads(params[2])
    assert in_list == [HOSTILE, "ok"]


def test_ordering_and_null_placement() -> None:
    b = A.order_by("status").order_by("created_at", desc=True)
    assert b.build()[0].endswith(
        "ORDER BY status ASC NULLS FIRST, created_at DESC NULLS LAST, id ASC"
    )
    assert A.order_by("id", desc=True).build()[0].endswith("ORDER BY id DESC NULLS LAST")


def test_limit_and_offset_per_dialect() -> None:
    assert A.limit(3).build()[0].endswith("LIMIT ?")
    assert A.offset(4).build() == (
        f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY id ASC LIMIT -1 OFFSET ?",
        [4],
    )
    assert A.offset(4).build("postgres")[0].endswith("LIMIT ALL OFFSET $1")
    assert A.limit(0).build()[1] == [0]
    assert A.offset(0).build()[0].endswith("ORDER BY id ASC")


def test_builders_are_immutable() -> None:
    base = A.where_eq("status", "idle")
    narrower = base.where_like("name", "a%").order_by("name").limit(1).offset(2)
    assert base.build() == (
        f"SELECT {AGENT_COLUMNS} FROM agents WHERE status = ? ORDER BY id ASC",
        ["idle"],
    )
    assert (narrower.limit_value, narrower.offset_value) == (1, 2)
    assert (base.limit_value, base.offset_value) == (None, 0)
    assert QueryBuilder.new(AgentModel).build() == A.build()


HOSTILE_FIELDS = ["id; DROP TABLE agents", "id OR 1=1", "name ", "NAME", "", "*", "payload", 1]


@pytest.mark.parametrize("field", HOSTILE_FIELDS, ids=repr)
def test_unknown_fields_are_validation_errors(field: Any) -> None:
    makers: list[Callable[[], object]] = [
        lambda: A.where_eq(field, "x"),
        lambda: A.where_gt(field, "x"),
        lambda: A.where_in(field, ["x"]),
        lambda: A.order_by(field),
    ]
    for make in makers:
        with pytest.raises(ValidationError) as info:
            make()
        assert info.value.field == "field"
        assert "use one of" in str(info.value)


@pytest.mark.parametrize("field", ["capabilities", "metadata"])
def test_json_fields_cannot_be_queried(field: str) -> None:
    with pytest.raises(ValidationError, match="JSON field"):
        A.where_eq(field, "x")
    with pytest.raises(ValidationError, match="JSON field"):
        A.order_by(field)


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("abc", "abc", True),
        ("abc", "ABC", False),
        ("a%", "a", True),
        ("a%", "abc\nd", True),
        ("a_c", "abc", True),
        ("a_c", "ac", False),
        ("%.%", "a.b", True),
        (".*", "anything", False),
        ("(a)", "(a)", True),
        ("ü_", "üx", True),
    ],
)
def test_like_regex(pattern: str, text: str, matches: bool) -> None:
    assert (like_regex(pattern).fullmatch(text) is not None) is matches


@given(pattern=st.text(alphabet="ab_%", max_size=8), text=st.text(alphabet="abc", max_size=10))
def test_like_matcher_agrees_with_the_regular_expression(pattern: str, text: str) -> None:
    assert like_matcher(pattern)(text) is (like_regex(pattern).fullmatch(text) is not None)


def test_like_matcher_does_not_backtrack() -> None:
    # A backtracking regular expression takes seconds on this (cubic in the text's length);
    # the matcher scans it once per piece.
    text = "a" * 20_000
    assert like_matcher("%a%a%a%b")(text) is False
    assert like_matcher("%a%a%a%")(text) is True
    assert like_matcher("%a%_%a")(text) is True


# --- apply() equals the SQL it builds (checked against the standard library's SQLite) -------

_names = st.text(alphabet="aAbB_%é", max_size=4)
_agent_records = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.none() | _names,
            "status": st.sampled_from(["idle", "busy", "error"]),
            "created_at": st.integers(-5, 5),
        }
    ),
    max_size=8,
)


@st.composite
def _builders(draw: st.DrawFn) -> QueryBuilder[AgentModel]:
    b = A
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["eq", "ne", "like", "gt", "gte", "lt", "lte", "in"]))
        field = draw(st.sampled_from(["name", "status"]))
        if kind == "in":
            b = b.where_in(field, draw(st.lists(_names, max_size=3)))
        elif kind == "like":
            b = b.where_like(field, draw(_names))
        elif kind in ("gt", "gte", "lt", "lte") and draw(st.booleans()):
            b = getattr(b, f"where_{kind}")("created_at", draw(st.integers(-5, 5)))
        elif kind in ("eq", "ne"):
            b = getattr(b, f"where_{kind}")(field, draw(st.none() | _names))
        else:
            b = getattr(b, f"where_{kind}")(field, draw(_names))
    for _ in range(draw(st.integers(0, 2))):
        b = b.order_by(draw(st.sampled_from(["name", "status", "created_at"])), draw(st.booleans()))
    if draw(st.booleans()):
        b = b.limit(draw(st.integers(0, 5)))
    if draw(st.booleans()):
        b = b.offset(draw(st.integers(0, 5)))
    return b


@given(rows=_agent_records, builder=_builders())
def test_apply_equals_sqlite(rows: list[dict[str, Any]], builder: QueryBuilder[AgentModel]) -> None:
    records = []
    for i, row in enumerate(rows):
        rec: dict[str, Any] = dict.fromkeys(codec.COLUMNS["agents"], "")
        rec.update(row, id=f"id{i:02d}", heartbeat=0, updated_at=0)
        # created_at is in seconds here; the builder coerces its values to microseconds.
        rec["created_at"] = row["created_at"] * 1_000_000
        records.append(rec)
    db = sqlite3.connect(":memory:")
    try:
        db.execute("PRAGMA case_sensitive_like = ON")
        db.execute(f"CREATE TABLE agents ({', '.join(codec.COLUMNS['agents'])})")
        cols = codec.COLUMNS["agents"]
        db.executemany(
            f"INSERT INTO agents VALUES ({', '.join('?' for _ in cols)})",
            [tuple(r[c] for c in cols) for r in records],
        )
        sql, params = builder.build("sqlite")
        from_sql = [row[0] for row in db.execute(sql, params)]
    finally:
        db.close()
    in_memory = [r["id"] for r in builder.apply(records)]
    assert in_memory == from_sql
