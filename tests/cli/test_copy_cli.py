"""``swarmdb copy``: the table it prints, its JSON, its exit status, and the progress hook."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import AgentModel, EventModel, MetricModel, TaskModel, init_storage
from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.cli import main, maintenance
from ruv_swarm_persistence.copy import PAGE, CopyReport, TableCopy, copy_storage
from ruv_swarm_persistence.storage import QueueLimit
from tests import pgserver

from .conftest import Demo, swarmdb

COPIED = ("agents", "tasks", "messages", "metrics", "events", "limits", "schedules", "retention")


def test_copy_prints_a_verified_row_per_table(demo: Demo, tmp_path: Path) -> None:
    ran = swarmdb("copy", str(demo.path), str(tmp_path / "copy.db"))
    assert ran.returncode == 0, ran.describe()
    rows = {
        cells[0]: cells
        for cells in (line.split() for line in ran.stdout.splitlines())
        if cells and cells[0] in COPIED
    }
    assert list(rows) == list(COPIED)
    assert all(cells[-1] == "ok" for cells in rows.values()), ran.stdout
    assert rows["tasks"][1] == f"{demo.summary['tasks']:,}"
    assert rows["events"][1] == f"{demo.summary['events']:,}"
    assert ran.stderr == ""  # progress bars only on a terminal


def test_copy_json_is_one_document(demo: Demo, tmp_path: Path) -> None:
    ran = swarmdb("copy", str(demo.path), str(tmp_path / "copy.db"), "--json")
    assert len(ran.stdout.splitlines()) == 1, ran.describe()
    doc = ran.json()
    assert doc["ok"] is True
    assert list(doc["tables"]) == list(COPIED)
    for table in doc["tables"].values():
        assert table["ok"] is True
        assert table["rows_copied"] == table["source_rows"]
        assert table["checksum"] == table["source_checksum"]
    assert doc["tables"]["tasks"]["rows_copied"] == demo.summary["tasks"]
    assert doc["rows"] == sum(t["rows_copied"] for t in doc["tables"].values())
    assert ran.stderr == ""


def test_a_copy_that_does_not_verify_exits_1(
    demo: Demo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def lost_a_row(*args: Any, **kwargs: Any) -> CopyReport:
        tables = {name: TableCopy(name, 3, 3, "same", "same") for name in COPIED}
        tables["metrics"] = TableCopy("metrics", 3, 2, "source", "other")
        return CopyReport(tables)

    monkeypatch.setattr(maintenance, "copy_storage", lost_a_row)
    with pytest.raises(SystemExit) as exited:
        main(["copy", str(demo.path), str(tmp_path / "copy.db")])
    assert exited.value.code == 1
    printed = capsys.readouterr()
    assert "MISMATCH" in printed.out
    assert printed.err.startswith("error: the copy does not match its source: metrics")


async def test_copy_storage_reports_increasing_counts_ending_at_the_totals() -> None:
    src, dst = MemoryStorage(), MemoryStorage()
    await src.store_agent(AgentModel.new("a-1", "worker", ["x"], id="a-1"))
    await src.store_tasks([TaskModel.new("x", {"i": i}) for i in range(PAGE + 5)])
    await src.store_metrics([MetricModel.new("cpu", float(i), "percent") for i in range(3)])
    await src.store_events([EventModel.new("e", {"i": i}) for i in range(2 * PAGE + 7)])
    calls: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)

    report = await copy_storage(
        src, dst, progress=lambda t, done, total: calls[t].append((done, total))
    )

    assert list(calls) == list(COPIED)  # every table announced first, in the order copied
    for table, seen in calls.items():
        rows = report.tables[table].destination_rows
        done = [d for d, _ in seen]
        assert done[0] == 0, table
        assert done == sorted(done), table
        assert all(d <= total for d, total in seen), table
        assert seen[-1] == (rows, rows), table
    assert [d for d, _ in calls["events"]] == [0, PAGE, 2 * PAGE, 2 * PAGE + 7]
    assert calls["messages"] == [(0, 0)]
    assert calls["retention"] == [(0, 0)]
    await src.close()
    await dst.close()


def test_copy_carries_the_queue_controls_from_sqlite_to_postgresql_and_back(
    tmp_path: Path, pg_url: str
) -> None:
    source, back = tmp_path / "source.db", tmp_path / "back.db"
    schema = pgserver.new_schema_name("copycli")
    middle = f"{pg_url}?schema={schema}"

    async def make() -> None:
        async with await SqliteStorage.open(source) as s:
            await s.store_tasks([TaskModel.new("x", concurrency_key="k") for _ in range(3)])
            await s.set_concurrency_limit("k", 1)
            await s.set_rate_limit("k", 5, per=timedelta(minutes=1))
            await s.store_schedule("tick", "30s", {"task_type": "x"})
            await s.store_schedule("paused", "1h", {"task_type": "x"})
            await s.pause_schedule("paused")
            await s.apply_retention("events:1d")

    async def controls(url: str) -> tuple[Any, ...]:
        async with await init_storage(url) as s:
            report = await s.retention_report()
            return (await s.list_queue_limits(), await s.list_schedules(), report.last_run)

    asyncio.run(make())
    try:
        there = swarmdb("copy", str(source), middle, "--json")
        again = swarmdb("copy", middle, str(back), "--json")
        for ran in (there, again):
            doc = ran.json()
            assert doc["ok"] is True
            counts = {name: doc["tables"][name]["rows_copied"] for name in COPIED[-3:]}
            assert counts == {"limits": 1, "schedules": 2, "retention": 1}
        want = asyncio.run(controls(str(source)))
        assert want[0] == [QueueLimit("k", 1, 5, timedelta(minutes=1))]
        assert asyncio.run(controls(middle)) == want
        assert asyncio.run(controls(str(back))) == want
    finally:
        asyncio.run(pgserver.drop_schema(pg_url, schema))
