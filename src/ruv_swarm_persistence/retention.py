"""Retention: how much history each table keeps, and the plan a maintenance pass carries out.

A :class:`RetentionPolicy` says, per table, how long to keep rows (an age) or how many to
keep (the newest), or both (a row goes when either says so). It is a storage option::

    storage = await init_storage("sqlite:///swarm.db?retention=tasks:7d,events:30d,metrics:100000")
    storage = await init_storage("swarm.db", retention=RetentionPolicy(events=Keep(age=86400)))

and the storage applies it by itself, as maintenance, every ``every`` (default a minute) while
it is open, and on request (``apply_retention``). What it removes:

* ``tasks``: completed tasks, by completion time. A completed task is kept while a task
  that depends on it may still run (one unfinished, or failed and so open to
  ``retry_task``): those read its result and count it as done. Once it is removed, the
  tasks that named it keep their ``dependencies`` as they were, and a new task may not name
  it (it is unknown). Failed tasks (dead letters) and cancelled ones are never removed.
* ``events``: by timestamp; sequence numbers are never handed out again.
* ``messages``: read messages, by read time (a read message without one counts as read at
  the epoch). Unread mail is never removed.
* ``metrics``: by timestamp.

Count-based retention keeps the newest *n* rows by that time (ties by id). Every process
that opens a database with a policy runs the pass; passes are idempotent, so several at once
only repeat each other's work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Final

from .errors import ValidationError

__all__ = [
    "DEFAULT_EVERY_US",
    "TABLES",
    "Cut",
    "Keep",
    "RetentionPlan",
    "RetentionPolicy",
    "RetentionReport",
    "parse_retention",
    "retention_counts",
]

#: The tables a policy covers, in the order reports list them.
TABLES: Final = ("tasks", "events", "messages", "metrics")
#: How often the maintenance pass runs by default.
DEFAULT_EVERY_US: Final = 60_000_000

_UNITS: Final = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
                 "d": 86_400_000_000, "w": 604_800_000_000}  # fmt: skip
_AGE: Final = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_MAX_US: Final = 2**62


def _age_us(value: Any, field: str) -> int:
    """An age: a ``timedelta``, seconds, or text such as ``30s``, ``10m``, ``7d``."""
    if isinstance(value, str):
        match = _AGE.match(value.strip())
        if match is None:
            raise ValidationError(f"{value!r} is not an age like 30s, 10m, 12h, 7d", field=field)
        us = round(float(match.group(1)) * _UNITS[match.group(2)])
    elif isinstance(value, timedelta):
        us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError("must be finite", field=field)
        us = round(value * 1_000_000)
    else:
        raise ValidationError(
            f"must be an age (timedelta, seconds or text like 7d), got {type(value).__name__}",
            field=field,
        )
    if us <= 0:
        raise ValidationError("must be positive", field=field)
    if us > _MAX_US:
        raise ValidationError("is longer than the range of times", field=field)
    return us


def _count(value: Any, field: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("must be a non-negative number of rows", field=field)
    if value > _MAX_US:
        raise ValidationError("must fit in 64 bits", field=field)
    return value


@dataclass(frozen=True, slots=True)
class Keep:
    """How much of one table to keep: rows younger than ``age``, and/or the newest ``count``.

    ``age`` takes a ``timedelta``, seconds or text (``7d``); kept as microseconds in
    ``age_us``. A row goes when either limit says so.
    """

    age: Any = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.age is None and self.count is None:
            raise ValidationError("give an age, a count, or both", field="retention")
        if self.age is not None:
            object.__setattr__(self, "age", timedelta(microseconds=_age_us(self.age, "age")))
        if self.count is not None:
            object.__setattr__(self, "count", _count(self.count, "count"))

    @property
    def age_us(self) -> int | None:
        """The age in microseconds, or ``None``."""
        age: timedelta | None = self.age
        if age is None:
            return None
        return (age.days * 86_400 + age.seconds) * 1_000_000 + age.microseconds

    def describe(self) -> str:
        """``7d``, ``100000 rows`` or ``7d, 100000 rows``."""
        parts = []
        us = self.age_us
        if us is not None:
            for unit in ("w", "d", "h", "m", "s", "ms"):
                if us % _UNITS[unit] == 0:
                    parts.append(f"{us // _UNITS[unit]}{unit}")
                    break
            else:
                parts.append(f"{us}us")
        if self.count is not None:
            parts.append(f"{self.count} rows")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What each table keeps (``None``: everything) and how often the pass runs."""

    tasks: Keep | None = None
    events: Keep | None = None
    messages: Keep | None = None
    metrics: Keep | None = None
    every: Any = None

    def __post_init__(self) -> None:
        for name in TABLES:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Keep):
                raise ValidationError("must be a Keep", field=f"retention.{name}")
        every = DEFAULT_EVERY_US if self.every is None else _age_us(self.every, "retention.every")
        object.__setattr__(self, "every", timedelta(microseconds=every))

    @property
    def every_us(self) -> int:
        """How often the pass runs, in microseconds."""
        every: timedelta = self.every
        return (every.days * 86_400 + every.seconds) * 1_000_000 + every.microseconds

    def describe(self) -> dict[str, str]:
        """Each table's rule as text (tables kept whole are left out)."""
        return {
            name: keep.describe() for name in TABLES if (keep := getattr(self, name)) is not None
        }


def _keep_text(text: str, field: str) -> Keep:
    """``7d``, ``100000`` or ``7d+100000`` (both)."""
    age: str | None = None
    count: str | None = None
    for part in text.split("+"):
        part = part.strip()
        if part.isdigit():
            count = part
        else:
            age = part
    return Keep(age=None if age is None else _age_us(age, field) / 1e6,
                count=None if count is None else _count(count, field))  # fmt: skip


def retention_counts(removed: Any) -> dict[str, int]:
    """``restore_retention_record``'s ``removed``: rows per table (a table left out: 0)."""
    if not isinstance(removed, Mapping):
        raise ValidationError(
            f"must be a mapping of table to rows, got {type(removed).__name__}", field="removed"
        )
    counts = dict.fromkeys(TABLES, 0)
    for name, rows in removed.items():
        if name not in counts:
            raise ValidationError(
                f"unknown table {name!r}; known: {', '.join(TABLES)}", field="removed"
            )
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= _MAX_US:
            raise ValidationError("must be a non-negative integer", field=f"removed.{name}")
        counts[name] = int(rows)
    return counts


def parse_retention(value: Any, name: str = "retention") -> RetentionPolicy | None:
    """The ``retention`` option: a policy, a dict of table → Keep/text, or URL text.

    URL text lists ``table:rule`` pairs separated by commas, a rule being an age (``7d``), a
    count (``100000``) or both (``7d+100000``); ``every:5m`` sets how often the pass runs:
    ``?retention=tasks:7d,events:30d,metrics:100000,every:5m``. ``name`` is what errors call
    the value (``retention.events`` becomes ``policy.events`` for an argument ``policy``).
    """
    try:
        return _parse_retention(value)
    except ValidationError as exc:
        field = exc.field or ""
        if name == "retention" or not (field == "retention" or field.startswith("retention.")):
            raise
        raise ValidationError(exc.message, field=name + field.removeprefix("retention")) from None


def _parse_retention(value: Any) -> RetentionPolicy | None:
    if value is None or isinstance(value, RetentionPolicy):
        return value
    if isinstance(value, str):
        pairs: dict[str, Any] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            name, sep, rule = item.partition(":")
            if not sep:
                raise ValidationError(
                    f"{item!r} is not table:rule (like events:30d)", field="retention"
                )
            pairs[name.strip()] = rule.strip()
        value = pairs
    if not isinstance(value, dict):
        raise ValidationError(
            f"must be a RetentionPolicy, a dict or text, got {type(value).__name__}",
            field="retention",
        )
    known = {f.name for f in fields(RetentionPolicy)}
    args: dict[str, Any] = {}
    for name, rule in value.items():
        if name not in known:
            raise ValidationError(
                f"unknown table {name!r}; known: {', '.join((*TABLES, 'every'))}",
                field="retention",
            )
        field = f"retention.{name}"
        if name == "every" or isinstance(rule, Keep):
            args[name] = rule
        elif isinstance(rule, str):
            args[name] = _keep_text(rule, field)
        else:
            try:
                if isinstance(rule, int) and not isinstance(rule, bool):
                    args[name] = Keep(count=rule)
                else:
                    args[name] = Keep(age=rule)
            except ValidationError as exc:
                # Keep names its own parameter (count, age): name the table's rule instead.
                raise ValidationError(exc.message, field=field) from None
    return RetentionPolicy(**args)


@dataclass(frozen=True, slots=True)
class Cut:
    """What one table loses in a pass: rows older than ``before`` (µs) and/or beyond the
    newest ``keep``."""

    before: int | None
    keep: int | None

    def bound(self, edge: tuple[Any, Any] | None) -> tuple[int | None, Any]:
        """The rows this cut removes, as one upper bound ``(t, id)`` on ``(time, id)``.

        ``edge`` is the newest ``(time, id)`` beyond the count kept (``None`` when there is
        none). A row goes when its time is before ``before`` or it is at or before ``edge``;
        each of these is a range below the other's, so the wider one alone is the cut: up to
        and including ``(t, id)``, or before ``t`` when ``id`` is ``None``. Statements take it
        as ``time <= t AND (time < t OR id <= id)``, a range of one index. ``(None, None)``
        removes nothing.
        """
        if edge is None or edge[0] is None:
            return (self.before, None)
        if self.before is not None and edge[0] < self.before:
            return (self.before, None)
        return (int(edge[0]), edge[1])


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """A policy made concrete at a time ``now``: one :class:`Cut` per table (or ``None``)."""

    now: int
    tasks: Cut | None = None
    events: Cut | None = None
    messages: Cut | None = None
    metrics: Cut | None = None

    @classmethod
    def of(cls, policy: RetentionPolicy, now: int) -> RetentionPlan:
        """The plan of ``policy`` at ``now`` (µs)."""
        cuts: dict[str, Cut] = {}
        for name in TABLES:
            keep: Keep | None = getattr(policy, name)
            if keep is not None:
                age = keep.age_us
                cuts[name] = Cut(None if age is None else now - age, keep.count)
        return cls(now, **cuts)


@dataclass(slots=True)
class RetentionReport:
    """What ``retention_report`` tells: the policy of this storage, and the database's record
    of maintenance (by any process): when a pass last ran and how many rows passes removed in
    all, per table."""

    policy: RetentionPolicy | None
    last_run: datetime | None
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
