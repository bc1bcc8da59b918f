"""The OpenAPI 3.1 description of the JSON API, served at ``/api/openapi.json``.

Written as data beside the handlers, and held to them by a test that fuzzes every operation
against it (schemathesis): each answer must have a documented status and match its schema.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from .views import AGENT_STATUSES, MAX_BUCKETS, TASK_STATUSES

__all__ = ["openapi_document", "openapi_endpoint"]

_STR: Final = {"type": "string"}
_INT: Final = {"type": "integer"}
_NUM: Final = {"type": "number"}
_BOOL: Final = {"type": "boolean"}
_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_OPT_STR: Final = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": required | (optional or {}),
    }


def _array(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _counts(keys: tuple[str, ...]) -> dict[str, Any]:
    return _obj({k: {"type": "integer", "minimum": 0} for k in keys})


def _query(name: str, schema: dict[str, Any], text: str, *, many: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "description": text}
    if many:
        param |= {"schema": _array(schema), "style": "form", "explode": True}
    else:
        param["schema"] = schema
    return param


def _path(name: str, text: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": text, "schema": _STR}


def _json(schema: Any, text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


_ERROR: Final = _json(_ref("Error"), "An error, with its reason")


def _get(summary: str, schema: Any, params: list[Any], *errors: int) -> dict[str, Any]:
    responses = {"200": _json(schema, summary)}
    for status in (400, 503, *errors):
        responses[str(status)] = _ERROR
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def _action(summary: str, schema: Any, params: list[Any] | None = None) -> dict[str, Any]:
    responses = {"200": _json(schema, summary)}
    for status in (400, 403, 404, 409, 413, 503):
        responses[str(status)] = _ERROR
    if params is None:
        params = [_path("task_id", "The task's id")]
    return {
        "post": {
            "summary": summary,
            "description": "Refused (403) unless the server runs with --allow-actions; needs "
            'the page\'s CSRF token in X-CSRF-Token and {"confirm": true}.',
            "parameters": [*params, {"name": "X-CSRF-Token", "in": "header", "schema": _STR}],
            "requestBody": {"content": {"application/json": {"schema": _obj({"confirm": _BOOL})}}},
            "responses": responses,
        }
    }


_TASK: Final = _obj(
    {
        "id": _STR, "task_type": _STR, "priority": _INT, "priority_name": _STR,
        "status": {"enum": list(TASK_STATUSES)}, "assigned_to": _OPT_STR, "error": _OPT_STR,
        "retry_count": _INT, "max_retries": _INT, "dependencies": _array(_STR),
        "created_at": _TIME, "updated_at": _TIME, "started_at": _TIME, "completed_at": _TIME,
        "lease_expires_at": _TIME, "run_after": _TIME,
    },
    {"ready": _BOOL, "level": _INT, "payload": {}, "result": {}, "dependents": _array(_STR)},
)  # fmt: skip
_AGENT: Final = _obj(
    {
        "id": _STR, "name": _STR, "agent_type": _STR, "status": {"enum": list(AGENT_STATUSES)},
        "capabilities": _array(_STR), "metadata": {"type": "object"}, "heartbeat": _TIME,
        "heartbeat_age_s": _NUM, "stale": _BOOL, "tasks_held": _INT, "created_at": _TIME,
    }
)  # fmt: skip
_EVENT: Final = _obj(
    {
        "sequence": {"type": ["integer", "null"]}, "id": _STR, "event_type": _STR,
        "agent_id": _OPT_STR, "task_id": _OPT_STR, "payload": {}, "metadata": {},
        "timestamp": _TIME,
    }
)  # fmt: skip
_MESSAGE: Final = _obj(
    {
        "id": _STR, "from_agent": _STR, "to_agent": _STR, "message_type": _STR, "content": {},
        "priority": _INT, "priority_name": _STR, "read": _BOOL, "created_at": _TIME,
        "read_at": _TIME,
    }
)  # fmt: skip
_NUMBERS: Final = _array({"type": ["number", "null"]})
_SERIES: Final = _obj(
    {"agent_id": _OPT_STR, "unit": _STR}
    | {s: _NUMBERS for s in ("count", "mean", "min", "max", "p50", "p95", "p99")}
)
_TIMELINE: Final = _obj(
    {
        "start": _TIME, "end": _TIME, "bucket_s": _NUM, "t": _array(_NUM),
        "by_state": {"type": "object", "additionalProperties": _array(_INT)},
        "finished_by_type": {"type": "object", "additionalProperties": _array(_INT)},
    }
)  # fmt: skip

_SCHEMAS: Final = {
    "Error": _obj({"error": _STR}),
    "Task": _TASK,
    "Agent": _AGENT,
    "Event": _EVENT,
    "Message": _MESSAGE,
    "Overview": _obj(
        {
            "taken_at": _TIME, "agents": _counts(AGENT_STATUSES), "agents_total": _INT,
            "tasks": _counts(TASK_STATUSES), "tasks_total": _INT, "tasks_ready": _INT,
            "messages_unread": _INT, "events_last_sequence": _INT, "events_per_second": _NUM,
            "actions": _BOOL,
        }
    ),
    "Agents": _obj(
        {
            "taken_at": _TIME, "stale_after_s": _NUM, "total": _INT, "stale": _INT,
            "by_status": _counts(AGENT_STATUSES), "agents": _array(_ref("Agent")),
        }
    ),
    "TaskList": _obj({"total": _INT, "offset": _INT, "tasks": _array(_ref("Task"))}),
    "TaskStats": _obj(
        {
            "taken_at": _TIME, "total": _INT, "ready": _INT,
            "by_status": _counts(TASK_STATUSES),
            "by_type": {"type": "object",
                        "additionalProperties": _counts((*TASK_STATUSES, "ready"))},
            "timeline": _TIMELINE,
        }
    ),
    "Failed": _obj(
        {
            "total_failed": _INT, "dead_letters": _array(_ref("Task")),
            "retrying": _array(_ref("Task")), "total_retrying": _INT,
        }
    ),
    "Graph": _obj(
        {
            "root": _STR, "depth": _INT, "truncated": _BOOL, "nodes": _array(_ref("Task")),
            "edges": _array(_obj({"from": _STR, "to": _STR})),
        }
    ),
    "Events": _obj({"last_sequence": _INT, "events": _array(_ref("Event"))}),
    "Schedules": _obj(
        {
            "paused": _INT,
            "schedules": _array(_obj({
                "name": _STR, "spec": _STR, "timezone": _STR, "missed": _STR, "paused": _BOOL,
                "task_type": _OPT_STR, "next_due": _TIME, "last_due": _TIME,
                "updated_at": _TIME,
            })),
        }
    ),
    "Messages": _obj(
        {
            "taken_at": _TIME, "total_unread": _INT,
            "agents": _array(_obj({
                "agent_id": _STR, "name": _OPT_STR, "unread": _INT,
                "by_priority": _counts(("low", "normal", "high", "urgent")),
                "oldest_unread_at": _TIME, "oldest_unread_age_s": _NUM,
            })),
        }
    ),
    "MetricSeries": _obj(
        {
            "metric_type": _STR, "start": _TIME, "end": _TIME,
            "bucket_s": {"type": ["number", "null"]}, "series": _array(_SERIES),
        },
        {"t": _array(_NUM)},
    ),
}  # fmt: skip

_LIMIT: Final = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Most rows")
_TIME_Q: Final = {"type": "string", "description": "Epoch seconds or ISO 8601"}
_BUCKET: Final = _query(
    "bucket",
    {"type": "number", "minimum": 0.001, "maximum": 1e9},
    f"Bucket width in seconds (at most {MAX_BUCKETS} buckets); default: about 60 buckets",
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the API."""
    paths: dict[str, Any] = {
        "/api/overview": _get("Headline counts", _ref("Overview"), []),
        "/api/agents": _get(
            "Agents, heartbeat ages, stale ones marked",
            _ref("Agents"),
            [_query("stale_after", {"type": "number", "minimum": 0, "maximum": 1e9},
                    "Seconds without a heartbeat after which an agent is stale")],
        ),
        "/api/tasks": _get(
            "Tasks, most recently changed first",
            _ref("TaskList"),
            [
                _query("status", {"enum": list(TASK_STATUSES)}, "Only these statuses", many=True),
                _query("type", _STR, "Only these task types", many=True),
                _LIMIT,
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 2**31},
                       "Rows to skip"),
            ],
        ),
        "/api/task-stats": _get(
            "Tasks by status and type, and over time",
            _ref("TaskStats"),
            [_query("start", _TIME_Q, "Start of the timeline"),
             _query("end", _TIME_Q, "End of the timeline"), _BUCKET],
        ),
        "/api/dead-letters": _get(
            "Dead letters and tasks waiting to retry",
            _ref("Failed"),
            [_query("type", _STR, "Only this task type"), _LIMIT],
        ),
        "/api/tasks/{task_id}": _get(
            "One task", _ref("Task"), [_path("task_id", "The task's id")], 404
        ),
        "/api/tasks/{task_id}/graph": _get(
            "The dependency graph around a task",
            _ref("Graph"),
            [
                _path("task_id", "The task's id"),
                _query("depth", {"type": "integer", "minimum": 1, "maximum": 20},
                       "Dependency steps each way"),
                _query("max_nodes", {"type": "integer", "minimum": 1, "maximum": 2000},
                       "Most tasks shown"),
            ],
            404,
        ),
        "/api/tasks/{task_id}/cancel": _action(
            "Cancel a task and its dependents", _obj({"cancelled": _array(_STR)})
        ),
        "/api/tasks/{task_id}/retry": _action(
            "Requeue a dead letter", _obj({"retried": _STR, "task": _ref("Task")})
        ),
        "/api/dead-letters/retry": _action(
            "Requeue every dead letter (of a type) that can run again",
            _obj({"retried": _INT}),
            [_query("type", _STR, "Only this task type")],
        ),
        "/api/schedules": _get("Every schedule", _ref("Schedules"), []),
        "/api/schedules/{name}/pause": _action(
            "Pause a schedule",
            _obj({"name": _STR, "paused": _BOOL}),
            [_path("name", "The schedule's name")],
        ),
        "/api/schedules/{name}/resume": _action(
            "Resume a paused schedule",
            _obj({"name": _STR, "paused": _BOOL}),
            [_path("name", "The schedule's name")],
        ),
        "/api/events": _get(
            "The newest events",
            _ref("Events"),
            [
                _query("type", _STR, "Only these event types", many=True),
                _query("agent", _STR, "Only this agent's events"),
                _query("before", {"type": "integer", "minimum": 0,
                                  "maximum": 2**63 - 1}, "Only before this sequence"),
                _LIMIT,
            ],
        ),
        "/api/events/types": _get(
            "The event types in the log", _obj({"event_types": _array(_STR)}), []
        ),
        "/api/events/stream": {
            "get": {
                "summary": "The live tail: server-sent events (swarm-event), one per event",
                "parameters": [
                    _query("type", _STR, "Only these event types", many=True),
                    _query("agent", _STR, "Only this agent's events"),
                    _query("after", {"type": "integer", "minimum": -1},
                           "Start after this sequence (default: the newest now)"),
                ],
                "responses": {
                    "200": {"description": "An endless stream",
                            "content": {"text/event-stream": {"schema": _STR}}},
                    "400": _ERROR,
                },
            }
        },
        "/api/messages": _get("Unread messages per agent", _ref("Messages"), []),
        "/api/messages/{agent_id}/unread": _get(
            "An agent's unread messages, urgent first",
            _obj({"messages": _array(_ref("Message")), "total": _INT}),
            [_path("agent_id", "The recipient"), _LIMIT],
        ),
        "/api/metrics": _get(
            "The metric types stored", _obj({"metrics": _array(_STR)}), []
        ),
        "/api/metrics/{metric_type}": _get(
            "Count, mean, min, max, p50, p95, p99 of a metric per time bucket",
            _ref("MetricSeries"),
            [
                _path("metric_type", "The metric"),
                _query("end", _TIME_Q, "End of the window (default: the newest measurement)"),
                _query("window", {"type": "number", "minimum": 0.001, "maximum": 1e9},
                       "Seconds before the end"),
                _BUCKET,
                _query("group", {"enum": ["none", "agent"]}, "One series, or one per agent"),
            ],
        ),
        "/metrics": {
            "get": {
                "summary": "The swarm's gauges in the Prometheus text format",
                "responses": {"200": {"description": "Prometheus text format",
                                      "content": {"text/plain": {"schema": _STR}}},
                              "503": _ERROR},
            }
        },
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "swarmdb dashboard",
            "version": __version__,
            "description": "Read the state of a swarm database; with --allow-actions, cancel "
            "and retry tasks.",
        },
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }


async def openapi_endpoint(request: Request) -> Response:
    """``GET /api/openapi.json``."""
    return JSONResponse(openapi_document())
