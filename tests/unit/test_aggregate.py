"""The shared aggregation arithmetic: sums, means and percentiles near the float limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ruv_swarm_persistence.aggregate import percentile, sum_and_mean

FINITE = st.floats(allow_nan=False, allow_infinity=False)


def test_sum_past_the_float_range_is_infinite_but_the_mean_is_not() -> None:
    assert sum_and_mean([1.7e308, 1.7e308]) == (math.inf, 1.7e308)
    assert sum_and_mean([-1.7e308, -1.7e308]) == (-math.inf, -1.7e308)
    big = 1.1984620899082105e308
    assert sum_and_mean([big] * 3) == (math.inf, big)
    # Partial sums leave the float range, the total does not.
    assert sum_and_mean([big] * 1000 + [-big] * 999) == (big, big / 1999)


def test_ordinary_values_keep_the_exact_sum() -> None:
    values = [0.1] * 10
    assert sum_and_mean(values) == (1.0, 0.1)


def test_percentile_between_opposite_limits_stays_finite() -> None:
    assert percentile([-1.7e308, 1.7e308], 0.5) == 0.0
    assert percentile([-1.7e308, 1.7e308], 0.99) == pytest.approx(0.98 * 1.7e308)


@given(st.lists(FINITE, min_size=1, max_size=50))
def test_mean_and_percentiles_lie_between_min_and_max(values: list[float]) -> None:
    ordered = sorted(values)
    _, mean = sum_and_mean(ordered)
    # fsum of v/n rounds each term, so allow the last few ulps beyond the extremes.
    slack = 4 * math.ulp(max(abs(ordered[0]), abs(ordered[-1])))
    assert ordered[0] - slack <= mean <= ordered[-1] + slack
    for p in (0.0, 0.5, 0.95, 0.99, 1.0):
        assert ordered[0] <= percentile(ordered, p) <= ordered[-1]
