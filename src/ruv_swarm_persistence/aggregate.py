"""Metric aggregation, computed once for every backend.

Sums use ``math.fsum`` (exact, so independent of row order) and percentiles interpolate
linearly between the closest ranks (PostgreSQL's ``percentile_cont``). Values near the float
limit stay well-behaved: a sum past it is ``±inf`` (as IEEE addition and SQLite's ``SUM`` give),
while the mean and the percentiles, which lie between the smallest and the largest value, are
computed so that they never overflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from . import _json
from ._time import from_us
from .codec import DEFAULT_LIMITS, Limits, check_text, duration_arg, time_arg
from .errors import ValidationError
from .models import MetricModel
from .storage import MetricAggregate

__all__ = ["MetricRow", "aggregate", "check_group_by", "crate_aggregate", "percentile"]

TAG_PREFIX: Final = "tag:"
#: 2**-600: a float sum of any realistic number of scaled values stays far below the limit.
_SCALE_DOWN: Final = 2.0**-600
_SCALE_UP: Final = 2.0**600


@dataclass(frozen=True, slots=True)
class MetricRow:
    """The columns aggregation needs from one metric row."""

    agent_id: str | None
    unit: str
    tags: str  # JSON text
    value: float
    timestamp: int


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolation percentile of non-empty ascending values (``0 <= p <= 1``)."""
    n = len(sorted_values)
    pos = p * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a, b = sorted_values[lo], sorted_values[hi]
    if not frac:
        return a
    span = b - a
    if math.isinf(span):
        # a and b near opposite float limits: this form stays between them.
        return a * (1 - frac) + b * frac
    return a + span * frac


def sum_and_mean(values: Sequence[float]) -> tuple[float, float]:
    """The exact sum (``±inf`` past the float range) and the mean (never overflowing)."""
    n = len(values)
    try:
        total = math.fsum(values)
    except OverflowError:
        # A partial sum left the float range (the total may not). Scaled by a power of two
        # no partial sum can overflow, and scaling back is exact: the total, or ±inf if it
        # is beyond the range. Values too small to matter next to such sums vanish.
        total = math.fsum(v * _SCALE_DOWN for v in values) * _SCALE_UP
    if math.isinf(total) or math.isinf(total / n):
        return total, math.fsum(v / n for v in values)
    return total, total / n


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    """Validate ``group_by`` names: ``agent_id`` or ``tag:<name>``."""
    if isinstance(group_by, str):
        group_by = (group_by,)
    if not isinstance(group_by, Sequence):
        raise ValidationError(
            f"must be a list of 'agent_id' and 'tag:<name>', got {type(group_by).__name__}",
            field="group_by",
        )
    out = []
    for name in group_by:
        if name == "agent_id" or (
            isinstance(name, str) and name.startswith(TAG_PREFIX) and len(name) > len(TAG_PREFIX)
        ):
            out.append(name)
        else:
            raise ValidationError(f"{name!r} is not 'agent_id' or 'tag:<name>'", field="group_by")
    return tuple(out)


def window_args(
    metric_type: Any, start: Any, end: Any, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, int, int]:
    """Validate the ``(metric_type, start, end)`` of an aggregate call; times in µs."""
    return (
        check_text(metric_type, "metric_type", limits),
        time_arg(start, "start"),
        time_arg(end, "end"),
    )


def grouping_args(group_by: Sequence[str], bucket: Any) -> tuple[tuple[str, ...], int | None]:
    """Validate ``group_by`` and ``bucket`` of ``aggregate_metrics``; the bucket in µs."""
    return check_group_by(group_by), None if bucket is None else duration_arg(bucket, "bucket")


def aggregate(
    metric_type: str,
    rows: Iterable[MetricRow],
    group_by: tuple[str, ...],
    bucket_us: int | None,
) -> list[MetricAggregate]:
    """Group rows by ``group_by`` + unit (+ epoch-aligned bucket) and compute statistics."""
    groups: dict[tuple[tuple[str | None, ...], str, int | None], list[float]] = {}
    for row in rows:
        tags: dict[str, str] | None = None
        key_parts: list[str | None] = []
        for name in group_by:
            if name == "agent_id":
                key_parts.append(row.agent_id)
            else:
                if tags is None:
                    tags = _json.loads(row.tags)
                key_parts.append(tags.get(name[len(TAG_PREFIX) :]))
        b = None if bucket_us is None else row.timestamp - row.timestamp % bucket_us
        groups.setdefault((tuple(key_parts), row.unit, b), []).append(row.value)

    def order(k: tuple[tuple[str | None, ...], str, int | None]) -> tuple[object, ...]:
        parts, unit, b = k
        return (
            tuple((p is not None, p or "") for p in parts),
            unit,
            -1 if b is None else b,
        )

    out = []
    for key in sorted(groups, key=order):
        parts, unit, b = key
        values = sorted(groups[key])
        total, mean = sum_and_mean(values)
        out.append(
            MetricAggregate(
                metric_type=metric_type,
                unit=unit,
                group=dict(zip(group_by, parts, strict=True)),
                bucket_start=None if b is None else from_us(b),
                count=len(values),
                sum=total,
                mean=mean,
                min=values[0],
                max=values[-1],
                p50=percentile(values, 0.50),
                p95=percentile(values, 0.95),
                p99=percentile(values, 0.99),
            )
        )
    return out


def crate_metric(
    metric_type: str,
    agent_id: str | None,
    unit: str,
    count: int,
    total: float,
    low: float,
    high: float,
    latest_us: int,
    mean: float | None = None,
) -> MetricModel:
    """One row of the crate's aggregate: ``value`` is the mean, ``tags`` the other figures.

    ``mean`` defaults to ``total / count``; give it when the total may have overflowed.
    """
    return MetricModel(
        id=f"{metric_type}:{agent_id if agent_id is not None else '*'}:{unit}",
        metric_type=metric_type,
        value=total / count if mean is None else mean,
        unit=unit,
        agent_id=agent_id,
        tags={
            "count": str(count),
            "min": repr(float(low)),
            "max": repr(float(high)),
            "sum": repr(float(total)),
        },
        timestamp=from_us(latest_us),
    )


def crate_order(agent_id: str | None, unit: str) -> tuple[bool, str, str]:
    """The order of the crate's aggregate rows: agents (the missing one first), then unit."""
    return (agent_id is not None, agent_id or "", unit)


def crate_aggregate(metric_type: str, rows: Iterable[MetricRow]) -> list[MetricModel]:
    """The crate's ``get_aggregated_metrics`` shape: one metric per agent and unit.

    ``value`` is the mean; ``tags`` hold ``count``, ``min``, ``max`` and ``sum`` as text.
    """
    latest: dict[tuple[str | None, str], int] = {}
    materialised = list(rows)
    for r in materialised:
        k = (r.agent_id, r.unit)
        latest[k] = max(latest.get(k, r.timestamp), r.timestamp)
    return [
        crate_metric(
            metric_type,
            agg.group["agent_id"],
            agg.unit,
            agg.count,
            agg.sum,
            agg.min,
            agg.max,
            latest[(agg.group["agent_id"], agg.unit)],
            agg.mean,
        )
        for agg in aggregate(metric_type, materialised, ("agent_id",), None)
    ]
