"""Schedules: tasks enqueued at due times, cron or interval, by any number of processes.

``await storage.store_schedule("nightly", "0 3 * * *", {"task_type": "report"},
timezone="Europe/Berlin")`` stores a schedule; a scheduler — :func:`run_scheduler`, or one
``fire_due_schedules()`` call now and then — enqueues a task for each due time. Any number of
processes may run it: each due time is enqueued exactly once, because firing is one
compare-and-set of the schedule's ``next_due`` in the same transaction as the task's insert,
and the task's id is made of the schedule's name and the due time (a second insert of it
would be a conflict).

* ``cron_or_interval``: a cron expression (5 fields, or 6 with seconds first), read by the
  ``cronsim`` library (the ``cron`` extra, imported only for a cron schedule), in the
  schedule's ``timezone`` (an IANA name, through ``zoneinfo``; daylight-saving changes are
  honoured: "30 2 * * *" runs once on the day the clocks skip 02:30, at 03:00); or an
  interval: a ``timedelta``, seconds, or text such as ``30s``, ``5m``, ``every 2h``. An
  interval schedule is first due one interval after it is stored.
* ``missed``: what happens to due times that passed while no scheduler ran (downtime).
  A due time reached more than :data:`GRACE_US` late counts as missed (so a schedule whose
  period is shorter than that never misses: its latest due time is always recent). ``skip``
  (the default) drops missed runs: the schedule waits for its next due time. ``run_once``
  collapses them into one run, enqueued at once for the latest missed due time. Due times
  within the grace fire one by one, each with its task; the next due time is the first one
  after now.
* ``task_template``: a :class:`~ruv_swarm_persistence.models.TaskModel` (its type, payload,
  priority, ``max_retries`` and ``concurrency_key``) or a dict with ``task_type`` and
  optionally those. The task enqueued has the id and the ``dedup_key``
  ``<name>@<due time, ISO>``.

Storing a schedule of an existing name replaces its definition (every process may declare
its schedules at start); its next due time stays unless the timing changed. A paused
schedule enqueues nothing; resumed, it is next due at its first due time after now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Protocol

from . import _json, codec
from ._time import from_us, to_us
from .codec import Limits, Record
from .errors import StorageError, ValidationError
from .models import TaskModel, TaskPriority

__all__ = [
    "GRACE_US",
    "MISSED",
    "ScheduleModel",
    "Timing",
    "decode_schedule",
    "due_plan",
    "run_scheduler",
    "scheduled_task",
    "timing",
]

log = logging.getLogger(__name__)

#: What a schedule does with due times missed while no scheduler ran.
MISSED: Final = ("skip", "run_once")
#: A due time reached later than this counts as missed (a scheduler polls every second or so).
GRACE_US: Final = 60_000_000
#: The longest schedule name: the task id adds ``@`` and an ISO time to it.
MAX_NAME: Final = 200

_UNITS: Final = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
                 "d": 86_400_000_000, "w": 604_800_000_000}  # fmt: skip
_INTERVAL: Final = re.compile(r"^(?:every\s+)?(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$")


@dataclass(slots=True)
class ScheduleModel:
    """A stored schedule, as ``get_schedule`` / ``list_schedules`` return it."""

    name: str
    spec: str
    task_template: dict[str, Any]
    timezone: str
    missed: str
    paused: bool
    next_due: datetime
    last_due: datetime | None
    created_at: datetime
    updated_at: datetime


def _zone(name: str) -> tzinfo:
    """The time zone ``name``; UTC without the time zone database, which Pyodide lacks."""
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Timing:
    """A schedule's due times: a cron expression in a time zone, or a fixed interval."""

    spec: str
    timezone: str
    interval_us: int | None

    def next_after(self, us: int) -> int:
        """The first due time strictly after ``us``."""
        if self.interval_us is not None:
            return us + self.interval_us
        from cronsim import CronSim

        local = from_us(us).astimezone(_zone(self.timezone))
        return to_us(next(CronSim(self.spec, local)))

    def latest_at_or_before(self, first: int, now: int) -> int:
        """The last due time in ``[first, now]``, ``first`` being one (and ``<= now``)."""
        if self.interval_us is not None:
            return first + (now - first) // self.interval_us * self.interval_us
        latest = first
        for _ in range(1000):
            probe = self.next_after(latest)
            if probe > now:
                return latest
            latest = probe
        # Far behind (a frequent schedule after a long downtime): look back from now.
        from cronsim import CronSim

        local = from_us(now + 1).astimezone(_zone(self.timezone))
        return max(to_us(next(CronSim(self.spec, local, reverse=True))), latest)


def _interval_us(value: Any) -> int | None:
    """``value`` as an interval in µs, or ``None`` if it is not one (a cron expression)."""
    if isinstance(value, timedelta):
        us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValidationError("must be finite", field="cron_or_interval")
        us = round(value * 1_000_000)
    elif isinstance(value, str):
        match = _INTERVAL.match(value.strip().lower())
        if match is None:
            return None
        us = round(float(match.group(1)) * _UNITS[match.group(2)])
    else:
        raise ValidationError(
            f"must be a cron expression or an interval, got {type(value).__name__}",
            field="cron_or_interval",
        )
    if us <= 0:
        raise ValidationError("an interval must be positive", field="cron_or_interval")
    if us > 2**60:
        raise ValidationError("an interval must be shorter than the range of times",
                              field="cron_or_interval")  # fmt: skip
    return us


def timing(cron_or_interval: Any, timezone: Any) -> Timing:
    """Check a schedule's timing arguments; its :class:`Timing`."""
    if not isinstance(timezone, str) or not timezone:
        raise ValidationError("must be an IANA time zone name like 'UTC'", field="timezone")
    codec.check_text(timezone, "timezone")
    try:
        _zone(timezone)
    except Exception:  # not found, or not a key at all (a path, a NUL)
        raise ValidationError(f"unknown time zone {timezone!r}", field="timezone") from None
    interval = _interval_us(cron_or_interval)
    if interval is not None:
        spec = (
            codec.check_text(cron_or_interval, "cron_or_interval").strip()
            if isinstance(cron_or_interval, str)
            else f"{interval / 1e6:g}s"
        )
        return Timing(spec, timezone, interval)
    spec = " ".join(codec.check_text(cron_or_interval, "cron_or_interval").split())
    try:
        from cronsim import CronSim
    except ModuleNotFoundError:
        raise StorageError(
            "cron schedules need the cronsim library: pip install 'ruv-swarm-persistence[cron]'"
        ) from None
    try:
        next(CronSim(spec, datetime(2000, 1, 1)))
    except Exception as exc:  # CronSimError, or anything else the parser trips on
        raise ValidationError(
            f"{spec!r} is not a cron expression or an interval (30s, 5m): {exc}",
            field="cron_or_interval",
        ) from None
    return Timing(spec, timezone, None)


def stored_timing(rec: Record) -> Timing:
    """The timing of a stored schedule record."""
    return timing(rec["spec"], rec["timezone"])


def _template(value: Any, limits: Limits) -> str:
    """The task template as stored JSON: type, payload, priority, max_retries."""
    if isinstance(value, TaskModel):
        value = {
            "task_type": value.task_type,
            "payload": value.payload,
            "priority": int(value.priority),
            "max_retries": value.max_retries,
            "concurrency_key": value.concurrency_key,
        }
        if value["concurrency_key"] is None:
            del value["concurrency_key"]
    if not isinstance(value, dict):
        raise ValidationError(
            f"must be a TaskModel or a dict, got {type(value).__name__}", field="task_template"
        )
    unknown = set(value) - {"task_type", "payload", "priority", "max_retries", "concurrency_key"}
    if unknown:
        raise ValidationError(
            f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: task_type, "
            "payload, priority, max_retries, concurrency_key",
            field="task_template",
        )
    if "task_type" not in value:
        raise ValidationError("needs a task_type", field="task_template")
    task = TaskModel.new(
        value["task_type"],
        value.get("payload"),
        value.get("priority", TaskPriority.Medium),
        id="template",
    )
    if "max_retries" in value:
        task.max_retries = value["max_retries"]
    task.concurrency_key = value.get("concurrency_key")
    codec.encode_task(task, limits)  # every field checked as a stored task's would be
    stored = {
        "task_type": task.task_type,
        "payload": task.payload,
        "priority": int(task.priority),
        "max_retries": task.max_retries,
    }
    if task.concurrency_key is not None:
        stored["concurrency_key"] = task.concurrency_key
    return codec._json_field(stored, "task_template", limits)


def check_name(name: Any, limits: Limits) -> str:
    """A schedule's name: an id of at most :data:`MAX_NAME` characters."""
    codec.check_id(name, "name", limits)
    if len(name) > MAX_NAME:
        raise ValidationError(f"must be at most {MAX_NAME} characters", field="name")
    return str(name)


def schedule_record(
    name: Any,
    cron_or_interval: Any,
    task_template: Any,
    timezone: Any,
    missed: Any,
    limits: Limits,
    now: int,
) -> Record:
    """A new schedule's record, every argument checked (``next_due`` from ``now``)."""
    check_name(name, limits)
    when = timing(cron_or_interval, timezone)
    template = _template(task_template, limits)
    if missed not in MISSED:
        raise ValidationError(f"must be one of {', '.join(MISSED)}", field="missed")
    return {
        "name": name,
        "spec": when.spec,
        "timezone": when.timezone,
        "missed": missed,
        "template": template,
        "paused": 0,
        "next_due": when.next_after(now),
        "last_due": None,
        "created_at": now,
        "updated_at": now,
    }


def _as_field(attr: str, check: Any, *args: Any) -> Any:
    """``check(*args)``, its ``ValidationError`` naming the schedule's attribute."""
    try:
        return check(*args)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=f"schedule.{attr}") from None


def _time(value: Any, attr: str) -> int:
    return int(_as_field(attr, codec.check_time, value, f"schedule.{attr}"))


def restored_record(schedule: Any, limits: Limits) -> Record:
    """The record of a schedule read from another storage (``restore_schedule``), every
    field checked as ``store_schedule`` checks its arguments; its times kept as they are."""
    if not isinstance(schedule, ScheduleModel):
        raise ValidationError(
            f"expected ScheduleModel, got {type(schedule).__name__}", field="schedule"
        )
    name = _as_field("name", check_name, schedule.name, limits)
    when = _as_field("spec", timing, schedule.spec, "UTC")
    when = _as_field("timezone", timing, when.spec, schedule.timezone)
    template = _as_field("task_template", _template, schedule.task_template, limits)
    if schedule.missed not in MISSED:
        raise ValidationError(f"must be one of {', '.join(MISSED)}", field="schedule.missed")
    if not isinstance(schedule.paused, bool):
        raise ValidationError(
            f"must be True or False, got {type(schedule.paused).__name__}",
            field="schedule.paused",
        )
    last = schedule.last_due
    return {
        "name": name,
        "spec": when.spec,
        "timezone": when.timezone,
        "missed": schedule.missed,
        "template": template,
        "paused": int(schedule.paused),
        "next_due": _time(schedule.next_due, "next_due"),
        "last_due": None if last is None else _time(last, "last_due"),
        "created_at": _time(schedule.created_at, "created_at"),
        "updated_at": _time(schedule.updated_at, "updated_at"),
    }


def decode_schedule(rec: Record) -> ScheduleModel:
    """A stored schedule record as a :class:`ScheduleModel`."""
    last = rec["last_due"]
    return ScheduleModel(
        name=rec["name"],
        spec=rec["spec"],
        task_template=_json.loads(rec["template"]),
        timezone=rec["timezone"],
        missed=rec["missed"],
        paused=bool(rec["paused"]),
        next_due=from_us(rec["next_due"]),
        last_due=None if last is None else from_us(last),
        created_at=from_us(rec["created_at"]),
        updated_at=from_us(rec["updated_at"]),
    )


def due_plan(rec: Record, now: int) -> tuple[int | None, int] | None:
    """What a pass does next with a schedule at ``now``: ``None`` if it is not due, else the
    due time to enqueue a task for (``None``: missed runs skipped) and the next due time.

    A due time at most :data:`GRACE_US` old fires as it is (a pass calls this again until
    the schedule is not due, so each one fires). Older ones were missed: they go, except
    that ``run_once`` fires the latest of them (unless a due time within the grace follows,
    which then stands for them).
    """
    if rec["paused"] or rec["next_due"] > now:
        return None
    when = stored_timing(rec)
    first = rec["next_due"]
    if now - first <= GRACE_US:
        return first, when.next_after(first)
    latest = when.latest_at_or_before(first, now)
    fire = rec["missed"] == "run_once" or now - latest <= GRACE_US
    return (latest if fire else None), when.next_after(latest)


def scheduled_task(rec: Record, due: int, now: int) -> TaskModel:
    """The task a schedule enqueues for the due time ``due``."""
    template = _json.loads(rec["template"])
    key = f"{rec['name']}@{from_us(due).isoformat()}"
    task = TaskModel.new(
        template["task_type"],
        template["payload"],
        TaskPriority(template["priority"]),
        id=key,
        dedup_key=key,
        concurrency_key=template.get("concurrency_key"),
    )
    task.max_retries = template["max_retries"]
    task.created_at = task.updated_at = from_us(now)
    return task


class _Schedules(Protocol):
    """What the scheduler needs of a storage."""

    async def fire_due_schedules(self) -> list[str]: ...


async def run_scheduler(
    storage: _Schedules, *, poll: float = 1.0, stop: asyncio.Event | None = None
) -> None:
    """Enqueue the due tasks of every schedule until ``stop`` is set (or cancelled).

    Run it in as many processes as you like: each due time is enqueued once. A pass that
    fails (the database unreachable for a moment) is logged and tried again next poll.
    """
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll > 0:
        raise ValidationError("must be a positive number of seconds", field="poll")
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await storage.fire_due_schedules()
        except StorageError as exc:
            if "closed" in str(exc):
                return
            log.warning("scheduler pass failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll)
