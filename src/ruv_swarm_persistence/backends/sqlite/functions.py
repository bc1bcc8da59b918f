"""SQL functions the SQLite backend adds to each of its connections."""

from __future__ import annotations

from typing import Any

import apsw

from ...aggregate import sum_and_mean

__all__ = ["EXACT_SUM", "register"]

#: The aggregate ``exact_sum(x)``: the correctly rounded sum of the values (``math.fsum``, as
#: every backend sums), ``±inf`` past the float range. SQLite's ``sum()`` compensates but can
#: differ in the last bit after cancellations.
EXACT_SUM = "exact_sum"


class _ExactSum:
    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, *values: Any) -> None:
        self.values.append(values[0])

    def final(self) -> Any:
        return sum_and_mean(self.values)[0] if self.values else None


def register(conn: apsw.Connection) -> None:
    """Add the backend's SQL functions to ``conn``."""
    conn.create_aggregate_function(EXACT_SUM, _ExactSum, 1)
