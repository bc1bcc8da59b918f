"""The live tail: events as server-sent events, driven by ``Storage.subscribe``.

``GET /api/events/stream?type=…&agent=…&after=N`` answers ``text/event-stream``: one
``swarm-event`` per event committed after ``N`` (by default: after the newest event at the time
of the request), with the event's sequence as its id, so a browser that reconnects resumes
where it stopped (``Last-Event-ID``). A comment line every :data:`KEEPALIVE_S` keeps proxies
from closing an idle stream. Any process's commits arrive: ``subscribe`` is woken by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..models import EventModel
from ..query import QueryBuilder
from .api import dashboard_of, error
from .params import BadRequest, choices, int_param, text_param
from .views import event_json

__all__ = ["KEEPALIVE_S", "event_stream"]

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE_S: Final = 15.0
#: How long a browser waits before reconnecting a dropped stream (milliseconds).
RETRY_MS: Final = 2000


def _frame(event: EventModel) -> str:
    data = json.dumps(event_json(event), ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.sequence}\nevent: swarm-event\ndata: {data}\n\n"


async def event_stream(request: Request) -> Response:
    """``GET /api/events/stream``: the live tail as server-sent events."""
    board = dashboard_of(request)
    try:
        types = choices(request, "type") or None
        agent = text_param(request, "agent")
        after = int_param(request, "after", -1, -1, 2**63 - 1)
        resumed = request.headers.get("last-event-id", "")
        if resumed.isdigit() and len(resumed) < 19:
            after = int(resumed)
    except BadRequest as exc:
        return error(400, str(exc))
    if after < 0:
        newest = await board.storage.query(
            QueryBuilder(EventModel).order_by("sequence", True).limit(1)
        )
        after = (newest[0].sequence or 0) if newest else 0

    async def frames() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n: following after sequence {after}\n\n"
        events = board.storage.subscribe(after, event_types=types)
        pending: asyncio.Future[EventModel] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(events))
                # Not wait_for: a timeout must not cancel the subscription's step.
                done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                if not done:
                    yield ": keep-alive\n\n"
                    continue
                event, pending = pending.result(), None
                if agent is None or event.agent_id == agent:
                    yield _frame(event)
        except StopAsyncIteration:
            return  # the storage was closed
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(BaseException):
                await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
