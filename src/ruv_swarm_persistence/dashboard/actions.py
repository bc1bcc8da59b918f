"""The actions an operator may take from the pages: cancel a task, retry dead letters, pause
or resume a schedule.

Off unless the server was started with them allowed (``swarmdb serve --allow-actions``); then
each request must carry the page's CSRF token in ``X-CSRF-Token``, come from the dashboard's own
origin, and say ``{"confirm": true}`` (the page asks first). A page of another site can neither
read the token nor send the header without the browser asking this server first, which it
refuses (no CORS), so it cannot act through an operator's browser.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .api import Dashboard, error, json_endpoint
from .params import text_param
from .views import task_json

__all__ = ["CSRF_HEADER", "new_csrf_token", "routes"]

CSRF_HEADER = "x-csrf-token"
#: The largest request body an action reads.
MAX_BODY = 4096


def new_csrf_token() -> str:
    """A token for one server's lifetime, unguessable."""
    return secrets.token_urlsafe(32)


def _same_origin(request: Request) -> bool:
    """Whether the browser says the request comes from this server's own pages.

    ``Sec-Fetch-Site`` (every current browser sends it) and ``Origin`` are checked when present;
    a client that sends neither is not a browser and has the token anyway.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def _authorised(request: Request, board: Dashboard) -> Response | None:
    """None if the action may go ahead, else the refusal."""
    if not board.allow_actions:
        return error(403, "actions are disabled: start the server with --allow-actions")
    token = request.headers.get(CSRF_HEADER, "")
    if not secrets.compare_digest(token.encode(), board.csrf_token.encode()):
        return error(403, "missing or wrong CSRF token")
    if not _same_origin(request):
        return error(403, "cross-origin request refused")
    body = await request.body()
    if len(body) > MAX_BODY:
        return error(413, "request body too large")
    try:
        data: Any = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return error(400, 'the body must be JSON: {"confirm": true}')
    if not isinstance(data, dict) or data.get("confirm") is not True:
        return error(400, 'confirm the action with {"confirm": true}')
    return None


async def cancel(request: Request, board: Dashboard) -> Any:
    """Cancel a task and its dependents."""
    refused = await _authorised(request, board)
    if refused is not None:
        return refused
    task_id = request.path_params["task_id"]
    if await board.storage.get_task(task_id) is None:
        return error(404, "no such task")
    cancelled = await board.storage.cancel_task(task_id, "cancelled from the dashboard")
    board.cache.invalidate()
    return {"cancelled": cancelled}


async def retry(request: Request, board: Dashboard) -> Any:
    """Requeue a task that failed for good (a dead letter)."""
    refused = await _authorised(request, board)
    if refused is not None:
        return refused
    task = await board.storage.retry_task(request.path_params["task_id"])
    board.cache.invalidate()
    return {"retried": task.id, "task": task_json(task)}


async def retry_all(request: Request, board: Dashboard) -> Any:
    """Requeue every dead letter (of a type) that can run again."""
    refused = await _authorised(request, board)
    if refused is not None:
        return refused
    task_type = text_param(request, "type")
    retried = await board.storage.retry_failed_tasks(task_type)
    board.cache.invalidate()
    return {"retried": retried}


async def pause(request: Request, board: Dashboard) -> Any:
    """Stop a schedule enqueueing tasks."""
    refused = await _authorised(request, board)
    if refused is not None:
        return refused
    found = await board.storage.pause_schedule(request.path_params["name"])
    return {"name": found.name, "paused": found.paused}


async def resume(request: Request, board: Dashboard) -> Any:
    """Let a paused schedule run again."""
    refused = await _authorised(request, board)
    if refused is not None:
        return refused
    found = await board.storage.resume_schedule(request.path_params["name"])
    return {"name": found.name, "paused": found.paused}


def routes() -> list[Route]:
    """The action routes (answered 403 when actions are off)."""
    return [
        Route("/api/tasks/{task_id}/cancel", json_endpoint(cancel), methods=["POST"]),
        Route("/api/tasks/{task_id}/retry", json_endpoint(retry), methods=["POST"]),
        Route("/api/dead-letters/retry", json_endpoint(retry_all), methods=["POST"]),
        Route("/api/schedules/{name}/pause", json_endpoint(pause), methods=["POST"]),
        Route("/api/schedules/{name}/resume", json_endpoint(resume), methods=["POST"]),
    ]
