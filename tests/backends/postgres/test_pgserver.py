"""The test harness that finds or starts a PostgreSQL server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import asyncpg
import pytest

from tests import pgserver


@pytest.fixture
def no_env_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pgserver.ENV_URL, raising=False)
    monkeypatch.delenv(pgserver.ENV_CLUSTER, raising=False)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _has_socket(folder: Path) -> bool:
    return any(p.name.startswith(".s.PGSQL.") for p in folder.iterdir())


@pytest.mark.slow
async def test_throwaway_cluster_starts_serves_and_is_removed(
    monkeypatch: pytest.MonkeyPatch, no_env_server: None
) -> None:
    try:
        pgserver.find_bindir()
    except pgserver.Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    monkeypatch.setenv(pgserver.ENV_CLUSTER, "1")
    with pgserver.session_database() as db:
        cluster = db.server.cluster
        assert db.server.origin == "cluster"
        assert cluster is not None
        root, port = cluster.root, cluster.port
        assert (root / "data" / "PG_VERSION").is_file()
        assert db.created
        assert db.url == f"postgresql://postgres@127.0.0.1:{port}/{db.name}"
        conn = await asyncpg.connect(db.url)
        try:
            await conn.execute("CREATE TABLE probe (x int)")
            await conn.execute("INSERT INTO probe VALUES (1), (2)")
            assert await conn.fetchval("SELECT sum(x) FROM probe") == 3
            assert await conn.fetchval("SELECT current_database()") == db.name
        finally:
            await conn.close()
        # The unix socket lives in the cluster's own folder, not the system's.
        assert _has_socket(root)
    assert not root.exists()
    assert not _listening(port)


def test_env_url_that_does_not_answer_is_an_error_not_a_fallback(
    monkeypatch: pytest.MonkeyPatch, no_env_server: None
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    monkeypatch.setenv(pgserver.ENV_URL, f"postgresql://postgres@127.0.0.1:{dead_port}/postgres")
    with pytest.raises(pgserver.Unavailable, match=pgserver.ENV_URL):
        pgserver.locate()


async def test_env_url_is_used_and_session_database_is_dropped(
    monkeypatch: pytest.MonkeyPatch, no_env_server: None, pg_url: str
) -> None:
    monkeypatch.setenv(pgserver.ENV_URL, pg_url)
    with pgserver.session_database() as db:
        assert db.server.origin == "env"
        assert db.server.cluster is None
        assert db.created
        conn = await asyncpg.connect(db.url)
        try:
            assert await conn.fetchval("SELECT current_database()") == db.name
        finally:
            await conn.close()
    conn = await asyncpg.connect(pg_url)
    try:
        gone = await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", db.name)
    finally:
        await conn.close()
    assert gone == 0


async def test_session_database_is_fresh_and_schemas_drop(pg_url: str) -> None:
    schema = pgserver.new_schema_name()
    conn = await asyncpg.connect(pg_url)
    try:
        assert (await conn.fetchval("SELECT current_database()")).startswith("swarm_test_")
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".t (x int)')
        await pgserver.drop_schema(pg_url, schema)
        left = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
    finally:
        await conn.close()
    assert left == 0


def test_local_server_that_refuses_us_falls_back_to_a_cluster(
    monkeypatch: pytest.MonkeyPatch, no_env_server: None
) -> None:
    if not _listening(5432):
        pytest.skip("nothing listens on 127.0.0.1:5432")
    monkeypatch.setattr(pgserver, "LOCAL_URL", "postgresql://no_such_role@127.0.0.1:5432/x")
    started: list[bool] = []

    def fake_cluster() -> pgserver.Cluster:
        started.append(True)
        return pgserver.Cluster(Path("/nonexistent"), Path("/nonexistent"), 1, None)

    monkeypatch.setattr(pgserver, "start_cluster", fake_cluster)
    server = pgserver.locate()
    assert server.origin == "cluster"
    assert started == [True]


def test_no_server_and_no_binaries_gives_every_reason(
    monkeypatch: pytest.MonkeyPatch, no_env_server: None
) -> None:
    monkeypatch.setattr(pgserver, "_answers", lambda host, port: False)

    def no_binaries() -> pgserver.Cluster:
        raise pgserver.Unavailable("no PostgreSQL binaries (initdb, pg_ctl) found")

    monkeypatch.setattr(pgserver, "start_cluster", no_binaries)
    with pytest.raises(pgserver.Unavailable) as caught:
        pgserver.locate()
    assert "nothing listens on 127.0.0.1:5432" in str(caught.value)
    assert "no PostgreSQL binaries" in str(caught.value)
    assert "\n" not in str(caught.value)
