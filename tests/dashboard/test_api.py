"""The JSON API on every backend: each number it gives is checked against the database."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import httpx
import pytest

from ruv_swarm_persistence import EventModel, MessageModel, TaskModel
from ruv_swarm_persistence.query import QueryBuilder
from ruv_swarm_persistence.storage import Storage
from tests.dashboard.swarm import METRIC_START, STALE_AFTER

STATUSES = ("pending", "assigned", "running", "completed", "failed", "cancelled")


async def all_tasks(storage: Storage) -> list[TaskModel]:
    return await storage.query(QueryBuilder(TaskModel))


async def test_overview_counts_match_the_database(
    client: httpx.AsyncClient, storage: Storage
) -> None:
    body = (await client.get("/api/overview")).json()
    tasks = await all_tasks(storage)
    agents = await storage.list_agents()
    unread = await storage.query(QueryBuilder(MessageModel).where_eq("read", False))
    last = await storage.query(QueryBuilder(EventModel).order_by("sequence", True).limit(1))
    assert body["tasks_total"] == len(tasks) == 10
    assert body["tasks"] == {s: sum(t.status == s for t in tasks) for s in STATUSES}
    assert body["tasks_ready"] == len(await storage.get_ready_tasks())
    assert body["agents_total"] == len(agents) == 5
    assert body["agents"]["idle"] == 1
    assert body["messages_unread"] == len(unread) == 5
    assert body["events_last_sequence"] == last[0].sequence
    assert body["actions"] is False


async def test_agents_mark_the_stale_ones_as_the_storage_finds_them(
    client: httpx.AsyncClient, storage: Storage
) -> None:
    body = (await client.get("/api/agents")).json()
    stale = {a.id for a in await storage.find_stale_agents(STALE_AFTER)}
    assert stale == {"a-stale"}  # shutdown and error agents are not stale, only silent
    assert {a["id"] for a in body["agents"] if a["stale"]} == stale
    assert body["stale"] == 1
    assert body["agents"][0]["id"] == "a-stale"  # stale ones come first
    by_id = {a["id"]: a for a in body["agents"]}
    assert by_id["a-stale"]["heartbeat_age_s"] >= 600
    assert by_id["a-active"]["heartbeat_age_s"] < 600
    assert by_id["a-active"]["capabilities"] == ["coding", "review"]
    assert by_id["a-busy"]["tasks_held"] == 1  # t9, running
    # A longer stale age makes none stale.
    body = (await client.get("/api/agents", params={"stale_after": 3600})).json()
    assert body["stale"] == 0


async def test_task_counts_by_status_and_type(client: httpx.AsyncClient, storage: Storage) -> None:
    body = (await client.get("/api/task-stats")).json()
    tasks = await all_tasks(storage)
    ready = {t.id for t in await storage.get_ready_tasks()}
    assert ready == {"t2", "t5"}
    assert body["ready"] == 2
    assert body["by_status"] == {s: sum(t.status == s for t in tasks) for s in STATUSES}
    assert body["by_status"]["failed"] == 1
    assert body["by_status"]["cancelled"] == 2
    for kind, counts in body["by_type"].items():
        of_kind = [t for t in tasks if t.task_type == kind]
        assert counts == {s: sum(t.status == s for t in of_kind) for s in STATUSES} | {
            "ready": sum(t.id in ready for t in of_kind)
        }
    assert set(body["by_type"]) == {"build", "test", "research", "deploy"}


async def test_timeline_ends_with_the_current_counts(
    client: httpx.AsyncClient, storage: Storage
) -> None:
    body = (await client.get("/api/task-stats")).json()
    timeline = body["timeline"]
    tasks = await all_tasks(storage)
    last = {state: values[-1] for state, values in timeline["by_state"].items()}
    finished = Counter(t.status.value for t in tasks)
    assert last["completed"] == finished["completed"]
    assert last["failed"] == finished["failed"]
    assert last["cancelled"] == finished["cancelled"]
    assert last["running"] == finished["running"]
    assert sum(last.values()) == len(tasks)
    assert len(timeline["t"]) == len(timeline["by_state"]["waiting"])
    per_type = {k: sum(v) for k, v in timeline["finished_by_type"].items()}
    done = Counter(t.task_type for t in tasks if t.status.value in ("completed", "failed",
                                                                     "cancelled"))  # fmt: skip
    assert per_type == dict(done)


async def test_task_list_filters_by_status_and_type(
    client: httpx.AsyncClient, storage: Storage
) -> None:
    body = (await client.get("/api/tasks", params={"status": ["pending"]})).json()
    pending = await storage.query(QueryBuilder(TaskModel).where_eq("status", "pending"))
    assert {t["id"] for t in body["tasks"]} == {t.id for t in pending}
    assert body["total"] == len(pending)
    assert {t["id"] for t in body["tasks"] if t["ready"]} == {"t2", "t5"}
    body = (await client.get("/api/tasks", params={"type": "deploy", "limit": 1})).json()
    assert body["total"] == 2
    assert len(body["tasks"]) == 1
    assert body["tasks"][0]["task_type"] == "deploy"


async def test_one_task_and_its_dependents(client: httpx.AsyncClient, storage: Storage) -> None:
    body = (await client.get("/api/tasks/t2")).json()
    assert body["status"] == "pending"
    assert body["dependencies"] == ["t1"]
    assert sorted(body["dependents"]) == ["t3", "t4"]
    assert body["payload"] == {"n": "t2"}
    t1 = (await client.get("/api/tasks/t1")).json()
    assert t1["result"] == {"ok": True}
    assert t1["assigned_to"] == "a-active"
    assert (await client.get("/api/tasks/nope")).status_code == 404


async def test_graph_around_a_task(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/tasks/t2/graph", params={"depth": 1})).json()
    levels = {n["id"]: n["level"] for n in body["nodes"]}
    assert levels == {"t1": -1, "t2": 0, "t3": 1, "t4": 1}
    edges = {(e["from"], e["to"]) for e in body["edges"]}
    assert edges == {("t1", "t2"), ("t2", "t3"), ("t2", "t4"), ("t1", "t4")}
    body = (await client.get("/api/tasks/t2/graph", params={"depth": 2})).json()
    assert {n["id"] for n in body["nodes"]} == {"t1", "t2", "t3", "t4", "t8"}
    body = (await client.get("/api/tasks/t2/graph", params={"max_nodes": 2})).json()
    assert len(body["nodes"]) == 2
    assert body["truncated"] is True
    assert (await client.get("/api/tasks/missing/graph")).status_code == 404


async def test_dead_letters_and_retrying_tasks(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/dead-letters")).json()
    assert [t["id"] for t in body["dead_letters"]] == ["t6"]
    assert body["dead_letters"][0]["error"] == "ValueError: bad input"
    assert body["total_failed"] == 1
    assert [t["id"] for t in body["retrying"]] == ["t7"]
    assert body["retrying"][0]["retry_count"] == 1
    assert body["retrying"][0]["error"] == "TimeoutError: slow upstream"


async def test_unread_messages_per_agent(client: httpx.AsyncClient, storage: Storage) -> None:
    body = (await client.get("/api/messages")).json()
    rows = {r["agent_id"]: r for r in body["agents"]}
    for agent_id in ("a-active", "a-busy", "a-stale"):
        unread = await storage.get_unread_messages(agent_id)
        assert rows.get(agent_id, {"unread": 0})["unread"] == len(unread)
    assert body["total_unread"] == 5
    assert rows["a-active"]["by_priority"] == {"low": 1, "normal": 1, "high": 0, "urgent": 1}
    assert [r["agent_id"] for r in body["agents"]] == ["a-active", "a-busy"]
    mailbox = (await client.get("/api/messages/a-active/unread")).json()
    expected = await storage.get_unread_messages("a-active")
    assert [m["id"] for m in mailbox["messages"]] == [m.id for m in expected]
    assert mailbox["messages"][0]["priority_name"] == "Urgent"


async def test_events_filtered_by_type_and_agent(
    client: httpx.AsyncClient, storage: Storage
) -> None:
    body = (await client.get("/api/events", params={"limit": 5})).json()
    newest = await storage.query(QueryBuilder(EventModel).order_by("sequence", True).limit(5))
    assert [e["sequence"] for e in body["events"]] == [e.sequence for e in newest]
    assert body["last_sequence"] == newest[0].sequence
    body = (await client.get("/api/events", params={"type": "task.failed"})).json()
    failed = await storage.get_events_by_type("task.failed")
    assert sorted(e["id"] for e in body["events"]) == sorted(e.id for e in failed)
    assert len(failed) == 5
    body = (await client.get("/api/events", params={"agent": "a-active",
                                                    "type": ["task.claimed"]})).json()  # fmt: skip
    assert len(body["events"]) == 5
    assert {(e["agent_id"], e["event_type"]) for e in body["events"]} == {
        ("a-active", "task.claimed")
    }
    before = body["events"][2]["sequence"]
    body = (await client.get("/api/events", params={"before": before})).json()
    assert all(e["sequence"] < before for e in body["events"])
    types = (await client.get("/api/events/types")).json()["event_types"]
    assert types == ["swarm.note", "task.claimed", "task.completed", "task.failed"]


async def test_metric_series_are_aggregate_metrics_per_bucket(
    client: httpx.AsyncClient, storage: Storage
) -> None:
    assert (await client.get("/api/metrics")).json() == {"metrics": ["latency"]}
    body = (await client.get("/api/metrics/latency", params={"bucket": 5})).json()
    assert body["bucket_s"] == 5
    (series,) = body["series"]
    assert series["unit"] == "ms"
    assert series["agent_id"] is None
    start = METRIC_START
    end = start + timedelta(seconds=29.75)
    rows = await storage.aggregate_metrics("latency", start, end, group_by=(), bucket=5)
    assert [r.count for r in rows] == series["count"] == [20] * 6
    for stat in ("mean", "min", "max", "p50", "p95", "p99"):
        assert series[stat] == pytest.approx([getattr(r, stat) for r in rows])
    assert body["t"][0] == start.timestamp()
    by_agent = (await client.get("/api/metrics/latency",
                                 params={"bucket": 5, "group": "agent"})).json()  # fmt: skip
    counts = {s["agent_id"]: sum(c or 0 for c in s["count"]) for s in by_agent["series"]}
    assert counts == {"a-active": 80, "a-busy": 40}
    # A window given by its end: the first 10 seconds only.
    body = (await client.get("/api/metrics/latency", params={
        "end": (start + timedelta(seconds=9.9)).timestamp(), "window": 9.9, "bucket": 5,
    })).json()  # fmt: skip
    assert body["series"][0]["count"] == [20, 20]
    empty = (await client.get("/api/metrics/none-such")).json()
    assert empty["series"] == []


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/tasks", {"limit": "0"}),
        ("/api/tasks", {"limit": "many"}),
        ("/api/tasks", {"status": "sleeping"}),
        ("/api/tasks", {"limit": ["1", "2"]}),
        ("/api/agents", {"stale_after": "nan"}),
        ("/api/task-stats", {"start": "0", "bucket": "1"}),
        ("/api/task-stats", {"start": "yesterday"}),
        ("/api/task-stats", {"start": "2030-01-01", "end": "2020-01-01"}),
        ("/api/metrics/latency", {"window": "-1"}),
        ("/api/metrics/latency", {"group": "tag"}),
        ("/api/tasks/t1/graph", {"depth": "100"}),
        ("/api/events", {"before": "-3"}),
    ],
)
async def test_bad_parameters_are_400_with_a_reason(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_an_id_the_storage_refuses_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/tasks/" + "x" * 300)
    assert response.status_code == 400
    assert "256" in response.json()["error"] or "long" in response.json()["error"]
