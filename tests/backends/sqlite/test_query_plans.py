"""Every query of the API is served by an index: no full scan of a large table.

``EXPLAIN QUERY PLAN`` runs for each statement the backend issues, on a populated database
without statistics (as users have it). A plain ``SCAN <table>`` of a large table fails, and
so does a scan of a whole index, except for the queries that return every row of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
import pytest

from ruv_swarm_persistence import (
    AgentModel,
    EventModel,
    MessageModel,
    MetricModel,
    TaskModel,
)
from ruv_swarm_persistence.backends.sqlite import SqliteStorage, functions, sql

LARGE_TABLES = (
    "agents", "tasks", "task_dependencies", "events", "messages", "metrics", "queue_claims",
)  # fmt: skip
NOW = 1_800_000_000_000_000
IDS = json.dumps(["t1", "t2"])

#: (name, statement, parameters, indexes it may scan whole: the queries returning all of it)
QUERIES: list[tuple[str, str, tuple[Any, ...], tuple[str, ...]]] = [
    ("get_agent", sql.GET_AGENT, ("a1",), ()),
    ("insert_agent", sql.INSERT_AGENT, ("x",) * len(sql.AGENT_COLUMNS), ()),
    ("update_agent", sql.UPDATE_AGENT, ("x",) * len(sql.AGENT_COLUMNS), ()),
    ("delete_agent", sql.DELETE_AGENT, ("a1",), ()),
    ("list_agents", sql.LIST_AGENTS, (), ("agents_by_created",)),
    ("list_agents_by_status", sql.AGENTS_BY_STATUS, ("idle",), ()),
    ("find_stale_agents", sql.STALE_AGENTS, (NOW,), ()),
    ("heartbeat", sql.HEARTBEAT, (NOW, NOW, "a1"), ()),
    ("mark_agent_error", sql.MARK_AGENT_ERROR, (NOW, "a1"), ()),
    ("delete_mailbox", sql.DELETE_MAILBOX, ("a1", "a1"), ()),
    ("get_task", sql.GET_TASK, ("t1",), ()),
    ("get_task_state", sql.GET_TASK_STATE, ("t1",), ()),
    ("existing_tasks", sql.EXISTING_TASKS, (IDS,), ()),
    ("task_statuses", sql.TASK_STATUSES, (IDS,), ()),
    ("has_dependents", sql.HAS_DEPENDENTS, ("t1",), ()),
    ("delete_task", sql.DELETE_TASK, ("t1",), ()),
    ("get_pending_tasks", sql.PENDING_TASKS, (), ("tasks_ready", "tasks_blocked")),
    ("get_ready_tasks", sql.READY_TASKS, (NOW,), ("tasks_ready",)),
    ("get_ready_tasks_limit", sql.READY_TASKS_LIMIT, (NOW, 10), ("tasks_ready",)),
    ("get_tasks_by_agent", sql.TASKS_BY_AGENT, ("a1",), ()),
    ("dependency_results", sql.DEPENDENCY_RESULTS, ("t1",), ()),
    ("tasks_naming_agent", sql.TASKS_NAMING_AGENT, ("a1",), ()),
    ("clear_assignee", sql.CLEAR_ASSIGNEE, ("t1",), ()),
    ("any_expired", sql.ANY_EXPIRED, (NOW,), ()),
    ("expired_leases", sql.EXPIRED_LEASES, (NOW,), ()),
    ("dependent_edges", sql.DEPENDENT_EDGES, ("t1",), ()),
    ("task_states", sql.TASK_STATES, (IDS,), ()),
    ("any_ready", sql.ANY_READY, (NOW, NOW), ("tasks_ready",)),
    ("any_ready_of_types", sql.ANY_READY_OF_TYPES, (NOW, IDS, NOW), ()),
    ("rate_limited_keys", sql.RATE_LIMITED_KEYS, (), ()),
    ("recent_claims", sql.RECENT_CLAIMS, ("k", NOW), ()),
    ("dedup_holders", sql.DEDUP_HOLDERS, (IDS,), ()),
    ("log_claim", sql.LOG_CLAIM, (NOW, "k"), ()),
    ("forget_old_claims", sql.FORGET_OLD_CLAIMS, ("k", NOW), ()),
    ("queue_limits", sql.QUEUE_LIMITS, (), ()),
    ("key_admits", sql.KEY_ADMITS, (NOW, "t1"), ()),
    ("drop_empty_limit", sql.DROP_EMPTY_LIMIT, ("k",), ()),
    ("forget_claims", sql.FORGET_CLAIMS, ("k",), ()),
    ("next_run_after", sql.NEXT_RUN_AFTER, (NOW,), ("tasks_ready",)),
    ("next_run_after_of_types", sql.NEXT_RUN_AFTER_OF_TYPES, (NOW, IDS), ()),
    ("next_lease_end", sql.NEXT_LEASE_END, (), ("tasks_by_lease",)),
    ("next_lease_end_of_types", sql.NEXT_LEASE_END_OF_TYPES, (IDS,), ("tasks_by_lease",)),
    ("task_rowids", sql.TASK_ROWIDS, (IDS,), ()),
    ("claim_task", sql.CLAIM_TASK, ("assigned", "a1", NOW, NOW, "t1", NOW, NOW), ()),
    (
        "claim_next",
        sql.claim_next(None),
        ("assigned", "a1", NOW, NOW, NOW, NOW),
        ("tasks_ready",),
    ),
    ("claim_next_1_type", sql.claim_next(1), ("assigned", "a1", NOW, NOW, NOW, "w", NOW), ()),
    (
        "claim_next_3_types",
        sql.claim_next(3),
        ("assigned", "a1", NOW, NOW, NOW, "w", NOW, NOW, "x", NOW, NOW, "y", NOW),
        (),
    ),
    ("any_queue_limit", sql.ANY_QUEUE_LIMIT, (), ()),
    ("claim_batch", sql.claim_batch(None), ("assigned", "a1", NOW, NOW, NOW, 16), ("tasks_ready",)),
    ("claim_batch_1_type", sql.claim_batch(1), ("assigned", "a1", NOW, NOW, NOW, "w", 16, 16), ()),
    (
        "claim_batch_2_types",
        sql.claim_batch(2),
        ("assigned", "a1", NOW, NOW, NOW, "w", 16, NOW, "x", 16, 16),
        (),
    ),
    ("task_update", sql.task_update(("status", "updated_at")), ("done", NOW, "t1"), ()),
    ("last_sequence", sql.LAST_SEQUENCE, (), ()),
    ("max_sequence", sql.MAX_SEQUENCE, (), ()),
    ("events_by_agent", sql.EVENTS_BY_AGENT, ("a1", 100), ()),
    ("events_by_type", sql.EVENTS_BY_TYPE, ("t", 100), ()),
    ("events_since", sql.EVENTS_SINCE, (NOW,), ()),
    ("read_events", sql.READ_EVENTS, (10, 100), ()),
    ("get_event", sql.GET_EVENT, ("e1",), ()),
    ("failed_tasks", sql.FAILED_TASKS, (100,), ("tasks_failed",)),
    ("failed_tasks_of_type", sql.FAILED_TASKS_OF_TYPE, ("t", 100), ()),
    ("failed_task_states", sql.FAILED_TASK_STATES, (), ("tasks_failed",)),
    ("failed_task_states_of_type", sql.FAILED_TASK_STATES_OF_TYPE, ("t",), ()),
    ("dead_dependency", sql.DEAD_DEPENDENCY, ("t1",), ()),
    ("delete_tasks", sql.DELETE_TASKS, (IDS,), ()),
    ("delete_edges_to", sql.DELETE_EDGES_TO, (IDS,), ()),
    ("retained_tasks", sql.RETAINED_TASKS, (NOW, "t9"), ()),
    # A count threshold walks the newest rows, as many as are kept, from the end of the
    # index in its order (the events table is its own index of sequences).
    ("task_keep_threshold", sql.TASK_KEEP_THRESHOLD, (10,), ("tasks_completed",)),
    ("event_keep_threshold", sql.EVENT_KEEP_THRESHOLD, (10,), ("events",)),
    ("message_keep_threshold", sql.MESSAGE_KEEP_THRESHOLD, (10,), ("messages_read",)),
    ("metric_keep_threshold", sql.METRIC_KEEP_THRESHOLD, (10,), ("metrics_by_time",)),
    ("retain_events", sql.RETAIN_EVENTS, (NOW, 10), ()),
    ("retain_messages", sql.RETAIN_MESSAGES, (NOW, "m9"), ()),
    ("retain_messages_before", sql.RETAIN_MESSAGES, (NOW, None), ()),
    ("retain_metrics", sql.RETAIN_METRICS, (NOW, "x9"), ()),
    ("retention_record", sql.RETENTION_RECORD, (), ()),
    ("clear_retention_record", sql.CLEAR_RETENTION_RECORD, (), ()),
    ("get_schedule", sql.GET_SCHEDULE, ("s",), ()),
    ("list_schedules", sql.LIST_SCHEDULES, (), ()),
    ("fire_schedule", sql.FIRE_SCHEDULE, (NOW, NOW, NOW, "s", NOW), ()),
    ("set_schedule_paused", sql.SET_SCHEDULE_PAUSED, (1, None, NOW, "s"), ()),
    ("delete_schedule", sql.DELETE_SCHEDULE, ("s",), ()),
    ("prune_events", sql.PRUNE_EVENTS, (NOW,), ()),
    ("get_message", sql.GET_MESSAGE, ("m1",), ()),
    ("delete_message", sql.DELETE_MESSAGE, ("m1",), ()),
    ("messages_between", sql.MESSAGES_BETWEEN, ("a1", "a2", 100), ()),
    ("unread_messages", sql.UNREAD_MESSAGES, ("a1",), ()),
    ("has_unread", sql.HAS_UNREAD, ("a1",), ()),
    ("mark_read", sql.MARK_READ, (NOW, "m1"), ()),
    ("prune_messages", sql.PRUNE_MESSAGES, (NOW,), ()),
    ("metrics_by_agent", sql.METRICS_BY_AGENT, ("a1",), ()),
    ("metrics_by_agent_and_type", sql.METRICS_BY_AGENT_AND_TYPE, ("a1", "latency"), ()),
    ("aggregate_by_agent", sql.AGGREGATE_BY_AGENT, ("latency", 0, NOW), ()),
    ("aggregate_exact_by_agent", sql.AGGREGATE_EXACT_BY_AGENT, ("latency", 0, NOW), ()),
    ("metric_rows", sql.METRIC_ROWS, ("latency", 0, NOW), ()),
    ("prune_metrics", sql.PRUNE_METRICS, (NOW,), ()),
]

_SCAN = re.compile(r"\bSCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?")
#: What a plan may scan that is not a table: a constant row, the recursive walk of a
#: cascade, the ids passed as JSON.
NOT_TABLES = ("CONSTANT", "below", "json_each")


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a few hundred rows in every table, filled through the API."""
    import asyncio

    path = tmp_path_factory.mktemp("plans") / "plans.db"

    async def fill() -> None:
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        async with SqliteStorage.open(path) as s:
            for i in range(200):
                await s.store_agent(AgentModel.new(f"agent {i}", "worker", id=f"a{i}"))
            tasks = [TaskModel.new("w" if i % 2 else "x", {"i": i}, id=f"t{i}") for i in range(300)]
            for i in range(1, 300, 3):
                tasks[i].dependencies = [f"t{i - 1}"]
            await s.store_tasks(tasks)
            for _ in range(50):
                claimed = await s.claim_next_task("a1")
                assert claimed is not None
            await s.store_events(
                [
                    EventModel.new(f"type{i % 5}", {"i": i}, agent_id=f"a{i % 20}")
                    for i in range(500)
                ]
            )
            for i in range(300):
                await s.store_message(MessageModel.new(f"a{i % 10}", f"a{i % 7}", "note", {}))
            metrics = []
            for i in range(500):
                m = MetricModel.new("latency" if i % 2 else "cpu", i, "ms", agent_id=f"a{i % 9}")
                m.timestamp = t0 + timedelta(seconds=i)
                metrics.append(m)
            await s.store_metrics(metrics)

    asyncio.run(fill())
    return path


@pytest.fixture
def conn(populated: Path) -> Iterator[apsw.Connection]:
    c = apsw.Connection(str(populated))
    functions.register(c)
    c.execute("PRAGMA case_sensitive_like = ON").fetchall()
    yield c
    c.close()


def _plan(conn: apsw.Connection, statement: str, params: tuple[Any, ...]) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params)]


#: Statements that scan today, each marked as an expected failure until an index serves it.
#: Strict: one that stops scanning fails here.
KNOWN_SCANS: dict[str, str] = {}


@pytest.mark.parametrize(
    ("statement", "params", "whole"),
    [
        pytest.param(
            s,
            p,
            w,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_SCANS[name])]
            if name in KNOWN_SCANS
            else [],
        )
        for name, s, p, w in QUERIES
    ],
)
def test_no_full_scan_of_a_large_table(
    conn: apsw.Connection, statement: str, params: tuple[Any, ...], whole: tuple[str, ...]
) -> None:
    plan = _plan(conn, statement, params)
    for step in plan:
        m = _SCAN.search(step)
        if m is None or m.group(1) in NOT_TABLES:
            continue
        # Statements name tables without aliases, so the plan shows which table it scans.
        # queue_limits holds a row per key given limits, schedules one per schedule: few,
        # and read whole on purpose.
        if m.group(1) in ("queue_limits", "schedules"):
            continue
        assert m.group(1) in (*LARGE_TABLES, "swarm_meta"), f"unexpected scan: {plan}"
        index = m.group(2)
        if index is None and m.group(1) in whole:
            # A rowid table walked in its own order, as far as the statement's OFFSET.
            assert not any("TEMP B-TREE" in s for s in plan), plan
            continue
        assert index is not None, f"full scan of {m.group(1)}: {plan}"
        assert index in whole, f"scan of the whole index {index}: {plan}"


def test_every_statement_of_the_backend_is_checked() -> None:
    """A statement added to ``sql`` without a plan check fails here."""
    checked = {s for _, s, _, _ in QUERIES}
    unchecked = {
        name
        for name, value in vars(sql).items()
        if isinstance(value, str)
        and name.isupper()
        and not name.startswith("_")  # a fragment the statements are built from
        and re.match(r"\s*(SELECT|UPDATE|DELETE|WITH)\b", value)
        and value not in checked
    }
    # Maintenance reads whole tables on purpose (integrity checks, migrations' bookkeeping,
    # the catalogue a read-only open inspects).
    assert unchecked <= {
        "MIGRATIONS_TABLE_EXISTS",
        "TABLE_NAMES",
        "APPLIED_MIGRATIONS",
        "MIGRATION_RECORDED",
        "FORGET_MIGRATION",
        "STORAGE_SIZE",
        "DEPENDENCY_COUNT_CHECK",
    }, unchecked


def test_the_claim_reads_the_ready_index_in_claim_order(conn: apsw.Connection) -> None:
    plan = " | ".join(_plan(conn, sql.claim_next(None), ("assigned", "a", NOW, NOW, NOW, NOW)))
    assert "tasks_ready" in plan
    assert "TEMP B-TREE" not in plan  # the index order is the claim order: no sort
    typed = " | ".join(_plan(conn, sql.claim_next(1), ("assigned", "a", NOW, NOW, NOW, "w", NOW)))
    assert "tasks_ready_by_type" in typed
