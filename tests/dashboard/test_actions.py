"""Read-only by default; actions need the CSRF token, the same origin and a confirmation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ruv_swarm_persistence import TaskModel
from ruv_swarm_persistence.query import QueryBuilder
from ruv_swarm_persistence.storage import Storage
from tests.dashboard.conftest import TOKEN, client_of, make_app

CONFIRM = {"confirm": True}
GOOD = {"X-CSRF-Token": TOKEN}


async def statuses(storage: Storage) -> dict[str, str]:
    return {t.id: t.status.value for t in await storage.query(QueryBuilder(TaskModel))}


async def test_read_only_refuses_every_action_and_changes_nothing(
    client: httpx.AsyncClient, storage: Storage
) -> None:
    before = await statuses(storage)
    for path in ("/api/tasks/t2/cancel", "/api/tasks/t6/retry", "/api/dead-letters/retry"):
        response = await client.post(path, json=CONFIRM, headers=GOOD)
        assert response.status_code == 403
        assert "--allow-actions" in response.json()["error"]
    for method in ("PUT", "PATCH", "DELETE"):
        assert (await client.request(method, "/api/tasks/t2")).status_code == 405
    assert (await client.post("/api/overview")).status_code == 405
    assert await statuses(storage) == before


async def test_read_only_pages_carry_no_token(client: httpx.AsyncClient) -> None:
    page = (await client.get("/tasks")).text
    assert '<meta name="csrf-token" content="">' in page
    assert TOKEN not in page
    assert '<meta name="actions" content="off">' in page


@pytest.fixture
async def acting(storage: Storage) -> Any:
    async with client_of(make_app(storage, allow_actions=True)) as c:
        yield c


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, CONFIRM, 403),  # no token
        ({"X-CSRF-Token": "guess"}, CONFIRM, 403),
        (GOOD | {"Origin": "http://evil.example"}, CONFIRM, 403),
        (GOOD | {"Sec-Fetch-Site": "cross-site"}, CONFIRM, 403),
        (GOOD, {}, 400),  # not confirmed
        (GOOD, {"confirm": "yes"}, 400),
    ],
)
async def test_an_action_without_token_origin_or_confirmation_is_refused(
    acting: httpx.AsyncClient,
    storage: Storage,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
) -> None:
    before = await statuses(storage)
    response = await acting.post("/api/tasks/t2/cancel", json=body, headers=headers)
    assert response.status_code == status
    assert await statuses(storage) == before


async def test_cancel_from_the_page_origin_with_token_and_confirmation(
    acting: httpx.AsyncClient, storage: Storage
) -> None:
    page = (await acting.get("/tasks/t2")).text
    assert f'<meta name="csrf-token" content="{TOKEN}">' in page
    headers = GOOD | {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
    response = await acting.post("/api/tasks/t2/cancel", json=CONFIRM, headers=headers)
    assert response.status_code == 200
    assert sorted(response.json()["cancelled"]) == ["t2", "t3", "t4"]
    after = await statuses(storage)
    assert {k for k, v in after.items() if v == "cancelled"} == {"t2", "t3", "t4", "t8", "t10"}
    # A finished task cannot be cancelled (the storage says why); a missing one is 404.
    again = await acting.post("/api/tasks/t1/cancel", json=CONFIRM, headers=GOOD)
    assert again.status_code == 400
    assert "completed" in again.json()["error"]
    missing = await acting.post("/api/tasks/none/cancel", json=CONFIRM, headers=GOOD)
    assert missing.status_code == 404


async def test_retry_a_dead_letter(acting: httpx.AsyncClient, storage: Storage) -> None:
    response = await acting.post("/api/tasks/t6/retry", json=CONFIRM, headers=GOOD)
    assert response.status_code == 200
    assert response.json()["task"]["status"] == "pending"
    assert response.json()["task"]["retry_count"] == 0
    assert (await statuses(storage))["t6"] == "pending"
    assert await storage.get_failed_tasks() == []
    # Only a dead letter can be retried: the storage's refusal is a conflict.
    again = await acting.post("/api/tasks/t1/retry", json=CONFIRM, headers=GOOD)
    assert again.status_code == 409
    missing = await acting.post("/api/tasks/none/retry", json=CONFIRM, headers=GOOD)
    assert missing.status_code == 404


async def test_retry_every_dead_letter(acting: httpx.AsyncClient, storage: Storage) -> None:
    refused = await acting.post("/api/dead-letters/retry", json=CONFIRM)
    assert refused.status_code == 403
    response = await acting.post("/api/dead-letters/retry", json=CONFIRM, headers=GOOD)
    assert response.json() == {"retried": 1}
    assert (await statuses(storage))["t6"] == "pending"


async def test_pause_and_resume_a_schedule(
    client: httpx.AsyncClient, acting: httpx.AsyncClient, storage: Storage
) -> None:
    await storage.store_schedule("nightly", 3600, {"task_type": "build"})
    listed = (await client.get("/api/schedules")).json()
    assert [(s["name"], s["paused"], s["task_type"]) for s in listed["schedules"]] == [
        ("nightly", False, "build")
    ]
    refused = await client.post("/api/schedules/nightly/pause", json=CONFIRM, headers=GOOD)
    assert refused.status_code == 403  # read-only
    no_token = await acting.post("/api/schedules/nightly/pause", json=CONFIRM)
    assert no_token.status_code == 403
    assert not (await storage.get_schedule("nightly")).paused  # type: ignore[union-attr]
    paused = await acting.post("/api/schedules/nightly/pause", json=CONFIRM, headers=GOOD)
    assert paused.json() == {"name": "nightly", "paused": True}
    assert (await storage.get_schedule("nightly")).paused  # type: ignore[union-attr]
    assert (await client.get("/api/schedules")).json()["paused"] == 1
    resumed = await acting.post("/api/schedules/nightly/resume", json=CONFIRM, headers=GOOD)
    assert resumed.json() == {"name": "nightly", "paused": False}
    missing = await acting.post("/api/schedules/none/pause", json=CONFIRM, headers=GOOD)
    assert missing.status_code == 404


async def test_a_foreign_host_name_is_refused(storage: Storage) -> None:
    app = make_app(storage, allowed_hosts=["127.0.0.1", "localhost"])
    async with client_of(app) as c:
        assert (await c.get("/api/overview")).status_code == 200
        rebound = await c.get("/api/overview", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400


async def test_every_answer_forbids_other_origins_content(client: httpx.AsyncClient) -> None:
    for path in ("/", "/api/overview", "/static/js/common.js", "/metrics"):
        response = await client.get(path)
        assert response.status_code == 200
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self';" in csp
        assert response.headers["x-frame-options"] == "DENY"
