"""The tasks-over-time series, checked against a direct count at every bucket end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ruv_swarm_persistence import TaskModel, TaskStatus
from ruv_swarm_persistence._time import to_us
from ruv_swarm_persistence.dashboard.views import timeline

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = list(TaskStatus)


@st.composite
def tasks(draw: st.DrawFn) -> TaskModel:
    """A task at any point of its life, with times in order as the storage keeps them."""
    status = draw(st.sampled_from(STATUSES))
    created = T0 + timedelta(milliseconds=draw(st.integers(0, 10_000)))
    t = TaskModel(id=str(draw(st.uuids())), task_type=draw(st.sampled_from(["a", "b"])),
                  status=status, created_at=created, updated_at=created)  # fmt: skip
    later = [created + timedelta(milliseconds=draw(st.integers(0, 5_000))) for _ in range(2)]
    later.sort()
    if status in (TaskStatus.Running, TaskStatus.Completed, TaskStatus.Failed):
        t.started_at = later[0]
    if status in (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled):
        t.completed_at = t.updated_at = later[1]
    if status is TaskStatus.Pending and draw(st.booleans()):
        t.started_at = later[0]  # a failed attempt's start, kept while it waits to retry
    return t


def state_at(t: TaskModel, at_us: int) -> str | None:
    """What the chart should count the task as at ``at_us`` (None: not created yet)."""
    if to_us(t.created_at) > at_us:
        return None
    if t.completed_at is not None and to_us(t.completed_at) <= at_us:
        return t.status.value
    active = t.status in (TaskStatus.Running, TaskStatus.Completed, TaskStatus.Failed)
    if active and t.started_at is not None and to_us(t.started_at) <= at_us:
        return "running"
    return "waiting"


@given(
    st.lists(tasks(), max_size=40),
    st.integers(1, 3_000),
    st.integers(-2_000, 8_000),
    st.integers(1, 20_000),
)
def test_each_bucket_counts_the_tasks_as_they_were_at_its_end(
    found: list[TaskModel], bucket_ms: int, start_ms: int, span_ms: int
) -> None:
    start = to_us(T0) + start_ms * 1000
    end = start + span_ms * 1000
    bucket = bucket_ms * 1000
    got = timeline(found, start, end, bucket)
    assert len(got["t"]) >= 1
    for i, at in enumerate(got["t"]):
        at_us = round(at * 1_000_000)
        expected = {s: 0 for s in got["by_state"]}
        for t in found:
            state = state_at(t, at_us)
            if state is not None:
                expected[state] += 1
        assert {s: v[i] for s, v in got["by_state"].items()} == expected
    # Finished per bucket: each finish in (previous end, this end], by type.
    ends = [round(at * 1_000_000) for at in got["t"]]
    for kind, counts in got["finished_by_type"].items():
        for i, end_us in enumerate(ends):
            begin_us = ends[i - 1] if i else ends[0] - bucket
            assert counts[i] == sum(
                1
                for t in found
                if t.task_type == kind
                and t.completed_at is not None
                and begin_us < to_us(t.completed_at) <= end_us
            )
