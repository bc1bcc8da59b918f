"""``/metrics``: parsed as Prometheus parses it, each value checked against the database."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ruv_swarm_persistence import TaskModel
from ruv_swarm_persistence.dashboard.prometheus import metric_families
from ruv_swarm_persistence.dashboard.snapshot import take_snapshot
from ruv_swarm_persistence.query import QueryBuilder
from ruv_swarm_persistence.storage import Storage
from tests.dashboard.swarm import STALE_AFTER


async def scrape(client: httpx.AsyncClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_queue_depth_agents_and_mail(client: httpx.AsyncClient, storage: Storage) -> None:
    metrics = await scrape(client)
    tasks = await storage.query(QueryBuilder(TaskModel))
    depth = Counter((t.task_type, t.status.value) for t in tasks)
    for (labels), value in metrics["swarm_tasks"].items():
        key = dict(labels)
        assert value == depth[(key["task_type"], key["status"])]
    assert sum(metrics["swarm_tasks"].values()) == len(tasks)
    ready = Counter(t.task_type for t in await storage.get_ready_tasks())
    assert {dict(k)["task_type"]: v for k, v in metrics["swarm_tasks_ready"].items() if v} == ready
    agents = Counter(a.status.value for a in await storage.list_agents())
    assert {dict(k)["status"]: v for k, v in metrics["swarm_agents"].items() if v} == agents
    stale = await storage.find_stale_agents(STALE_AFTER)
    assert metrics["swarm_agents_stale"][()] == len(stale) == 1
    assert metrics["swarm_messages_unread"][()] == 5
    assert metrics["swarm_task_leases_expired"][()] == 0
    assert metrics["swarm_task_retries"][()] == sum(t.retry_count for t in tasks) == 1
    # Populated just now: every event is in the last minute, as are the attempts of t1, t6,
    # t7 (which failed and waits to retry) and t9.
    assert metrics["swarm_events_total"][()] == 21
    assert metrics["swarm_events_per_second"][()] == 21 / 60
    assert metrics["swarm_task_attempts_started_per_second"][()] == 4 / 60
    assert 0 <= metrics["swarm_oldest_ready_task_age_seconds"][()] < 3600


async def test_a_lease_past_its_expiry_counts_until_a_claim_takes_it_back(
    storage: Storage,
) -> None:
    # Backends take expired work back on their way through reads too, so the gauge is
    # checked on a snapshot that holds one such task as it was read.
    snap = await take_snapshot(storage)
    running = next(t for t in snap.tasks if t.id == "t9")
    expired = replace(running, lease_expires_at=snap.taken_at - timedelta(seconds=1))
    tasks = [expired if t.id == "t9" else t for t in snap.tasks]
    families = {f.name: f for f in metric_families(replace(snap, tasks=tasks), stale=0)}
    assert families["swarm_task_leases_expired"].samples[0].value == 1
    families = {f.name: f for f in metric_families(snap, stale=0)}
    assert families["swarm_task_leases_expired"].samples[0].value == 0


async def test_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
