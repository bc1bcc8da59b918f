"""A live dashboard of a swarm database: ``swarmdb serve`` (extra ``[dashboard]``).

Pages for agents, tasks (counts over time, the dependency graph around a task, dead letters),
events (a live tail), messages and metrics (percentile charts), each filled from a JSON API
described by OpenAPI at ``/api/openapi.json``; ``/metrics`` for Prometheus. Read-only unless
actions are allowed. Works on every backend through the public ``Storage`` API; the core
package never imports it.

    from ruv_swarm_persistence.dashboard import create_app
    app = create_app(storage)            # an ASGI app: uvicorn.run(app, host="127.0.0.1")
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
