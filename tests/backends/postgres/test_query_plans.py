"""The pending, dead-letter and retention statements are served by indexes on PostgreSQL.

``EXPLAIN`` runs each statement with sequential scans priced out (``enable_seqscan = off``):
a plan that still reads a table whole has no index able to serve it. The tables hold a few
thousand rows, too few for the planner's own choice to mean anything (on small tables it
rightly prefers a scan), so the test asks whether an index can serve, not whether it would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from ruv_swarm_persistence import EventModel, MessageModel, MetricModel, TaskModel
from ruv_swarm_persistence.backends.postgres import sql

from ._support import Opener

NOW = 1_800_000_000_000_000

#: (name, statement, parameters, whether it reads a few rows in index order, unsorted).
QUERIES: list[tuple[str, str, tuple[Any, ...], bool]] = [
    ("pending_tasks", sql.PENDING_TASKS, (), False),
    ("failed_tasks", sql.FAILED_TASKS, (100,), True),
    ("failed_tasks_of_type", sql.FAILED_TASKS_OF_TYPE, ("w", 100), True),
    ("lock_failed_tasks", sql.LOCK_FAILED_TASKS, (), False),
    ("lock_failed_tasks_of_type", sql.LOCK_FAILED_TASKS_OF_TYPE, ("w",), False),
    ("task_keep_threshold", sql.TASK_KEEP_THRESHOLD, (10,), True),
    ("lock_retained_tasks", sql.LOCK_RETAINED_TASKS, (NOW, "t9"), False),
    ("lock_retained_tasks_before", sql.LOCK_RETAINED_TASKS, (NOW, None), False),
    ("event_keep_threshold", sql.EVENT_KEEP_THRESHOLD, (10,), True),
    ("retain_events", sql.RETAIN_EVENTS, (NOW, 10), False),
    ("prune_events", sql.PRUNE_EVENTS, (NOW,), False),
    ("metric_keep_threshold", sql.METRIC_KEEP_THRESHOLD, (10,), True),
    ("retain_metrics", sql.RETAIN_METRICS, (NOW, "x9"), False),
    ("prune_metrics", sql.PRUNE_METRICS, (NOW,), False),
    ("message_keep_threshold", sql.MESSAGE_KEEP_THRESHOLD, (10,), True),
    ("retain_messages", sql.RETAIN_MESSAGES, (NOW, "m9"), False),
    ("retain_messages_before", sql.RETAIN_MESSAGES, (NOW, None), False),
    ("prune_messages", sql.PRUNE_MESSAGES, (NOW,), False),
]


@pytest.fixture
async def conn(pg_url: str, schema: str, open_storage: Opener) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a schema with a few thousand rows in the tables these statements read."""
    s = await open_storage()
    n = 2000
    await s.store_tasks([TaskModel.new("w" if i % 2 else "x", {"i": i}) for i in range(n)])
    await s.store_events([EventModel.new("e", {"i": i}) for i in range(n)])
    await s.store_metrics([MetricModel.new("m", i, "ms") for i in range(n)])
    for i in range(n // 4):
        await s.store_message(MessageModel.new("a", "b", "note", {"i": i}))
    c = await asyncpg.connect(pg_url, server_settings={"search_path": f'"{schema}"'})
    try:
        # A third of the tasks completed, a third failed; half the mail read.
        await c.execute(
            "UPDATE tasks SET status = CASE stored_order % 3 WHEN 0 THEN 'completed'"
            " WHEN 1 THEN 'failed' ELSE status END,"
            " completed_at = CASE WHEN stored_order % 3 < 2 THEN $1::bigint END",
            NOW,
        )
        await c.execute("UPDATE messages SET read = 1, read_at = $1 WHERE random() < 0.5", NOW)
        await c.execute("ANALYZE")
        await c.execute("SET enable_seqscan = off")
        yield c
    finally:
        await c.close()


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", ()):
        out += _nodes(child)
    return out


async def test_an_index_serves_each_statement(conn: asyncpg.Connection) -> None:
    unserved = {}
    for name, statement, params, ordered in QUERIES:
        raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + statement, *params)
        nodes = _nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
        kinds = [n["Node Type"] for n in nodes]
        scans = [(n["Node Type"], n["Relation Name"]) for n in nodes if "Relation Name" in n]
        assert scans, (name, kinds)
        if any(kind == "Seq Scan" for kind, _ in scans) or (
            ordered and ("Sort" in kinds or "Incremental Sort" in kinds)
        ):
            unserved[name] = kinds
    assert unserved == {}
