"""The API fuzzed against its own OpenAPI document: documented answers only, never a 500,
and no write to the database, whether actions are off or on (the fuzzer has no CSRF token)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
import schemathesis
import uvicorn
from schemathesis import checks

from ruv_swarm_persistence.backends.sqlite import SqliteStorage
from ruv_swarm_persistence.dashboard.openapi import openapi_document
from tests.dashboard.conftest import make_app
from tests.dashboard.swarm import populate

#: The live tail never ends: it is exercised by test_stream, not by the fuzzer.
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path="/api/events/stream")

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
TABLES = ("agents", "tasks", "task_dependencies", "events", "messages", "metrics")


def fingerprint(path: Path) -> str:
    """A digest of every row of every table: equal digests, equal databases."""
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        digest = hashlib.sha256()
        for table in TABLES:
            for row in db.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        db.close()


class Served:
    """The dashboard of a populated SQLite file, served from a thread with its own loop."""

    def __init__(self, path: Path, allow_actions: bool) -> None:
        self.path = path
        self.allow_actions = allow_actions
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.ready = threading.Event()
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by the fixture
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        fresh = not self.path.exists()
        storage = await SqliteStorage.open(self.path)
        try:
            if fresh:
                await populate(storage)
            app = make_app(storage, allow_actions=self.allow_actions)
            config = uvicorn.Config(app, log_level="warning", lifespan="off")
            self.server = uvicorn.Server(config)
            self.sock.setblocking(False)
            # The socket listens already: requests made before the server runs wait for it.
            serving = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
            self.ready.set()
            await serving
        finally:
            await storage.close()


@pytest.fixture(scope="module", params=["read-only", "actions"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    path = tmp_path_factory.getbasetemp() / "fuzzed.db"
    served = Served(path, allow_actions=request.param == "actions")
    served.thread.start()
    assert served.ready.wait(60)
    if served.error is not None:
        raise served.error
    before = fingerprint(path)
    yield served
    assert served.server is not None
    served.server.should_exit = True
    served.thread.join(30)
    assert fingerprint(path) == before  # nothing the fuzzer sent wrote anything


@schema.parametrize()
def test_api_answers_as_documented(case: schemathesis.Case, server: Served) -> None:
    response = case.call_and_validate(base_url=server.url, checks=CHECKS)
    if response.request.method not in ("GET", "HEAD"):
        assert response.status_code >= 400  # refused: no token, or not an action at all
