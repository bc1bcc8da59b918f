"""``bench.task_path_bench`` runs end to end at ``--quick`` sizes.

The peers (huey, procrastinate, aiosqlite) belong to the ``bench`` extra, not to the test
install, so the run leaves them out: every other row runs, PostgreSQL's in schemas of their own
in the session's database.
"""

from __future__ import annotations

import asyncio

from bench.common import Options
from bench.task_path_bench import run_all


def test_quick_run_without_peers(pg_url: str) -> None:
    outcome = asyncio.run(run_all(Options(quick=True, repeat=1), peers=False, pg_url=pg_url))

    benches = {r.bench for r in outcome.results}
    assert benches == {
        "sqlite.store",
        "sqlite.claims",
        "sqlite.batches",
        "pg.store",
        "pg.claims",
        "pg.batches",
        "sqlite.get_task",
        "sqlite.tasks.find_by_id",
        "sqlite.events.find_by_id",
        "sqlite.events_by_agent",
        "pg.aggregate",
        "sqlite.events.64",
    }
    assert all(r.ops > 0 and r.ops_per_s > 0 for r in outcome.results)
    # Every library row has its ratio against the hand-written code; no peer row ran.
    with_ratio = [r for r in outcome.results if r.baseline is not None]
    assert with_ratio
    assert all(r.ratio is not None for r in with_ratio)
    assert not any(
        r.variant.startswith(("huey", "procrastinate", "aiosqlite")) for r in outcome.results
    )

    counts = {(c.backend, c.side, c.op): c for c in outcome.counts}
    # The hand-written code sends one statement, one commit, one round trip per step.
    for op in ("INSERT task", "claim (SKIP LOCKED)", "complete (UPDATE)"):
        c = counts["postgresql", "asyncpg", op]
        assert (c.statements, c.commits, c.round_trips) == (1, 1, 1)
    for op in ("INSERT task", "claim (UPDATE … RETURNING)", "complete (UPDATE)"):
        c = counts["sqlite", "sqlite3", op]
        assert (c.statements, c.commits) == (1, 1)
    lone = counts["sqlite", "library", "store_task"]
    assert lone.statements >= 1
    assert lone.commits == 1
