"""What ``swarmdb`` prints: local times and ``--utc``, CSV/TSV, ``--offset``, aligned numbers,
the events table, unknown metrics and the metrics chart."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from .conftest import COMMAND_TIMEOUT, Demo, Ran, assert_one_line_error, cli_env, swarmdb

#: A zone with a half-hour offset and no daylight saving time: +05:30 all year.
KOLKATA = timezone(timedelta(hours=5, minutes=30))
BARS = set("▁▂▃▄▅▆▇█")


def swarmdb_in(tz: str, *args: str) -> Ran:
    """``swarmdb ARGS`` in the time zone ``tz`` (the ``TZ`` variable)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruv_swarm_persistence", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=cli_env() | {"TZ": tz},
        check=False,
    )
    return Ran(list(args), done.returncode, done.stdout, done.stderr)


# --- times --------------------------------------------------------------------------------


def test_tables_show_local_time_with_its_offset_and_utc_on_request(demo: Demo) -> None:
    db = ["--db", str(demo.path)]
    last = swarmdb("events", "-n", "1", "--json", *db).json_lines()[0]
    at = datetime.fromisoformat(last["timestamp"])
    local = swarmdb_in("Asia/Kolkata", "events", "-n", "1", *db)
    assert local.returncode == 0, local.describe()
    assert f"{at.astimezone(KOLKATA):%Y-%m-%d %H:%M:%S} +05:30" in local.stdout
    for utc in (["--utc", "events", "-n", "1", *db], ["events", "-n", "1", "--utc", *db]):
        shown = swarmdb_in("Asia/Kolkata", *utc)
        assert f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} +00:00" in shown.stdout
        assert "+05:30" not in shown.stdout
    messages = swarmdb_in("Asia/Kolkata", "messages", "-n", "3", *db)
    assert messages.stdout.count("+05:30") >= 3, messages.describe()
    # Machine output stays in UTC wherever it runs.
    lines = swarmdb_in("Asia/Kolkata", "events", "-n", "1", "--json", *db).json_lines()
    assert lines[0]["timestamp"] == last["timestamp"]


def test_since_and_until_read_offsets_and_local_time(demo: Demo) -> None:
    db = ["--db", str(demo.path)]
    last = swarmdb("events", "-n", "1", "--json", *db).json_lines()[0]
    at = datetime.fromisoformat(last["timestamp"])
    later = at + timedelta(microseconds=1)

    def since(text: str, *more: str) -> list[int]:
        ran = swarmdb_in("Asia/Kolkata", *more, "events", "--since", text, "--json", *db)
        return [e["sequence"] for e in ran.json_lines()]

    plus_two = timezone(timedelta(hours=2))
    assert since(at.astimezone(plus_two).isoformat()) == [last["sequence"]]
    assert since(later.astimezone(plus_two).isoformat()) == []
    zulu = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert since(zulu) == [last["sequence"]]
    # Without an offset: local time (Kolkata here), or UTC with --utc.
    naive_local = at.astimezone(KOLKATA).replace(tzinfo=None).isoformat()
    assert since(naive_local) == [last["sequence"]]
    naive_utc = at.astimezone(UTC).replace(tzinfo=None).isoformat()
    assert since(naive_utc, "--utc") == [last["sequence"]]
    # Read as local time, the UTC wall clock is 5½ hours earlier: much more matches.
    assert len(since(naive_utc)) > 1

    until = swarmdb_in(
        "Asia/Kolkata", "events", "--until", naive_local, "-n", "0", "--json", *db
    ).json_lines()
    assert until
    assert until[-1]["sequence"] < last["sequence"]
    helped = swarmdb("events", "--help").stdout
    assert "local time" in helped


# --- CSV and TSV --------------------------------------------------------------------------


def _parse(ran: Ran, delimiter: str) -> list[dict[str, str]]:
    assert ran.returncode == 0, ran.describe()
    if delimiter == ",":
        return list(csv.DictReader(io.StringIO(ran.stdout)))
    header, *rows = ran.stdout.splitlines()
    return [dict(zip(header.split("\t"), row.split("\t"), strict=True)) for row in rows]


@pytest.mark.parametrize("fmt", ["--csv", "--tsv"])
@pytest.mark.parametrize(
    ("command", "lines"),
    [
        (["agents"], False),
        (["tasks", "-n", "0"], False),
        (["events", "-n", "0"], True),
        (["messages", "-n", "0"], False),
        (["metrics", "-n", "0"], False),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else "",
)
def test_listings_as_csv_and_tsv(demo: Demo, command: list[str], lines: bool, fmt: str) -> None:
    db = ["--db", str(demo.path)]
    whole = swarmdb(*command, "--json", *db)
    items = whole.json_lines() if lines else whole.json()
    rows = _parse(swarmdb(*command, fmt, *db), "," if fmt == "--csv" else "\t")
    assert len(rows) == len(items) > 0
    assert list(rows[0]) == list(items[0])  # the header: every field, in order
    for row, item in zip(rows, items, strict=True):
        for field, value in item.items():
            if isinstance(value, (dict, list, bool)):
                assert json.loads(row[field]) == value
            elif value is None:
                assert row[field] == ""
            elif field in ("timestamp", "created_at", "updated_at", "heartbeat"):
                assert datetime.fromisoformat(row[field]) == datetime.fromisoformat(value)
            else:
                assert row[field] == str(value)


def test_aggregated_metrics_as_csv(demo: Demo) -> None:
    ran = swarmdb("metrics", "cpu_usage", "--bucket", "1m", "--csv", "--db", str(demo.path))
    rows = _parse(ran, ",")
    assert list(rows[0])[:4] == ["metric_type", "agent_id", "bucket_start", "unit"]
    assert {r["agent_id"] for r in rows} == {a["agent_id"] for a in demo.summary["per_agent"]}
    assert all(float(r["p95"]) >= float(r["p50"]) for r in rows)
    assert not BARS & set(ran.stdout)


# --- offset -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "lines"),
    [
        (["agents"], False),
        (["tasks"], False),
        (["tasks", "--status", "completed"], False),
        (["events"], True),
        (["messages"], False),
        (["messages", "--agent", "coder-1"], False),
        (["metrics"], False),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else "",
)
def test_offset_skips_rows(demo: Demo, command: list[str], lines: bool) -> None:
    db = ["--db", str(demo.path)]

    def ids(*more: str) -> list[str]:
        ran = swarmdb(*command, *more, "--json", *db)
        return [i["id"] for i in (ran.json_lines() if lines else ran.json())]

    every = ids("-n", "6")
    assert len(every) == 6
    if lines:  # events: the newest first, printed oldest first
        assert ids("-n", "3", "--offset", "3") == every[:3]
    else:
        assert ids("-n", "3", "--offset", "3") == every[3:]
        assert ids("-n", "0", "--offset", "2")[:4] == every[2:]


# --- tables -------------------------------------------------------------------------------


def _columns(ran: Ran, header_word: str) -> tuple[str, list[str]]:
    """The header line of a table (the one naming ``header_word``) and its rows."""
    assert ran.returncode == 0, ran.describe()
    text = ran.stdout.splitlines()
    start = next(i for i, line in enumerate(text) if re.search(rf"\b{header_word}\b", line))
    rows = []
    for line in text[start + 2 :]:
        if not line.strip():
            break
        rows.append(line)
    return text[start], rows


def _right_aligned(header: str, rows: list[str], column: str) -> None:
    end = re.search(rf"\b{column}\b", header)
    assert end is not None, header
    edge = end.end()
    for row in rows:
        assert row[edge - 1].isdigit(), (column, row)
        assert row[edge : edge + 1] in ("", " "), (column, row)


def test_events_are_an_aligned_table(demo: Demo) -> None:
    ran = swarmdb("events", "-n", "12", "--db", str(demo.path))
    assert ran.stdout.splitlines()[0].startswith("12 events")
    header, rows = _columns(ran, "payload")
    assert header.split() == ["seq", "time", "type", "agent", "task", "payload"]
    assert len(rows) == 12
    _right_aligned(header, rows, "seq")
    type_at = header.index("type")
    assert all(row[type_at - 1] == " " and row[type_at] != " " for row in rows)


def test_numbers_are_right_aligned_with_one_precision(demo: Demo) -> None:
    ran = swarmdb("metrics", "task_duration_ms", "--db", str(demo.path))
    header, rows = _columns(ran, "mean")
    for column in ("count", "mean", "min", "p50", "p95", "p99", "max"):
        _right_aligned(header, rows, column)
    places = {len(token.split(".")[1]) for row in rows for token in row.split()[-6:]}
    assert len(places) == 1, rows
    header, rows = _columns(swarmdb("tasks", "-n", "10", "--db", str(demo.path)), "deps")
    assert len(rows) == 10
    _right_aligned(header, rows, "deps")


def test_counts_have_thousands_separators(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from ruv_swarm_persistence import EventModel\n"
            "from ruv_swarm_persistence.sync import open_storage\n"
            "with open_storage(sys.argv[1]) as s:\n"
            "    s.store_events([EventModel.new('tick', {'i': i}) for i in range(1200)])\n",
            str(db),
        ],
        check=True,
        timeout=COMMAND_TIMEOUT,
        env=cli_env(),
    )
    ran = swarmdb("events", "-n", "2", "--db", str(db))
    assert "1,200" in ran.stdout, ran.describe()
    assert "1,200" in swarmdb("status", "--db", str(db)).stdout


# --- metrics ------------------------------------------------------------------------------


def test_an_unknown_metric_lists_the_known_ones(demo: Demo) -> None:
    ran = swarmdb("metrics", "cpu_usag", "--db", str(demo.path))
    assert_one_line_error(ran, "cpu_usag", "cpu_usage, memory_usage, task_duration_ms")
    quiet = swarmdb("metrics", "cpu_usage", "--since", "2100-01-01", "--db", str(demo.path))
    assert quiet.returncode == 0, quiet.describe()  # known, but nothing in that window


@pytest.mark.parametrize("bucket", ["1m", "100ms"])
def test_bucketed_metrics_draw_a_chart(demo: Demo, bucket: str) -> None:
    agents = {a["agent_id"] for a in demo.summary["per_agent"]}
    ran = swarmdb("metrics", "cpu_usage", "--bucket", bucket, "--db", str(demo.path))
    assert ran.returncode == 0, ran.describe()
    drawn = [line for line in ran.stdout.splitlines() if BARS & set(line)]
    means = [line.split(" mean ") for line in drawn if " mean " in line]
    p95s = [line.split(" p95 ") for line in drawn if " p95 " in line]
    assert sorted(label.split()[0] for label, _ in means) == sorted(agents)  # one per agent
    assert len(p95s) == len(agents)
    assert all(set(chart.strip()) <= BARS | {" "} for _, chart in means + p95s)
    for fmt in ("--json", "--csv", "--tsv"):
        machine = swarmdb("metrics", "cpu_usage", "--bucket", bucket, fmt, "--db", str(demo.path))
        assert machine.returncode == 0, machine.describe()
        assert not BARS & set(machine.stdout)
    unbucketed = swarmdb("metrics", "cpu_usage", "--db", str(demo.path))
    assert not BARS & set(unbucketed.stdout)
