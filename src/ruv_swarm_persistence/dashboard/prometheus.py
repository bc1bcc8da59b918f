"""``/metrics``: the swarm's state in the Prometheus text format, through ``prometheus_client``.

Every value is read from the database at scrape time (through the shared snapshot), so any
number of dashboards, and the swarm's own processes, agree; nothing is counted in this process.

- ``swarm_tasks{task_type,status}``: the queue's depth by type and status.
- ``swarm_tasks_ready{task_type}``: tasks a claim could take now.
- ``swarm_oldest_ready_task_age_seconds``: how long the longest-waiting ready task has been
  claimable (since its creation or its ``run_after``).
- ``swarm_task_attempts_started_per_second``: attempts started (a claim, then ``start_task``)
  in the last minute, per second: the claim rate as the database records it.
- ``swarm_task_leases_expired``: tasks held past their lease, not yet taken back by a claim.
- ``swarm_task_retries``: failed attempts recorded on the tasks still stored.
- ``swarm_events_total``: the event log's last sequence (``rate()`` of it is events/s), and
  ``swarm_events_per_second``: events stamped in the last minute, per second.
- ``swarm_agents{status}``, ``swarm_agents_stale``, ``swarm_messages_unread``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from .._time import to_us
from .api import dashboard_of
from .snapshot import RATE_WINDOW, Snapshot
from .views import AGENT_STATUSES, TASK_STATUSES

__all__ = ["metric_families", "prometheus_metrics"]


def metric_families(snap: Snapshot, stale: int) -> list[Metric]:
    """The metric families of one snapshot (``stale``: how many agents are stale)."""
    now_us = to_us(snap.taken_at)
    window_s = RATE_WINDOW.total_seconds()

    tasks = GaugeMetricFamily(
        "swarm_tasks", "Tasks stored, by type and status.", labels=["task_type", "status"]
    )
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for t in snap.tasks:
        by_type[t.task_type][t.status.value] += 1
    for task_type, counts in sorted(by_type.items()):
        for status in TASK_STATUSES:
            tasks.add_metric([task_type, status], counts.get(status, 0))

    ready = GaugeMetricFamily(
        "swarm_tasks_ready", "Tasks a claim could take now, by type.", labels=["task_type"]
    )
    ready_tasks = [t for t in snap.tasks if t.id in snap.ready_ids]
    ready_counts = Counter(t.task_type for t in ready_tasks)
    for task_type in sorted(by_type):
        ready.add_metric([task_type], ready_counts.get(task_type, 0))

    since = [
        max(to_us(t.created_at), to_us(t.run_after) if t.run_after else 0) for t in ready_tasks
    ]
    oldest = GaugeMetricFamily(
        "swarm_oldest_ready_task_age_seconds",
        "How long the longest-waiting ready task has been claimable (0 without one).",
        value=max(0.0, (now_us - min(since)) / 1e6) if since else 0.0,
    )
    started = sum(
        1 for t in snap.tasks if t.started_at and now_us - to_us(t.started_at) <= window_s * 1e6
    )
    claims = GaugeMetricFamily(
        "swarm_task_attempts_started_per_second",
        "Attempts started in the last minute, per second (the claim rate).",
        value=started / window_s,
    )
    expired = GaugeMetricFamily(
        "swarm_task_leases_expired",
        "Tasks held past their lease and not yet taken back.",
        value=sum(
            1
            for t in snap.tasks
            if t.status.value in ("assigned", "running")
            and t.lease_expires_at is not None
            and to_us(t.lease_expires_at) <= now_us
        ),
    )
    retries = GaugeMetricFamily(
        "swarm_task_retries",
        "Failed attempts recorded on the stored tasks (their retry counts).",
        value=sum(t.retry_count for t in snap.tasks),
    )
    events = CounterMetricFamily(
        "swarm_events", "Events appended to the log (its last sequence).", value=snap.last_sequence
    )
    rate = GaugeMetricFamily(
        "swarm_events_per_second",
        "Events stamped in the last minute, per second.",
        value=snap.recent_events / window_s,
    )
    agents = GaugeMetricFamily("swarm_agents", "Agents by status.", labels=["status"])
    agent_counts = Counter(a.status.value for a in snap.agents)
    for status in AGENT_STATUSES:
        agents.add_metric([status], agent_counts.get(status, 0))
    stale_family = GaugeMetricFamily(
        "swarm_agents_stale", "Agents whose heartbeat is older than the stale age.", value=stale
    )
    unread = GaugeMetricFamily(
        "swarm_messages_unread", "Messages not read yet.", value=len(snap.unread)
    )
    return [tasks, ready, oldest, claims, expired, retries, events, rate, agents, stale_family,
            unread]  # fmt: skip


class _Families(Collector):
    """A collector that yields families computed beforehand (the snapshot is read async)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


async def prometheus_metrics(request: Request) -> Response:
    """``GET /metrics``: the text format (or OpenMetrics, if the scraper asks for it)."""
    board = dashboard_of(request)
    snap = await board.cache.get()
    stale = len(await board.storage.find_stale_agents(board.stale_after))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metric_families(snap, stale)))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), media_type=None, headers={"Content-Type": content_type})
