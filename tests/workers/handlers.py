"""Handlers for worker processes in the tests (``swarmdb worker tests.workers.handlers:handlers``).

``slow`` leaves a marker file (``started-<task>-<agent>`` in the payload's ``marker_dir``)
when it begins, so a test knows the handler is running, then hangs until cancelled when the
payload says so (``hang``: always; ``hang_for``: only in that agent), else returns at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ruv_swarm_persistence import TaskContext, TaskModel


async def echo(task: TaskModel, ctx: TaskContext) -> Any:
    return {"echo": task.payload, "by": ctx.agent_id}


def square(task: TaskModel, ctx: TaskContext) -> Any:
    """A plain function: the worker runs it in a thread."""
    return task.payload["n"] ** 2


async def fail(task: TaskModel, ctx: TaskContext) -> Any:
    raise RuntimeError("this task always fails")


async def slow(task: TaskModel, ctx: TaskContext) -> Any:
    marker = Path(task.payload["marker_dir"], f"started-{task.id}-{ctx.agent_id}")
    await asyncio.to_thread(marker.touch)
    if task.payload.get("hang") or task.payload.get("hang_for") == ctx.agent_id:
        await asyncio.Event().wait()
    return {"by": ctx.agent_id}


handlers = {"echo": echo, "square": square, "fail": fail, "slow": slow}


def make_handlers() -> dict[str, Any]:
    """A callable returning the handlers also works as ``module:make_handlers``."""
    return dict(handlers)


not_handlers = 42
