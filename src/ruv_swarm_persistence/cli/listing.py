"""Read-only commands: status, agents, tasks, events, messages, metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.text import Text

from ..migrations import MigrationRunner, MigrationTarget
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
from ..query import QueryBuilder
from ..storage import MetricAggregate, Storage
from ._app import app
from ._common import (
    CliError,
    CsvOption,
    DbOption,
    JsonOption,
    LimitOption,
    OffsetOption,
    TsvOption,
    UsageError,
    UtcOption,
    age,
    cell,
    compact,
    count,
    db_url,
    decimals,
    display_url,
    err,
    number,
    one_format,
    opened,
    out,
    parse_duration,
    parse_time,
    parse_where,
    print_delimited,
    print_items,
    print_json,
    run,
    styled,
    table,
    when,
)

WhereOption = Annotated[
    str | None,
    typer.Option(
        "--where",
        metavar="JSON",
        help="Extra filters as a JSON object, e.g. '{\"priority\": 3}' (a list means any of).",
    ),
]
#: How --since and --until read a time: as date(1) and journalctl do.
_WHEN = (
    "an age (30s, 10m, 2h, 1d) or an ISO time: 2026-12-03T10:00 is local time "
    "(UTC with --utc); add Z or +02:00 for another zone."
)
SinceOption = Annotated[
    str | None, typer.Option("--since", metavar="WHEN", help=f"Only at or after WHEN: {_WHEN}")
]
UntilOption = Annotated[
    str | None, typer.Option("--until", metavar="WHEN", help=f"Only before WHEN: {_WHEN}")
]


def _limited(builder: QueryBuilder[Any], limit: int, offset: int = 0) -> QueryBuilder[Any]:
    builder = builder.offset(offset) if offset else builder
    return builder.limit(limit) if limit else builder


def _page(found: list[Any], limit: int, offset: int) -> list[Any]:
    """``--offset``/``--limit`` on rows filtered in Python rather than by the query."""
    return found[offset : offset + limit if limit else None]


def _first(limit: int, offset: int, shown: int) -> str:
    """What a listing's title adds when it shows one page of rows."""
    if offset:
        return f" (from row {offset + 1:,})"
    if limit and shown == limit:
        return f" (first {limit:,}; --limit 0 for all)"
    return ""


# --- status -------------------------------------------------------------------------------


async def _status(storage: Storage, url: str, integrity: bool) -> dict[str, Any]:
    tasks: dict[str, int] = await storage.count_by(QueryBuilder(TaskModel), "status")
    agents: dict[str, int] = await storage.count_by(QueryBuilder(AgentModel), "status")
    last_event = await storage.query(QueryBuilder(EventModel).order_by("sequence", True).limit(1))
    unread = await storage.count(QueryBuilder(MessageModel).where_eq("read", False))
    last_metric = await storage.query(
        QueryBuilder(MetricModel).order_by("timestamp", True).limit(1)
    )
    ready = await storage.get_ready_tasks(limit=10_001)
    info: dict[str, Any] = {
        "database": display_url(url),
        "backend": type(storage).__name__,
        "path": getattr(storage, "path", None),
        "size_bytes": await storage.get_storage_size(),
        "schema_version": None,
        "agents": dict(sorted(agents.items())),
        "agents_total": sum(agents.values()),
        "tasks": {s.value: 0 for s in TaskStatus} | tasks,
        "tasks_total": sum(tasks.values()),
        "tasks_ready": len(ready),
        "events_last_sequence": last_event[0].sequence if last_event else 0,
        "events_last_at": last_event[0].timestamp if last_event else None,
        "messages_unread": unread,
        "metrics_last_at": last_metric[0].timestamp if last_metric else None,
    }
    scheduled = await storage.list_schedules()
    running = [x.next_due for x in scheduled if not x.paused]
    info["schedules"] = {
        "total": len(scheduled),
        "paused": len(scheduled) - len(running),
        "next_due": min(running, default=None),
    }
    report = await storage.retention_report()
    info["retention"] = {
        "policy": None if report.policy is None else report.policy.describe(),
        "last_run": report.last_run,
        "removed": report.removed,
    }
    if isinstance(storage, MigrationTarget):
        info["schema_version"] = await MigrationRunner(storage).current_version()
    if integrity:
        check = getattr(storage, "integrity_check", None)
        if check is None:
            raise CliError(f"{type(storage).__name__} has no integrity check")
        problems = await check()
        info["integrity"] = problems if problems else "ok"
    return info


@app.command()
def status(
    ctx: typer.Context,
    db: DbOption = None,
    json: JsonOption = False,
    integrity: Annotated[
        bool, typer.Option("--integrity", help="Also run the backend's integrity check.")
    ] = False,
) -> None:
    """Overview: agents and tasks by status, events, unread mail, size, schema version."""
    url = db_url(ctx, db)

    async def go() -> dict[str, Any]:
        async with opened(url) as storage:
            return await _status(storage, url, integrity)

    info = run(go())
    if json:
        print_json(info)
        return
    head = table(f"swarm database {info['database']}", "", "")
    head.show_header = False
    head.add_row("backend", cell(info["backend"]))
    if info["path"]:
        head.add_row("file", cell(info["path"]))
    head.add_row("size", cell(f"{info['size_bytes'] / 1024:,.0f} KiB"))
    if info["schema_version"] is not None:
        head.add_row("schema version", cell(info["schema_version"]))
    head.add_row(
        "events",
        cell(
            f"{info['events_last_sequence']:,} (last {age(info['events_last_at'])} ago)"
            if info["events_last_at"]
            else "none"
        ),
    )
    head.add_row("unread messages", cell(f"{info['messages_unread']:,}"))
    head.add_row(
        "last metric",
        cell(f"{age(info['metrics_last_at'])} ago" if info["metrics_last_at"] else "none"),
    )
    head.add_row("retention", cell(_retention_text(info["retention"])))
    sched = info["schedules"]
    if sched["total"]:
        soon = f", next due {when(sched['next_due'])}" if sched["next_due"] else ""
        head.add_row("schedules", cell(f"{sched['total']:,} ({sched['paused']:,} paused){soon}"))
    if "integrity" in info:
        ok = info["integrity"] == "ok"
        head.add_row(
            "integrity",
            Text("ok" if ok else "; ".join(info["integrity"]), style="green" if ok else "red"),
        )
    out.print(head)
    agents_t = table("agents", "status", "count", numeric={"count"})
    for k, v in info["agents"].items():
        agents_t.add_row(styled(k), count(v))
    agents_t.add_row(cell("total"), count(info["agents_total"]))
    tasks_t = table("tasks", "status", "count", numeric={"count"})
    for k, v in info["tasks"].items():
        tasks_t.add_row(styled(k), count(v))
    tasks_t.add_row(cell("ready now"), count(info["tasks_ready"]))
    tasks_t.add_row(cell("total"), count(info["tasks_total"]))
    out.print(Columns([agents_t, tasks_t], padding=(0, 6)))


def _retention_text(retention: dict[str, Any]) -> str:
    """The policy given with the URL (``?retention=``), and the database's record of passes."""
    policy = retention["policy"]
    rules = ", ".join(f"{t} {r}" for t, r in policy.items()) if policy else "no policy given"
    if retention["last_run"] is None:
        return f"{rules}; never ran"
    removed = ", ".join(f"{n:,} {t}" for t, n in retention["removed"].items() if n)
    return f"{rules}; last ran {age(retention['last_run'])} ago, removed {removed or 'nothing'}"


# --- agents -------------------------------------------------------------------------------


@app.command()
def agents(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", metavar="STATUS", help="Only agents with this status."),
    ] = None,
    agent_type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help="Only agents of this type.")
    ] = None,
    where: WhereOption = None,
    limit: LimitOption = 0,
    offset: OffsetOption = 0,
    db: DbOption = None,
    json: JsonOption = False,
    as_csv: CsvOption = False,
    as_tsv: TsvOption = False,
) -> None:
    """Registered agents: status, capabilities, heartbeat age, tasks held."""
    url = db_url(ctx, db)
    fmt = one_format(json, as_csv, as_tsv)
    _check_status(status, [s.value for s in AgentStatus])
    builder = QueryBuilder(AgentModel).order_by("created_at")
    if status:
        builder = builder.where_in("status", status)
    if agent_type:
        builder = builder.where_eq("agent_type", agent_type)
    builder = _limited(parse_where(where, builder), limit, offset)

    async def go() -> tuple[list[AgentModel], Counter[str]]:
        async with opened(url) as storage:
            found = await storage.query(builder)
            held = await storage.query(
                QueryBuilder(TaskModel).where_in("status", ["assigned", "running"])
            )
        return found, Counter(t.assigned_to or "" for t in held)

    found, held = run(go())
    if fmt != "table":
        print_items(found, fmt)
        return
    now = datetime.now(UTC)
    t = table(
        f"{len(found):,} agents{_first(limit, offset, len(found))}",
        "id",
        "type",
        "status",
        "capabilities",
        "heartbeat",
        "held",
        numeric={"heartbeat", "held"},
    )
    for a in found:
        t.add_row(
            cell(a.id),
            cell(a.agent_type),
            styled(a.status.value),
            cell(", ".join(a.capabilities)),
            cell(f"{age(a.heartbeat, now)} ago"),
            count(held.get(a.id, 0)),
        )
    out.print(t)


def _check_status(given: list[str] | None, known: list[str]) -> None:
    """Refuse a --status that no row can have (a typo would otherwise list nothing)."""
    for s in given or ():
        if s not in known:
            raise UsageError(f"--status: {s!r} is not one of {', '.join(known)}")


# --- tasks --------------------------------------------------------------------------------


@app.command()
def tasks(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", "-s", metavar="STATUS", help="Only tasks with this status (repeatable)."
        ),
    ] = None,
    task_type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help="Only tasks of this type.")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", "-a", metavar="AGENT", help="Only tasks assigned to this agent."),
    ] = None,
    ready: Annotated[
        bool, typer.Option("--ready", help="Only tasks ready to claim now, in claim order.")
    ] = False,
    failed: Annotated[
        bool,
        typer.Option(
            "--failed",
            help="Dead letters: tasks failed for good, most recent failure first "
            "('swarmdb retry' requeues them).",
        ),
    ] = False,
    where: WhereOption = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    db: DbOption = None,
    json: JsonOption = False,
    as_csv: CsvOption = False,
    as_tsv: TsvOption = False,
) -> None:
    """Tasks, highest priority first: filter by status, type, agent, readiness, failure."""
    url = db_url(ctx, db)
    fmt = one_format(json, as_csv, as_tsv)
    _check_status(status, [x.value for x in TaskStatus])
    if failed and (status or ready or agent or where):
        raise UsageError("--failed lists dead letters: only --type, --limit and --offset apply")
    builder = QueryBuilder(TaskModel).order_by("priority", desc=True).order_by("created_at")
    if status:
        builder = builder.where_in("status", status)
    if task_type:
        builder = builder.where_eq("task_type", task_type)
    if agent:
        builder = builder.where_eq("assigned_to", agent)
    builder = parse_where(where, builder)

    async def go() -> list[TaskModel]:
        async with opened(url) as storage:
            if failed:
                most = limit + offset if limit else 2**62
                return _page(await storage.get_failed_tasks(task_type, most), 0, offset)
            if ready:
                wanted = {t.id for t in await storage.query(builder)}
                found = [t for t in await storage.get_ready_tasks() if t.id in wanted]
                return _page(found, limit, offset)
            return await storage.query(_limited(builder, limit, offset))

    found = run(go())
    if fmt != "table":
        print_items(found, fmt)
        return
    if failed:
        _print_dead_letters(found, limit, offset)
        return
    t = table(
        f"{len(found):,} tasks{_first(limit, offset, len(found))}",
        "id",
        "type",
        "priority",
        "status",
        "agent",
        "tries",
        "deps",
        "updated",
        "error",
        numeric={"tries", "deps", "updated"},
    )
    now = datetime.now(UTC)
    for task in found:
        t.add_row(
            cell(task.id),
            cell(task.task_type),
            cell(TaskPriority(task.priority).name),
            styled(task.status.value),
            cell(task.assigned_to),
            cell(f"{task.retry_count}/{task.max_retries}"),
            count(len(task.dependencies)),
            cell(f"{age(task.updated_at, now)} ago"),
            Text(compact(task.error or "", 40), style="red"),
        )
    out.print(t)


def _print_dead_letters(found: list[TaskModel], limit: int, offset: int) -> None:
    t = table(
        f"{len(found):,} failed tasks{_first(limit, offset, len(found))}",
        "id",
        "type",
        "priority",
        "tries",
        "failed",
        "error",
        numeric={"tries", "failed"},
    )
    now = datetime.now(UTC)
    for task in found:
        t.add_row(
            cell(task.id),
            cell(task.task_type),
            cell(TaskPriority(task.priority).name),
            cell(f"{task.retry_count + 1}"),
            cell(f"{age(task.completed_at, now)} ago" if task.completed_at else ""),
            Text(compact(task.error or "", 60), style="red"),
        )
    out.print(t)


# --- events -------------------------------------------------------------------------------


def _event_query(
    agent: str | None,
    event_type: list[str] | None,
    task: str | None,
    since: str | None,
    until: str | None,
    where: str | None,
) -> QueryBuilder[EventModel]:
    builder = QueryBuilder(EventModel)
    if agent:
        builder = builder.where_eq("agent_id", agent)
    if event_type:
        builder = builder.where_in("event_type", event_type)
    if task:
        builder = builder.where_eq("task_id", task)
    if since:
        builder = builder.where_gte("timestamp", parse_time(since, "--since"))
    if until:
        builder = builder.where_lt("timestamp", parse_time(until, "--until"))
    return parse_where(where, builder)


AgentFilter = Annotated[
    str | None, typer.Option("--agent", "-a", metavar="AGENT", help="Only events of this agent.")
]
TypeFilter = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", metavar="TYPE", help="Only events of this type (repeatable)."),
]


@app.command()
def events(
    ctx: typer.Context,
    agent: AgentFilter = None,
    event_type: TypeFilter = None,
    task: Annotated[
        str | None, typer.Option("--task", metavar="TASK", help="Only events of this task.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    where: WhereOption = None,
    limit: LimitOption = 50,
    offset: Annotated[
        int,
        typer.Option(
            "--offset",
            min=0,
            metavar="N",
            help="Skip the newest N first (pages with --limit).",
            show_default=False,
        ),
    ] = 0,
    utc: UtcOption = False,
    db: DbOption = None,
    json: JsonOption = False,
    as_csv: CsvOption = False,
    as_tsv: TsvOption = False,
) -> None:
    """The event log, oldest first (the newest --limit); --json prints JSON lines."""
    url = db_url(ctx, db)
    fmt = one_format(json, as_csv, as_tsv)
    builder = _event_query(agent, event_type, task, since, until, where)

    async def go() -> list[EventModel]:
        async with opened(url) as storage:
            newest = await storage.query(
                _limited(builder.order_by("sequence", True), limit, offset)
            )
        return newest[::-1]

    found = run(go())
    if fmt != "table":
        print_items(found, fmt, lines=True)
        return
    page = ""
    if offset:
        page = f" (before the newest {offset:,})"
    elif limit and len(found) == limit:
        page = f" (the newest {limit:,}; --limit 0 for all)"
    t = table(
        f"{len(found):,} events{page}",
        "seq",
        "time",
        "type",
        "agent",
        "task",
        "payload",
        numeric={"seq"},
    )
    for e in found:
        failed = "fail" in e.event_type or "lost" in e.event_type
        t.add_row(
            count(e.sequence or 0),
            Text(when(e.timestamp), style="dim"),
            Text(e.event_type, style="red" if failed else "cyan"),
            Text(e.agent_id or "", style="green"),
            Text(e.task_id or "", style="yellow"),
            cell(compact(e.payload, 80)),
        )
    out.print(t)


# --- messages -----------------------------------------------------------------------------


@app.command()
def messages(
    ctx: typer.Context,
    agent: Annotated[
        str | None,
        typer.Option("--agent", "-a", metavar="AGENT", help="Messages to or from this agent."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", metavar="AGENT", help="Messages to this agent.")
    ] = None,
    sender: Annotated[
        str | None, typer.Option("--from", metavar="AGENT", help="Messages from this agent.")
    ] = None,
    unread: Annotated[bool, typer.Option("--unread", help="Only unread messages.")] = False,
    message_type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help="Only messages of this type.")
    ] = None,
    where: WhereOption = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    utc: UtcOption = False,
    db: DbOption = None,
    json: JsonOption = False,
    as_csv: CsvOption = False,
    as_tsv: TsvOption = False,
) -> None:
    """Messages between agents, newest first, with read receipts."""
    url = db_url(ctx, db)
    fmt = one_format(json, as_csv, as_tsv)
    builder = QueryBuilder(MessageModel).order_by("created_at", desc=True)
    if to:
        builder = builder.where_eq("to_agent", to)
    if sender:
        builder = builder.where_eq("from_agent", sender)
    if unread:
        builder = builder.where_eq("read", False)
    if message_type:
        builder = builder.where_eq("message_type", message_type)
    builder = parse_where(where, builder)

    async def go() -> list[MessageModel]:
        async with opened(url) as storage:
            if not agent:
                return await storage.query(_limited(builder, limit, offset))
            both = await storage.query(builder.where_eq("to_agent", agent))
            both += await storage.query(builder.where_eq("from_agent", agent))
            both.sort(key=lambda m: (m.created_at, m.id), reverse=True)
            unique = list({m.id: m for m in both}.values())
            return _page(unique, limit, offset)

    found = run(go())
    if fmt != "table":
        print_items(found, fmt)
        return
    t = table(
        f"{len(found):,} messages{_first(limit, offset, len(found))}",
        "sent",
        "from",
        "to",
        "type",
        "priority",
        "read",
        "content",
    )
    for m in found:
        t.add_row(
            cell(when(m.created_at)),
            cell(m.from_agent),
            cell(m.to_agent),
            cell(m.message_type),
            cell(MessagePriority(m.priority).name),
            Text(when(m.read_at), style="green") if m.read else Text("unread", style="yellow"),
            cell(compact(m.content, 50)),
        )
    out.print(t)


# --- metrics ------------------------------------------------------------------------------


@app.command()
def metrics(
    ctx: typer.Context,
    metric_type: Annotated[
        str | None,
        typer.Argument(
            metavar="METRIC",
            help="Metric to aggregate (e.g. cpu_usage); omit to list recent values.",
        ),
    ] = None,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            metavar="GROUPS",
            help="Group by: agent, tag:NAME, both comma-separated, or none.",
        ),
    ] = "agent",
    bucket: Annotated[
        str | None,
        typer.Option("--bucket", metavar="SIZE", help="Time buckets of this size (1m, 5m, 1h)."),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", metavar="AGENT", help="Only this agent's values.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            "-n",
            min=0,
            metavar="N",
            help="Without METRIC: show at most this many values (0: all).",
        ),
    ] = 50,
    offset: Annotated[
        int,
        typer.Option(
            "--offset",
            min=0,
            metavar="N",
            help="Without METRIC: skip this many values first.",
            show_default=False,
        ),
    ] = 0,
    utc: UtcOption = False,
    db: DbOption = None,
    json: JsonOption = False,
    as_csv: CsvOption = False,
    as_tsv: TsvOption = False,
) -> None:
    """Aggregate a metric (count, mean, percentiles) per agent/tag and time bucket.

    With --bucket, the table is followed by a chart: one line per group of the mean (and the
    95th percentile) in each bucket. Without METRIC, the most recent values of every metric.
    """
    url = db_url(ctx, db)
    fmt = one_format(json, as_csv, as_tsv)
    start = parse_time(since, "--since") if since else datetime(1970, 1, 1, tzinfo=UTC)
    end = parse_time(until, "--until") if until else datetime.now(UTC)
    size = parse_duration(bucket, "--bucket") if bucket else None
    groups: list[str] = []
    for part in (p.strip() for p in by.split(",")):
        if part in ("agent", "agent_id"):
            groups.append("agent_id")
        elif part.startswith("tag:") and len(part) > 4:
            groups.append(part)
        elif part != "none":
            raise UsageError(f"--by: {part!r} is not agent, tag:NAME or none")

    if metric_type is None:

        async def recent() -> list[MetricModel]:
            builder = QueryBuilder(MetricModel).order_by("timestamp", desc=True)
            builder = builder.where_gte("timestamp", start).where_lte("timestamp", end)
            if agent:
                builder = builder.where_eq("agent_id", agent)
            async with opened(url) as storage:
                return await storage.query(_limited(builder, limit, offset))

        values = run(recent())
        if fmt != "table":
            print_items(values, fmt)
            return
        t = table(
            f"{len(values):,} recent measurements{_first(limit, offset, len(values))}",
            "time",
            "metric",
            "agent",
            "value",
            "unit",
            "tags",
            numeric={"value"},
        )
        places = decimals(m.value for m in values)
        for m in values:
            t.add_row(
                cell(when(m.timestamp)),
                cell(m.metric_type),
                cell(m.agent_id),
                number(m.value, places),
                cell(m.unit),
                cell(compact(m.tags, 40)),
            )
        out.print(t)
        if values:
            err.print(f"aggregate one with e.g. swarmdb metrics {values[0].metric_type} --by agent")
        return

    async def aggregated() -> tuple[list[MetricAggregate], list[str] | None]:
        known: list[str] | None = None
        async with opened(url) as storage:
            rows = await storage.aggregate_metrics(metric_type, start, end, groups, size)
            if not rows:
                # A typo, or a metric outside the filters: only the first is an error.
                exists = QueryBuilder(MetricModel).where_eq("metric_type", metric_type).limit(1)
                if not await storage.query(exists):
                    known = await _metric_names(storage)
        if agent:
            rows = [r for r in rows if r.group.get("agent_id") == agent]
        return rows, known

    rows, known = run(aggregated())
    if known is not None:
        raise CliError(
            f"no measurements of {metric_type!r}; "
            + (f"known metrics: {', '.join(known)}" if known else "the database has no metrics")
        )
    if fmt == "json":
        print_json(rows)
        return
    if fmt != "table":
        columns = ["metric_type", *groups, *(["bucket_start"] if size else []), "unit", *_STATS]
        flat = [
            {"metric_type": r.metric_type, **r.group, "bucket_start": r.bucket_start}
            | {k: getattr(r, k) for k in ("unit", *_STATS)}
            for r in rows
        ]
        print_delimited(flat, columns, fmt)
        return
    if not rows:
        err.print(f"no measurements of {metric_type} match")
        return
    heads = [g.removeprefix("tag:") if g != "agent_id" else "agent" for g in groups]
    shown = ("mean", "min", "p50", "p95", "p99", "max")
    distinct = len({(tuple(r.group.items()), r.unit) for r in rows})
    t = table(
        f"{metric_type}: {distinct:,} groups"
        + (f", {len(rows):,} rows of {bucket} buckets" if size else ""),
        *heads,
        *(["bucket"] if size else []),
        "unit",
        "count",
        *shown,
        numeric={"count", *shown},
    )
    fine = size is not None and size.total_seconds() % 1 != 0  # buckets within a second
    # One precision for every statistic: they share a unit, so their points line up.
    places = decimals(getattr(r, k) for r in rows for k in shown)
    for r in rows:
        t.add_row(
            *(cell(r.group.get(g)) for g in groups),
            *([cell(when(r.bucket_start, ms=fine))] if size else []),
            cell(r.unit),
            count(r.count),
            *(number(getattr(r, k), places) for k in shown),
        )
    out.print(t)
    if size:
        out.print()
        out.print(_chart(rows, groups, heads, bucket or ""))


#: The statistics of an aggregate row, in the order of its CSV columns.
_STATS = ("count", "sum", "mean", "min", "max", "p50", "p95", "p99")


async def _metric_names(storage: Storage, most: int = 30) -> list[str]:
    """The distinct metric names, alphabetically: one indexed query per name, so a large
    metrics table is never read whole."""
    names: list[str] = []
    first = QueryBuilder(MetricModel).order_by("metric_type").limit(1)
    while len(names) < most:
        query = first.where_gt("metric_type", names[-1]) if names else first
        found = await storage.query(query)
        if not found:
            break
        names.append(found[0].metric_type)
    return names


#: Eight heights of a sparkline, lowest first.
_BARS = "▁▂▃▄▅▆▇█"


def _spark(values: Sequence[float | None], low: float, high: float) -> str:
    """One character per value on the scale ``low``…``high``; a blank where none."""
    marks = []
    for v in values:
        if v is None:
            marks.append(" ")
        elif high <= low:
            marks.append(_BARS[len(_BARS) // 2])
        else:
            marks.append(_BARS[round((v - low) / (high - low) * (len(_BARS) - 1))])
    return "".join(marks)


def _chart(
    rows: list[MetricAggregate], groups: list[str], heads: list[str], bucket: str
) -> RenderableType:
    """Sparklines of the mean and the p95 per bucket, one pair of lines per group.

    Drawn with rich, not a plotting library: a line per group stays readable for many groups
    without colour (piped, or NO_COLOR), where overlaid plot lines could only be told apart by
    colour, and it needs no other dependency. All lines of a unit share one scale, so that
    groups compare at a glance.
    """
    starts = sorted({r.bucket_start for r in rows if r.bucket_start is not None})
    fine = any(s.microsecond for s in starts)
    # One character per bucket: the newest that fit beside the labels.
    room = max(10, out.width - 30 - sum(len(h) + 12 for h in heads))
    note = f"; the newest {room:,} of {len(starts):,}" if len(starts) > room else ""
    starts = starts[-room:]
    column = {start: i for i, start in enumerate(starts)}
    parts: list[RenderableType] = []
    for unit in sorted({r.unit for r in rows}):
        series: dict[tuple[str, ...], dict[str, list[float | None]]] = {}
        for r in rows:
            if r.unit != unit or r.bucket_start not in column:
                continue
            key = tuple(str(r.group.get(g) or "-") for g in groups)
            lines = series.setdefault(
                key, {"mean": [None] * len(starts), "p95": [None] * len(starts)}
            )
            lines["mean"][column[r.bucket_start]] = r.mean
            lines["p95"][column[r.bucket_start]] = r.p95
        plotted = [
            v for lines in series.values() for s in lines.values() for v in s if v is not None
        ]
        if not plotted:
            continue
        low, high = min(plotted), max(plotted)
        places = decimals([low, high])
        caption = Text(
            f"{rows[0].metric_type} in {unit}: mean and p95 per {bucket} bucket, "
            f"{when(starts[0], ms=fine)} to {when(starts[-1], ms=fine)}{note}",
            style="bold",
        )
        scale = Text(
            f"one character per bucket; {_BARS[0]} {low:,.{places}f} … "
            f"{_BARS[-1]} {high:,.{places}f} on every line",
            style="dim",
        )
        chart = table(None, *(heads or ["group"]), "", "")
        chart.columns[-1].overflow = "crop"
        chart.columns[-1].no_wrap = True
        for key, lines in sorted(series.items()):
            labels = list(key) if groups else ["all"]
            chart.add_row(
                *(cell(x) for x in labels),
                Text("mean", style="dim"),
                Text(_spark(lines["mean"], low, high), style="cyan"),
            )
            chart.add_row(
                *(cell("") for _ in labels),
                Text("p95", style="dim"),
                Text(_spark(lines["p95"], low, high), style="magenta"),
            )
        parts += [caption, scale, chart]
    return Group(*parts)
