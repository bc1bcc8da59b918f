"""``QueryBuilder``: filters, ordering and paging over one model, as bound SQL or in memory.

Field names are checked against the model's columns, so no caller string ever becomes SQL
text; every value is a bound parameter. The SQL dialect (placeholder style) is chosen by the
backend that runs the query; the memory backend evaluates the same builder directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from . import codec
from .errors import ValidationError
from .models import AgentModel, EventModel, MessageModel, MetricModel, TaskModel

__all__ = ["Condition", "QueryBuilder"]

T = TypeVar("T")
Dialect = Literal["sqlite", "postgres"]
Op = Literal["=", "!=", ">", ">=", "<", "<=", "LIKE", "IN"]

_TEXT, _INT, _TIME, _FLOAT, _BOOL, _JSON = (
    "text",
    "int",
    "time",
    "float",
    "bool",
    "json",
)

#: The kind of every column; JSON columns cannot be filtered or ordered on.
KINDS: Final[dict[str, dict[str, str]]] = {
    "agents": {
        "id": _TEXT, "name": _TEXT, "agent_type": _TEXT, "status": _TEXT,
        "capabilities": _JSON, "metadata": _JSON,
        "heartbeat": _TIME, "created_at": _TIME, "updated_at": _TIME,
    },
    "tasks": {
        "id": _TEXT, "task_type": _TEXT, "priority": _INT, "status": _TEXT,
        "assigned_to": _TEXT, "payload": _JSON, "result": _JSON, "error": _TEXT,
        "retry_count": _INT, "max_retries": _INT, "dependencies": _JSON,
        "created_at": _TIME, "updated_at": _TIME, "started_at": _TIME, "completed_at": _TIME,
        "lease_expires_at": _TIME, "run_after": _TIME,
    },
    "events": {
        "id": _TEXT, "event_type": _TEXT, "agent_id": _TEXT, "task_id": _TEXT,
        "payload": _JSON, "metadata": _JSON, "timestamp": _TIME, "sequence": _INT,
    },
    "messages": {
        "id": _TEXT, "from_agent": _TEXT, "to_agent": _TEXT, "message_type": _TEXT,
        "content": _JSON, "priority": _INT, "read": _BOOL, "created_at": _TIME,
        "read_at": _TIME,
    },
    "metrics": {
        "id": _TEXT, "metric_type": _TEXT, "agent_id": _TEXT, "value": _FLOAT, "unit": _TEXT,
        "tags": _JSON, "timestamp": _TIME,
    },
}  # fmt: skip

#: PostgreSQL's type for a bound value of each kind: the widest of its columns, so a value
#: outside a narrower column's range (a SMALLINT priority of 40,000) compares as on the other
#: backends instead of failing to bind.
_PG_TYPES: Final[dict[str, str]] = {
    _TEXT: "text",
    _INT: "bigint",
    _TIME: "bigint",
    _BOOL: "bigint",
    _FLOAT: "float8",
}

#: The longest LIKE pattern, in UTF-8 bytes (SQLite's own limit, kept on every backend).
MAX_LIKE_BYTES: Final = 50_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

TABLES: Final[dict[type, str]] = {
    AgentModel: "agents",
    TaskModel: "tasks",
    EventModel: "events",
    MessageModel: "messages",
    MetricModel: "metrics",
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter: ``field op value`` with ``value`` already in column form."""

    field: str
    op: Op
    value: Any


def _coerce(kind: str, value: Any, field: str) -> Any:
    """A caller's value in the column's stored form."""
    if value is None:
        return None
    if kind == _TIME:
        return codec.time_arg(value, field)
    if kind == _INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"expects an integer, got {type(value).__name__}", field=field)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValidationError("is outside the 64-bit integer range", field=field)
        return int(value)
    if kind == _FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(f"expects a number, got {type(value).__name__}", field=field)
        try:
            return float(value)
        except OverflowError:
            raise ValidationError("is outside the float range", field=field) from None
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise ValidationError(f"expects a bool, got {type(value).__name__}", field=field)
        return 1 if value else 0
    if not isinstance(value, str):
        raise ValidationError(f"expects a string, got {type(value).__name__}", field=field)
    return codec.check_text(value, field, empty_ok=True)


class QueryBuilder(Generic[T]):
    """Build a query over one model: ``QueryBuilder(AgentModel).where_eq("status", "idle")``.

    Each method returns a new builder, so a partial query can be reused.
    """

    __slots__ = ("_limit", "_offset", "conditions", "model", "ordering", "table")

    def __init__(self, model: type[T], table: str | None = None) -> None:
        if not isinstance(model, type) or model not in TABLES:
            raise ValidationError(f"{model!r} is not a storable model", field="model")
        self.model: type[T] = model
        self.table: str = TABLES[model]
        if table is not None and table != self.table:
            raise ValidationError(
                f"{model.__name__} lives in table {self.table!r}, not {table!r}",
                field="table",
            )
        self.conditions: tuple[Condition, ...] = ()
        self.ordering: tuple[tuple[str, bool], ...] = ()
        self._limit: int | None = None
        self._offset: int = 0

    @classmethod
    def new(cls, model: type[T], table: str | None = None) -> QueryBuilder[T]:
        """The crate's spelling of the constructor."""
        return cls(model, table)

    def _copy(self) -> QueryBuilder[T]:
        other: QueryBuilder[T] = QueryBuilder.__new__(QueryBuilder)
        other.model, other.table = self.model, self.table
        other.conditions, other.ordering = self.conditions, self.ordering
        other._limit, other._offset = self._limit, self._offset
        return other

    def _kind(self, field: str, *, usage: str) -> str:
        kinds = KINDS[self.table]
        if not isinstance(field, str) or field not in kinds:
            allowed = ", ".join(k for k, v in kinds.items() if v != _JSON)
            raise ValidationError(
                f"unknown field {field!r} for {self.table}; use one of: {allowed}",
                field="field",
            )
        kind = kinds[field]
        if kind == _JSON:
            raise ValidationError(f"JSON field {field!r} cannot be used to {usage}", field=field)
        return kind

    def _where(self, field: str, op: Op, value: Any) -> QueryBuilder[T]:
        kind = self._kind(field, usage="filter")
        if op == "LIKE":
            if kind != _TEXT:
                raise ValidationError("LIKE needs a text field", field=field)
            if not isinstance(value, str):
                raise ValidationError("LIKE needs a string pattern", field=field)
            codec.check_text(value, field, empty_ok=True)
            if len(value.encode("utf-8", "surrogatepass")) > MAX_LIKE_BYTES:
                raise ValidationError(
                    f"LIKE pattern is longer than {MAX_LIKE_BYTES:,} bytes", field=field
                )
        if op == "IN":
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ValidationError("IN needs a list of values", field=field)
            coerced: Any = tuple(_coerce(kind, v, field) for v in value)
            if any(v is None for v in coerced):
                raise ValidationError("IN values must not be None", field=field)
        else:
            coerced = _coerce(kind, value, field)
            if coerced is None and op not in ("=", "!="):
                raise ValidationError(f"{op} needs a value, not None", field=field)
        other = self._copy()
        other.conditions = (*self.conditions, Condition(field, op, coerced))
        return other

    def where_eq(self, field: str, value: Any) -> QueryBuilder[T]:
        """``field = value`` (``None`` matches a missing value)."""
        return self._where(field, "=", value)

    def where_ne(self, field: str, value: Any) -> QueryBuilder[T]:
        """``field != value`` (``None`` matches a present value)."""
        return self._where(field, "!=", value)

    def where_like(self, field: str, pattern: str) -> QueryBuilder[T]:
        """Case-sensitive pattern match: ``%`` any run of characters, ``_`` one character."""
        return self._where(field, "LIKE", pattern)

    def where_gt(self, field: str, value: Any) -> QueryBuilder[T]:
        """``field > value``."""
        return self._where(field, ">", value)

    def where_gte(self, field: str, value: Any) -> QueryBuilder[T]:
        """``field >= value``."""
        return self._where(field, ">=", value)

    def where_lt(self, field: str, value: Any) -> QueryBuilder[T]:
        """``field < value``."""
        return self._where(field, "<", value)

    def where_lte(self, field: str, value: Any) -> QueryBuilder[T]:
        """``field <= value``."""
        return self._where(field, "<=", value)

    def where_in(self, field: str, values: Sequence[Any]) -> QueryBuilder[T]:
        """``field IN (values)``; an empty list matches nothing."""
        return self._where(field, "IN", values)

    def order_by(self, field: str, desc: bool = False) -> QueryBuilder[T]:
        """Sort by ``field`` (missing values sort first ascending, last descending)."""
        self._kind(field, usage="order by")
        other = self._copy()
        other.ordering = (*self.ordering, (field, bool(desc)))
        return other

    def limit(self, n: int) -> QueryBuilder[T]:
        """Return at most ``n`` rows."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= _INT64_MAX:
            raise ValidationError("must be a non-negative 64-bit integer", field="limit")
        other = self._copy()
        other._limit = n
        return other

    def offset(self, n: int) -> QueryBuilder[T]:
        """Skip the first ``n`` rows."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= _INT64_MAX:
            raise ValidationError("must be a non-negative 64-bit integer", field="offset")
        other = self._copy()
        other._offset = n
        return other

    @property
    def limit_value(self) -> int | None:
        """The limit set, if any."""
        return self._limit

    @property
    def offset_value(self) -> int:
        """The offset set (0 by default)."""
        return self._offset

    # --- SQL ----------------------------------------------------------------------------

    def build(self, dialect: Dialect = "sqlite") -> tuple[str, list[Any]]:
        """The query as ``(sql, params)`` with placeholders of ``dialect``.

        ``id`` ends every ordering so that paging is deterministic.
        """
        params: list[Any] = []

        def ph(value: Any) -> str:
            params.append(value)
            return "?" if dialect == "sqlite" else f"${len(params)}"

        cols = ", ".join(codec.COLUMNS[self.table])
        sql = f"SELECT {cols} FROM {self.table}" + self._where_sql(dialect, ph)
        order = [f"{f} {'DESC NULLS LAST' if d else 'ASC NULLS FIRST'}" for f, d in self.ordering]
        if not any(f == "id" for f, _ in self.ordering):
            order.append("id ASC")
        sql += " ORDER BY " + ", ".join(order)
        if self._limit is not None:
            sql += f" LIMIT {ph(self._limit)}"
        if self._offset:
            if self._limit is None:
                sql += " LIMIT -1" if dialect == "sqlite" else " LIMIT ALL"
            sql += f" OFFSET {ph(self._offset)}"
        return sql, params

    def _where_sql(self, dialect: Dialect, ph: Callable[[Any], str]) -> str:
        """The ``WHERE`` clause (with its leading space, or empty); ``ph`` binds a value."""
        kinds = KINDS[self.table]

        def typed(field: str, value: Any) -> str:
            if dialect == "sqlite" or kinds[field] == _TEXT:
                return ph(value)
            return f"{ph(value)}::{_PG_TYPES[kinds[field]]}"

        clauses = []
        for c in self.conditions:
            if c.value is None:
                clauses.append(f"{c.field} IS {'NOT ' if c.op == '!=' else ''}NULL")
            elif c.op == "IN":
                # One parameter however long the list: both databases cap the number of
                # parameters of a statement (SQLite at 32,766, PostgreSQL at 32,767).
                if not c.value:
                    clauses.append("1 = 0")
                elif dialect == "sqlite":
                    values = json.dumps(list(c.value))
                    clauses.append(f"{c.field} IN (SELECT value FROM json_each({ph(values)}))")
                else:
                    array = f"{ph(list(c.value))}::{_PG_TYPES[kinds[c.field]]}[]"
                    clauses.append(f"{c.field} = ANY ({array})")
            elif c.op == "!=":
                clauses.append(f"({c.field} IS NULL OR {c.field} != {typed(c.field, c.value)})")
            elif c.op == "LIKE" and dialect == "postgres":
                # PostgreSQL's LIKE treats a backslash as an escape; SQLite's and ours do not.
                clauses.append(f"{c.field} LIKE {ph(c.value)} ESCAPE ''")
            else:
                clauses.append(f"{c.field} {c.op} {typed(c.field, c.value)}")
        return " WHERE " + " AND ".join(clauses) if clauses else ""

    def check_group_by(self, fields: Sequence[str]) -> tuple[str, ...]:
        """Validate the fields a count groups by: text, integer or boolean columns."""
        kinds = KINDS[self.table]
        out = []
        for f in fields:
            if not isinstance(f, str) or kinds.get(f) not in (_TEXT, _INT, _BOOL):
                raise ValidationError(
                    f"{f!r} is not a text, integer or boolean field of {self.table}",
                    field="group_by",
                )
            out.append(f)
        return tuple(out)

    def build_count(
        self, group_by: Sequence[str] = (), dialect: Dialect = "sqlite"
    ) -> tuple[str, list[Any]]:
        """``SELECT <group_by...>, count(*)`` over the rows the query selects, as ``(sql,
        params)``; ``group_by`` checked by :meth:`check_group_by`.

        With a limit or an offset the rows are those of the page (the query as a subquery);
        without, the count reads only the filtered rows, in no order.
        """
        params: list[Any] = []

        def ph(value: Any) -> str:
            params.append(value)
            return "?" if dialect == "sqlite" else f"${len(params)}"

        keys = ", ".join(group_by)
        head = f"SELECT {keys + ', ' if keys else ''}count(*) FROM "
        tail = f" GROUP BY {keys}" if keys else ""
        if self._limit is not None or self._offset:
            inner, params = self.build(dialect)
            return f"{head}({inner}) AS page{tail}", params
        return head + self.table + self._where_sql(dialect, ph) + tail, params

    def __str__(self) -> str:
        return self.build()[0]

    # --- in memory ----------------------------------------------------------------------

    def matcher(self) -> Callable[[codec.Record], bool]:
        """A predicate over records equivalent to the WHERE clause."""
        tests: list[Callable[[codec.Record], bool]] = []
        for c in self.conditions:
            tests.append(_record_test(c))
        return lambda rec: all(t(rec) for t in tests)

    def apply(self, records: list[codec.Record]) -> list[codec.Record]:
        """Filter, order and page records as the SQL would."""
        match = self.matcher()
        rows = [r for r in records if match(r)]
        rows.sort(key=lambda r: r["id"])
        for f, desc in reversed(self.ordering):
            present = [r for r in rows if r[f] is not None]
            missing = [r for r in rows if r[f] is None]
            present.sort(key=lambda r, f=f: r[f], reverse=desc)  # type: ignore[misc]
            rows = present + missing if desc else missing + present
        end = None if self._limit is None else self._offset + self._limit
        return rows[self._offset : end]

    def count_records(
        self, records: list[codec.Record], group_by: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """What :meth:`build_count` selects, over records: ``(key..., count)`` rows."""
        if self._limit is not None or self._offset:
            rows = self.apply(records)
        else:
            match = self.matcher()
            rows = [r for r in records if match(r)]
        if not group_by:
            return [(len(rows),)]
        counts: dict[tuple[Any, ...], int] = {}
        for r in rows:
            key = tuple(r[f] for f in group_by)
            counts[key] = counts.get(key, 0) + 1
        return [(*k, n) for k, n in counts.items()]


def like_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression equivalent of a case-sensitive LIKE pattern without ``%``."""
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def like_matcher(pattern: str) -> Callable[[str], bool]:
    """A case-sensitive LIKE test that never backtracks.

    A regular expression with several ``.*`` backtracks: ``%a%a%a%b`` against 800 ``a`` takes
    seconds. Instead the pattern is cut at ``%`` into pieces (with ``_`` wildcards) that must
    appear in order: the first at the start, the last at the end, and each middle piece at
    its leftmost place after the one before, which is where a match can always be found if
    there is one. The cost is bounded by the text's length times the pattern's.
    """
    pieces = pattern.split("%")
    if len(pieces) == 1:
        exact = like_regex(pattern)
        return lambda text: exact.fullmatch(text) is not None
    first, *middle, last = (like_regex(p) for p in pieces)
    first_len, last_len = len(pieces[0]), len(pieces[-1])

    def test(text: str) -> bool:
        if len(text) < first_len + last_len or first.match(text) is None:
            return False
        end = len(text) - last_len
        if last.fullmatch(text, end) is None:
            return False
        pos = first_len
        for piece, rx in zip(pieces[1:-1], middle, strict=True):
            if not piece:
                continue
            found = rx.search(text, pos, end)
            if found is None:
                return False
            pos = found.end()
        return True

    return test


def _record_test(c: Condition) -> Callable[[codec.Record], bool]:
    f, v = c.field, c.value
    if v is None:
        return (lambda r: r[f] is None) if c.op == "=" else (lambda r: r[f] is not None)
    if c.op == "=":
        return lambda r: r[f] == v
    if c.op == "!=":
        return lambda r: r[f] is None or r[f] != v
    if c.op == "LIKE":
        like = like_matcher(v)
        return lambda r: r[f] is not None and like(r[f])
    if c.op == "IN":
        values = frozenset(v)
        return lambda r: r[f] in values
    if c.op == ">":
        return lambda r: r[f] is not None and r[f] > v
    if c.op == ">=":
        return lambda r: r[f] is not None and r[f] >= v
    if c.op == "<":
        return lambda r: r[f] is not None and r[f] < v
    return lambda r: r[f] is not None and r[f] <= v
