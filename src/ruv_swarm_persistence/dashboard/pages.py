"""The HTML pages: one shell per page, filled in the browser from the JSON API.

Each page loads only files served by this server (its script, the shared ``common.js`` and, for
charts and the graph, the vendored uPlot and dagre): it works offline, and the content security
policy the app sends forbids anything else.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .api import dashboard_of

__all__ = ["PAGES", "Page", "routes"]


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its path, title, navigation label and the scripts it needs."""

    name: str
    path: str
    title: str
    nav: str | None
    scripts: tuple[str, ...]
    styles: tuple[str, ...] = ()


_UPLOT: Final = "vendor/uPlot.iife.min.js"
PAGES: Final = (
    Page("overview", "/", "Overview", "Overview", ("js/overview.js",)),
    Page("agents", "/agents", "Agents", "Agents", ("js/agents.js",)),
    Page("tasks", "/tasks", "Tasks", "Tasks", (_UPLOT, "js/charts.js", "js/tasks.js"),
         ("vendor/uPlot.min.css",)),
    Page("task", "/tasks/{task_id}", "Task", None, ("vendor/dagre.min.js", "js/graph.js",
         "js/task.js")),
    Page("events", "/events", "Events", "Events", ("js/events.js",)),
    Page("messages", "/messages", "Messages", "Messages", ("js/messages.js",)),
    Page("metrics", "/charts", "Metrics", "Metrics", (_UPLOT, "js/charts.js", "js/metrics.js"),
         ("vendor/uPlot.min.css",)),
)  # fmt: skip

_SHELL: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<meta name="actions" content="{actions}">
<title>{title} · swarmdb</title>
<link rel="icon" href="data:,">
{styles}<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body data-page="{page}">
<header>
<a class="brand" href="/">swarmdb</a>
<nav>{nav}</nav>
<a href="/api/openapi.json" title="The JSON API these pages read (OpenAPI)">API</a>
<a href="/metrics" title="For Prometheus">/metrics</a>
<span class="mode {mode_class}" title="{mode_title}">{mode}</span>
</header>
<main id="app" aria-busy="true"><p class="loading">Loading…</p></main>
<dialog id="confirm"><form method="dialog"><p id="confirm-text"></p>
<menu><button value="cancel">Keep</button><button value="ok" id="confirm-ok" class="danger">
Confirm</button></menu></form></dialog>
<script src="/static/js/common.js"></script>
{scripts}</body>
</html>
"""


def render(page: Page, *, csrf: str, actions: bool) -> str:
    """The shell of ``page``: navigation, the CSRF token (when actions are on), its scripts."""
    current = ' aria-current="page"'
    nav = "".join(
        f'<a href="{p.path}"{current if p.name == page.name else ""}>{html.escape(p.nav)}</a>'
        for p in PAGES
        if p.nav is not None
    )
    return _SHELL.format(
        csrf=html.escape(csrf if actions else ""),
        actions="on" if actions else "off",
        title=html.escape(page.title),
        page=page.name,
        nav=nav,
        mode="actions on" if actions else "read-only",
        mode_class="on" if actions else "off",
        mode_title=(
            "Cancelling and retrying tasks is allowed (each asks first)"
            if actions
            else "Start with --allow-actions to cancel or retry tasks"
        ),
        styles="".join(f'<link rel="stylesheet" href="/static/{s}">\n' for s in page.styles),
        scripts="".join(f'<script src="/static/{s}"></script>\n' for s in page.scripts),
    )


def _endpoint(page: Page) -> Route:
    async def show(request: Request) -> Response:
        board = dashboard_of(request)
        text = render(page, csrf=board.csrf_token, actions=board.allow_actions)
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    return Route(page.path, show, methods=["GET"], name=f"page-{page.name}")


def routes() -> list[Route]:
    """A route per page."""
    return [_endpoint(p) for p in PAGES]
