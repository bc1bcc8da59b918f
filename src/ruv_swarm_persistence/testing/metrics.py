"""Conformance: metrics — storage, per-agent reads and aggregation with percentiles."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ..errors import ConflictError, ValidationError
from ..models import MetricModel
from ..storage import MetricAggregate, Storage
from ._support import T0, at, metric


def _percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's ``percentile_cont``)."""
    ordered = sorted(values)
    rank = p * (len(ordered) - 1)
    below = int(rank)  # rank >= 0, so this is the floor
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def _expect(agg: MetricAggregate, values: list[float]) -> None:
    assert agg.count == len(values)
    assert agg.sum == pytest.approx(math.fsum(values), rel=1e-12)
    assert agg.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-12)
    assert agg.min == min(values)
    assert agg.max == max(values)
    for name, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert getattr(agg, name) == pytest.approx(_percentile(values, p), rel=1e-12), name


async def test_store_metric_round_trips_every_field(storage: Storage) -> None:
    m = MetricModel(
        id="m1",
        metric_type="cpu",
        value=0.1 + 0.2,
        unit="%",
        agent_id="agent-1",
        tags={"host": "node-3", "region": "eu-west", "empty": ""},
        timestamp=at(0.000_001),
    )
    await storage.store_metric(m)
    (got,) = await storage.get_metrics_by_agent("agent-1")
    assert got == m
    assert got.value == 0.30000000000000004


async def test_integer_value_comes_back_as_float(storage: Storage) -> None:
    await storage.store_metric(metric("int", 7))
    (got,) = await storage.get_metrics_by_agent("a1")
    assert got.value == 7.0
    assert isinstance(got.value, float)


async def test_crate_constructor_chain_persists(storage: Storage) -> None:
    m = MetricModel.new("tasks_completed", 42.0, "count").with_agent("w1").with_tag("q", "high")
    await storage.store_metric(m)
    assert await storage.get_metrics_by_agent("w1") == [m]


async def test_metrics_by_agent_with_and_without_type(storage: Storage) -> None:
    await storage.store_metrics(
        [
            metric("l2", 2.0, ts=2),
            metric("c1", 1.0, metric_type="cpu", unit="%", ts=1),
            metric("l1", 1.0, ts=1),
            metric("other", 9.0, agent_id="a2", ts=0),
            metric("free", 9.0, agent_id=None, ts=0),
        ]
    )
    assert [m.id for m in await storage.get_metrics_by_agent("a1")] == ["c1", "l1", "l2"]
    assert [m.id for m in await storage.get_metrics_by_agent("a1", "latency")] == ["l1", "l2"]
    assert [m.id for m in await storage.get_metrics_by_agent("a1", "cpu")] == ["c1"]
    assert await storage.get_metrics_by_agent("a1", "memory") == []
    assert await storage.get_metrics_by_agent("nobody") == []


async def test_store_metric_duplicate_conflicts(storage: Storage) -> None:
    await storage.store_metric(metric("same", 1.0))
    with pytest.raises(ConflictError):
        await storage.store_metric(metric("same", 2.0))
    assert [m.value for m in await storage.get_metrics_by_agent("a1")] == [1.0]


async def test_store_metrics_duplicate_in_batch_stores_nothing(storage: Storage) -> None:
    with pytest.raises(ConflictError):
        await storage.store_metrics([metric("x", 1.0), metric("y", 2.0), metric("x", 3.0)])
    assert await storage.get_metrics_by_agent("a1") == []


async def test_store_metrics_duplicate_of_stored_stores_nothing(storage: Storage) -> None:
    await storage.store_metric(metric("old", 1.0))
    with pytest.raises(ConflictError):
        await storage.store_metrics([metric("new", 2.0), metric("old", 3.0)])
    assert [m.id for m in await storage.get_metrics_by_agent("a1")] == ["old"]


async def test_store_metrics_invalid_member_stores_nothing(storage: Storage) -> None:
    with pytest.raises(ValidationError, match=r"metric\.value"):
        await storage.store_metrics([metric("ok", 1.0), metric("bad", float("nan"))])
    assert await storage.get_metrics_by_agent("a1") == []


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), "1.5", True, None, [1.0]], ids=repr
)
async def test_metric_value_must_be_a_finite_number(storage: Storage, value: Any) -> None:
    with pytest.raises(ValidationError, match=r"metric\.value"):
        await storage.store_metric(metric("v", value))
    assert await storage.get_metrics_by_agent("a1") == []


@pytest.mark.parametrize(
    "tags", [{"n": 1}, {1: "x"}, {"k": None}, ["a"], {"k": "a\x00b"}], ids=repr
)
async def test_metric_tags_must_map_text_to_text(storage: Storage, tags: Any) -> None:
    m = metric("t", 1.0)
    m.tags = tags
    with pytest.raises(ValidationError, match=r"metric\.tags"):
        await storage.store_metric(m)
    assert await storage.get_metrics_by_agent("a1") == []


async def _crate_rows(storage: Storage) -> dict[tuple[str | None, str], MetricModel]:
    rows = await storage.get_aggregated_metrics("latency", at(0), at(100))
    out = {(r.agent_id, r.unit): r for r in rows}
    assert len(out) == len(rows), "one row per agent and unit"
    return out


async def test_get_aggregated_metrics_one_row_per_agent_and_unit(storage: Storage) -> None:
    await storage.store_metrics(
        [
            metric("a1-1", 10.0, ts=1),
            metric("a1-2", 20.0, ts=2),
            metric("a1-3", 36.0, ts=3),
            metric("a1-s", 2.5, unit="s", ts=4),
            metric("a2-1", 5.0, agent_id="a2", ts=5),
            metric("none", 7.0, agent_id=None, ts=6),
            metric("cpu", 99.0, metric_type="cpu", ts=7),
        ]
    )
    rows = await _crate_rows(storage)
    assert set(rows) == {("a1", "ms"), ("a1", "s"), ("a2", "ms"), (None, "ms")}
    ms = rows[("a1", "ms")]
    assert ms.metric_type == "latency"
    assert ms.value == pytest.approx(22.0)
    assert int(ms.tags["count"]) == 3
    assert float(ms.tags["min"]) == 10.0
    assert float(ms.tags["max"]) == 36.0
    assert float(ms.tags["sum"]) == 66.0
    # Mixed units are never averaged together.
    seconds = rows[("a1", "s")]
    assert seconds.value == 2.5
    assert int(seconds.tags["count"]) == 1
    assert rows[("a2", "ms")].value == 5.0
    assert rows[(None, "ms")].value == 7.0


async def test_get_aggregated_metrics_range_is_inclusive(storage: Storage) -> None:
    await storage.store_metrics(
        [
            metric("before", 1000.0, ts=-0.000_001),
            metric("start", 1.0, ts=0),
            metric("middle", 2.0, ts=50),
            metric("end", 3.0, ts=100),
            metric("after", 1000.0, ts=100.000_001),
        ]
    )
    row = (await _crate_rows(storage))[("a1", "ms")]
    assert int(row.tags["count"]) == 3
    assert row.value == pytest.approx(2.0)
    by_epoch = await storage.get_aggregated_metrics(
        "latency", at(0).timestamp(), at(100).timestamp()
    )
    assert [int(r.tags["count"]) for r in by_epoch] == [3]


async def test_get_aggregated_metrics_of_nothing(storage: Storage) -> None:
    await storage.store_metric(metric("m", 1.0, ts=500))
    assert await storage.get_aggregated_metrics("latency", at(0), at(100)) == []
    assert await storage.get_aggregated_metrics("unknown", at(0), at(1000)) == []


VALUES_A1 = [12.0, 3.5, 7.25, 99.0, 0.5, 42.0, 42.0, 18.125, 5.0, 61.0, 2.0]
VALUES_A2 = [1.0, 2.0]


async def _store_spread(storage: Storage) -> None:
    batch = [metric(f"a1-{i}", v, ts=i) for i, v in enumerate(VALUES_A1)]
    batch += [metric(f"a2-{i}", v, agent_id="a2", ts=i) for i, v in enumerate(VALUES_A2)]
    batch.append(metric("cpu", 1e9, metric_type="cpu"))
    batch.append(metric("late", 1e9, ts=1000))
    await storage.store_metrics(batch)


async def test_aggregate_metrics_statistics_per_agent(storage: Storage) -> None:
    await _store_spread(storage)
    aggs = await storage.aggregate_metrics("latency", at(0), at(100))
    by_agent = {a.group["agent_id"]: a for a in aggs}
    assert set(by_agent) == {"a1", "a2"}
    assert len(aggs) == 2
    for agent_id, values in (("a1", VALUES_A1), ("a2", VALUES_A2)):
        agg = by_agent[agent_id]
        assert agg.metric_type == "latency"
        assert agg.unit == "ms"
        assert agg.bucket_start is None
        _expect(agg, values)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 101])
async def test_aggregate_metrics_percentiles_interpolate(storage: Storage, n: int) -> None:
    values = [float((i * 37) % 101) + i / 8 for i in range(n)]
    await storage.store_metrics([metric(f"m{i}", v) for i, v in enumerate(values)])
    (agg,) = await storage.aggregate_metrics("latency", at(0), at(0), group_by=())
    assert agg.group == {}
    _expect(agg, values)


@pytest.mark.parametrize(
    ("values", "total"),
    [
        ([1.7e308, 1.7e308], math.inf),
        ([-1.7e308, -1.7e308, 1.0], -math.inf),
        ([-1.7e308, 1.7e308], 0.0),
        ([-1.7e308, 1.7e308, 1.7e308], 1.7e308),
    ],
    ids=["over", "under", "opposite", "opposite-and-over"],
)
async def test_aggregate_metrics_near_the_float_limit(
    storage: Storage, values: list[float], total: float
) -> None:
    # The exact sum may leave the float range (then it is ±inf, as IEEE addition gives), but
    # the mean and percentiles lie between min and max and must be finite, on every backend.
    await storage.store_metrics([metric(f"m{i}", v) for i, v in enumerate(values)])
    (agg,) = await storage.aggregate_metrics("latency", at(0), at(0), group_by=())
    assert agg.count == len(values)
    assert agg.sum == total
    assert agg.mean == pytest.approx(math.fsum(v / len(values) for v in values), rel=1e-12)
    assert (agg.min, agg.max) == (min(values), max(values))
    for name in ("mean", "p50", "p95", "p99"):
        assert agg.min <= getattr(agg, name) <= agg.max, name


async def test_get_aggregated_metrics_near_the_float_limit(storage: Storage) -> None:
    await storage.store_metrics([metric("big1", 1.7e308), metric("big2", 1.7e308)])
    (row,) = await storage.get_aggregated_metrics("latency", at(0), at(0))
    assert row.value == 1.7e308  # the mean, though the sum is beyond the float range
    assert row.tags["sum"] == "inf"
    assert row.tags["count"] == "2"


async def test_aggregate_metrics_never_mixes_units(storage: Storage) -> None:
    await storage.store_metrics(
        [metric("ms1", 100.0), metric("ms2", 300.0), metric("s1", 0.2, unit="s")]
    )
    aggs = await storage.aggregate_metrics("latency", at(0), at(0))
    by_unit = {a.unit: a for a in aggs}
    assert set(by_unit) == {"ms", "s"}
    _expect(by_unit["ms"], [100.0, 300.0])
    _expect(by_unit["s"], [0.2])


async def test_aggregate_metrics_group_by_tag(storage: Storage) -> None:
    await storage.store_metrics(
        [
            metric("eu1", 1.0, tags={"region": "eu", "host": "h1"}),
            metric("eu2", 3.0, agent_id="a2", tags={"region": "eu"}),
            metric("us1", 10.0, tags={"region": "us"}),
            metric("none", 100.0, tags={"host": "h1"}),
        ]
    )
    aggs = await storage.aggregate_metrics("latency", at(0), at(0), group_by=["tag:region"])
    by_region = {a.group["tag:region"]: a for a in aggs}
    assert set(by_region) == {"eu", "us", None}
    _expect(by_region["eu"], [1.0, 3.0])
    _expect(by_region["us"], [10.0])
    _expect(by_region[None], [100.0])

    both = await storage.aggregate_metrics(
        "latency", at(0), at(0), group_by=("agent_id", "tag:host")
    )
    groups = {(a.group["agent_id"], a.group["tag:host"]): a.count for a in both}
    assert groups == {("a1", "h1"): 2, ("a2", None): 1, ("a1", None): 1}


async def test_aggregate_metrics_epoch_aligned_buckets(storage: Storage) -> None:
    minute = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    next_minute = minute + timedelta(minutes=1)
    # T0 is 12:00:00.123456, so at(59.876544) is exactly 12:01:00.
    await storage.store_metrics(
        [
            metric("b0-1", 1.0, ts=0),
            metric("b0-2", 2.0, ts=59.876_543),
            metric("b1-1", 10.0, ts=59.876_544),
            metric("b1-2", 30.0, ts=100),
            metric("b3-1", 7.0, ts=200),
        ]
    )
    for bucket in (timedelta(minutes=1), 60, 60.0):
        aggs = await storage.aggregate_metrics(
            "latency", at(0), at(300), group_by=(), bucket=bucket
        )
        assert [a.bucket_start for a in aggs] == [
            minute,
            next_minute,
            minute + timedelta(minutes=3),
        ]
        _expect(aggs[0], [1.0, 2.0])
        _expect(aggs[1], [10.0, 30.0])
        _expect(aggs[2], [7.0])


async def test_buckets_before_the_epoch_floor_too(storage: Storage) -> None:
    before_epoch = datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC)
    m1 = metric("pre", 1.0)
    m1.timestamp = before_epoch
    m2 = metric("post", 2.0)
    m2.timestamp = before_epoch + timedelta(seconds=45)
    await storage.store_metrics([m1, m2])
    aggs = await storage.aggregate_metrics(
        "latency", before_epoch, before_epoch + timedelta(minutes=1), group_by=(), bucket=60
    )
    assert [(a.bucket_start, a.count) for a in aggs] == [
        (datetime(1969, 12, 31, 23, 59, tzinfo=UTC), 1),
        (datetime(1970, 1, 1, tzinfo=UTC), 1),
    ]


async def test_store_metrics_of_an_empty_batch(storage: Storage) -> None:
    await storage.store_metrics([])
    assert await storage.metrics.find_all() == []


async def test_aggregate_metrics_range_is_inclusive_and_accepts_epoch(storage: Storage) -> None:
    await storage.store_metrics(
        [
            metric("before", 500.0, ts=-0.000_001),
            metric("start", 1.0, ts=0),
            metric("end", 2.0, ts=10),
            metric("after", 500.0, ts=10.000_001),
        ]
    )
    for start, end in ((at(0), at(10)), (at(0).timestamp(), at(10).timestamp())):
        (agg,) = await storage.aggregate_metrics("latency", start, end)
        _expect(agg, [1.0, 2.0])


async def test_aggregate_metrics_of_nothing(storage: Storage) -> None:
    assert await storage.aggregate_metrics("latency", T0, at(10)) == []


@pytest.mark.parametrize(
    "group_by",
    ["agent", ["tag:"], ["unit"], ["agent_id", "tags"], [5], ["metric_type"], ["tag"]],
    ids=repr,
)
async def test_aggregate_metrics_bad_group_by(storage: Storage, group_by: Any) -> None:
    await storage.store_metric(metric("m", 1.0))
    with pytest.raises(ValidationError, match="group_by"):
        await storage.aggregate_metrics("latency", at(0), at(1), group_by=group_by)


@pytest.mark.parametrize("bucket", [0, -60, "1m", float("nan")], ids=repr)
async def test_aggregate_metrics_bad_bucket(storage: Storage, bucket: Any) -> None:
    with pytest.raises(ValidationError, match="bucket"):
        await storage.aggregate_metrics("latency", at(0), at(1), bucket=bucket)


@pytest.mark.parametrize(
    ("start", "end"), [("yesterday", at(1)), (at(0), None), (datetime(2024, 5, 1), at(1))]
)
async def test_aggregation_bad_range(storage: Storage, start: Any, end: Any) -> None:
    with pytest.raises(ValidationError):
        await storage.aggregate_metrics("latency", start, end)
    with pytest.raises(ValidationError):
        await storage.get_aggregated_metrics("latency", start, end)


__all__ = [name for name in list(globals()) if name.startswith("test_")]
