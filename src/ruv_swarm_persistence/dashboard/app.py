"""The dashboard's ASGI application: pages, JSON API, live tail, actions and ``/metrics``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..storage import Storage
from . import actions, api, pages
from .openapi import openapi_endpoint
from .prometheus import prometheus_metrics
from .snapshot import SnapshotCache
from .stream import event_stream

__all__ = ["STATIC", "create_app"]

STATIC: Final = Path(__file__).resolve().parent / "static"

#: Only this server's own files: no script, style, font or connection goes elsewhere.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_HEADERS: Final = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the content security policy and its companions to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    storage: Storage,
    *,
    allow_actions: bool = False,
    stale_after: float = 30.0,
    allowed_hosts: Sequence[str] | None = None,
    snapshot_ttl: float = 1.0,
    close_storage: bool = False,
    csrf_token: str | None = None,
) -> Starlette:
    """The dashboard of ``storage`` as an ASGI app (serve it with uvicorn).

    Read-only unless ``allow_actions``. ``allowed_hosts`` restricts the ``Host`` header (a
    server bound to loopback should accept only loopback names, which defeats DNS
    rebinding); ``None`` accepts any. Counting views share one read of the database per
    ``snapshot_ttl`` seconds. With ``close_storage`` the app closes the storage at shutdown.
    """
    board = api.Dashboard(
        storage=storage,
        cache=SnapshotCache(storage, snapshot_ttl),
        allow_actions=allow_actions,
        csrf_token=csrf_token or actions.new_csrf_token(),
        stale_after=stale_after,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_storage:
                await storage.close()

    routes: list[BaseRoute] = [
        *pages.routes(),
        Route("/api/openapi.json", openapi_endpoint, methods=["GET"]),
        Route("/api/events/stream", event_stream, methods=["GET"]),
        *api.routes(),
        *actions.routes(),
        Route("/metrics", prometheus_metrics, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.dashboard = board
    return app
