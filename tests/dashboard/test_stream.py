"""The live tail over a real server: events arrive as server-sent events as they commit."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from ruv_swarm_persistence import EventModel
from ruv_swarm_persistence.storage import Storage
from tests.dashboard.conftest import make_app

#: Bounds each wait; never an assertion about speed.
WAIT_S = 30


@asynccontextmanager
async def served(storage: Storage) -> AsyncIterator[str]:
    """The dashboard of ``storage`` on a free loopback port, in this event loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    config = uvicorn.Config(
        make_app(storage), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    # The socket listens already: requests made before the server runs wait for it.
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)
        sock.close()


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The ``swarm-event`` frames of a stream, decoded."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields.get("event") == "swarm-event":
                yield json.loads(fields["data"]) | {"frame_id": fields["id"]}
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value


async def test_new_events_arrive_filtered_by_type_and_agent(storage: Storage) -> None:
    async with served(storage) as url, httpx.AsyncClient(base_url=url, timeout=WAIT_S) as client:
        params = {"type": "task.failed", "agent": "a-busy"}
        async with client.stream("GET", "/api/events/stream", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = frames(response)
            await storage.store_events(
                [
                    EventModel.new("task.failed", {"n": 1}).with_agent("a-active"),
                    EventModel.new("task.claimed", {"n": 2}).with_agent("a-busy"),
                    EventModel.new("task.failed", {"n": 3}).with_agent("a-busy"),
                ]
            )
            first = await asyncio.wait_for(anext(stream), WAIT_S)
            assert first["payload"] == {"n": 3}
            assert first["event_type"] == "task.failed"
            assert first["agent_id"] == "a-busy"
            assert first["frame_id"] == str(first["sequence"])
            # Earlier events (before the request) are not replayed.
            assert first["sequence"] == 24


async def test_a_reconnecting_browser_resumes_after_its_last_event(storage: Storage) -> None:
    async with served(storage) as url, httpx.AsyncClient(base_url=url, timeout=WAIT_S) as client:
        headers = {"Last-Event-ID": "19"}
        async with client.stream("GET", "/api/events/stream", headers=headers) as response:
            stream = frames(response)
            got = [await asyncio.wait_for(anext(stream), WAIT_S) for _ in range(2)]
        assert [e["sequence"] for e in got] == [20, 21]


async def test_a_bad_filter_is_400(storage: Storage) -> None:
    async with served(storage) as url, httpx.AsyncClient(base_url=url, timeout=WAIT_S) as client:
        response = await client.get("/api/events/stream", params={"after": "x"})
        assert response.status_code == 400
