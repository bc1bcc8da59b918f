"""Handlers for worker processes in the tests (``swarmdb worker tests.workers.handlers:handlers``).

``slow`` leaves a marker file (``started-<task>-<agent>`` in the payload's ``marker_dir``)
when it begins, so a test knows the handler is running, then hangs until cancelled when the
payload says so (``hang``: always; ``hang_for``: only in that agent), else returns at once.

``chaos`` is the handler of the chaos drain (``tests.workers.chaos``): each run records itself
before it returns, as a side effect that survives the process (a ``chaos.ran`` event naming a
fresh run id, the pid, the attempt and the task's ``started_at``), then returns a result naming
the same run, the agent and pid that ran it, and the run ids of its dependencies' results.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

from ruv_swarm_persistence import EventModel, TaskContext, TaskModel


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


async def chaos(task: TaskModel, ctx: TaskContext) -> Any:
    run = uuid.uuid4().hex
    pid = os.getpid()
    started = ctx.task.started_at.isoformat() if ctx.task.started_at is not None else None
    deps = {dep: result["run"] for dep, result in ctx.dependency_results.items()}
    ran = {"run": run, "pid": pid, "attempt": ctx.attempt, "started_at": started}
    await ctx.storage.store_event(
        EventModel.new("chaos.ran", ran, agent_id=ctx.agent_id, task_id=task.id)
    )
    # A moment between the side effect and the result, so that kills land there too.
    pause_ms = task.payload.get("pause_ms", 0)
    if pause_ms:
        await asyncio.sleep(pause_ms / 1000)
    return {"run": run, "pid": pid, "agent": ctx.agent_id, "attempt": ctx.attempt, "deps": deps}


handlers = {"echo": echo, "square": square, "fail": fail, "slow": slow, "chaos": chaos}


def make_handlers() -> dict[str, Any]:
    """A callable returning the handlers also works as ``module:make_handlers``."""
    return dict(handlers)


not_handlers = 42
