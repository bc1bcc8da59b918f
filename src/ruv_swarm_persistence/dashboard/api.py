"""The JSON API the pages use: one read-only endpoint per view (described in ``openapi.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ConflictError, LeaseLostError, NotFoundError, StorageError, ValidationError
from ..storage import Storage
from . import views
from .params import BadRequest, choices, float_param, int_param, text_param, time_param
from .snapshot import SnapshotCache

__all__ = ["Dashboard", "dashboard_of", "error", "json_endpoint", "routes"]

#: The most rows one list returns.
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What every request handler shares."""

    storage: Storage
    cache: SnapshotCache
    allow_actions: bool
    csrf_token: str
    #: Agents whose heartbeat is older than this (seconds) are stale, by default.
    stale_after: float


def dashboard_of(request: Request) -> Dashboard:
    """The dashboard this request was made to."""
    board: Dashboard = request.app.state.dashboard
    return board


def error(status: int, message: str) -> JSONResponse:
    """An error answer: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status)


Handler = Callable[[Request, Dashboard], Awaitable[Any]]


def json_endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler whose result is sent as JSON; bad input and storage errors get their status."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request, dashboard_of(request))
        except (BadRequest, ValidationError, ValueError) as exc:
            return error(400, str(exc))
        except NotFoundError as exc:
            return error(404, str(exc))
        except (ConflictError, LeaseLostError) as exc:
            return error(409, str(exc))
        except StorageError as exc:
            return error(503, f"{type(exc).__name__}: {exc}")
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def overview(request: Request, board: Dashboard) -> Any:
    """Headline counts."""
    return views.overview(await board.cache.get()) | {"actions": board.allow_actions}


async def agents(request: Request, board: Dashboard) -> Any:
    """Every agent with its heartbeat's age; stale ones marked."""
    stale_after = float_param(request, "stale_after", board.stale_after, 0.0, 1e9)
    assert stale_after is not None
    return await views.agents_view(board.storage, await board.cache.get(), stale_after)


async def tasks(request: Request, board: Dashboard) -> Any:
    """Tasks filtered by status and type."""
    statuses = choices(request, "status", views.TASK_STATUSES)
    types = choices(request, "type")
    limit = int_param(request, "limit", 100, 1, MAX_LIMIT)
    offset = int_param(request, "offset", 0, 0, 2**31)
    return views.tasks_list(await board.cache.get(), statuses, types, limit, offset)


async def task_stats(request: Request, board: Dashboard) -> Any:
    """Counts by status and type, and the tasks over time."""
    start, end = time_param(request, "start"), time_param(request, "end")
    bucket = float_param(request, "bucket", None, 0.001, 1e9)
    return views.task_stats(await board.cache.get(), start, end, bucket)


async def failed(request: Request, board: Dashboard) -> Any:
    """Dead letters and tasks waiting to retry."""
    task_type = text_param(request, "type")
    limit = int_param(request, "limit", 100, 1, MAX_LIMIT)
    return await views.failed_view(board.storage, await board.cache.get(), task_type, limit)


async def schedules(request: Request, board: Dashboard) -> Any:
    """Every schedule."""
    return await views.schedules_view(board.storage)


async def task(request: Request, board: Dashboard) -> Any:
    """One task, with payload and result."""
    found = await board.storage.get_task(request.path_params["task_id"])
    if found is None:
        return error(404, "no such task")
    snap = await board.cache.get()
    dependents = [t.id for t in snap.tasks if found.id in t.dependencies]
    return views.task_json(found, full=True) | {"dependents": dependents}


async def task_graph(request: Request, board: Dashboard) -> Any:
    """The dependency graph around a task."""
    depth = int_param(request, "depth", 2, 1, 20)
    most = int_param(request, "max_nodes", 200, 1, 2000)
    graph = views.task_graph(await board.cache.get(), request.path_params["task_id"], depth, most)
    if graph is None:
        return error(404, "no such task")
    return graph


async def events(request: Request, board: Dashboard) -> Any:
    """The newest events, filtered by type and agent."""
    types = choices(request, "type")
    agent = text_param(request, "agent")
    before = int_param(request, "before", 0, 0, 2**63 - 1) or None
    limit = int_param(request, "limit", 100, 1, MAX_LIMIT)
    return await views.events_page(board.storage, types, agent, before, limit)


async def event_types(request: Request, board: Dashboard) -> Any:
    """The event types in the log."""
    return {"event_types": await views.event_types(board.storage)}


async def messages(request: Request, board: Dashboard) -> Any:
    """Unread messages per agent."""
    return views.messages_view(await board.cache.get())


async def unread(request: Request, board: Dashboard) -> Any:
    """An agent's unread messages, urgent first."""
    limit = int_param(request, "limit", 100, 1, MAX_LIMIT)
    found = await board.storage.get_unread_messages(request.path_params["agent_id"])
    return {"messages": [views.message_json(m) for m in found[:limit]], "total": len(found)}


async def metric_names(request: Request, board: Dashboard) -> Any:
    """The metric types stored."""
    return {"metrics": await views.metric_names(board.storage)}


async def metric_series(request: Request, board: Dashboard) -> Any:
    """Percentiles per time bucket of one metric."""
    group = choices(request, "group", ("none", "agent"))
    window = float_param(request, "window", 3600.0, 0.001, 1e9)
    assert window is not None
    return await views.metric_series(
        board.storage,
        request.path_params["metric_type"],
        time_param(request, "end"),
        window,
        float_param(request, "bucket", None, 0.001, 1e9),
        by_agent=group == ["agent"],
    )


def routes() -> list[Route]:
    """The read-only routes of the API, under ``/api``."""
    get = ["GET"]
    return [
        Route("/api/overview", json_endpoint(overview), methods=get),
        Route("/api/agents", json_endpoint(agents), methods=get),
        Route("/api/tasks", json_endpoint(tasks), methods=get),
        Route("/api/task-stats", json_endpoint(task_stats), methods=get),
        Route("/api/dead-letters", json_endpoint(failed), methods=get),
        Route("/api/schedules", json_endpoint(schedules), methods=get),
        Route("/api/tasks/{task_id}", json_endpoint(task), methods=get),
        Route("/api/tasks/{task_id}/graph", json_endpoint(task_graph), methods=get),
        Route("/api/events", json_endpoint(events), methods=get),
        Route("/api/events/types", json_endpoint(event_types), methods=get),
        Route("/api/messages", json_endpoint(messages), methods=get),
        Route("/api/messages/{agent_id}/unread", json_endpoint(unread), methods=get),
        Route("/api/metrics", json_endpoint(metric_names), methods=get),
        Route("/api/metrics/{metric_type}", json_endpoint(metric_series), methods=get),
    ]
