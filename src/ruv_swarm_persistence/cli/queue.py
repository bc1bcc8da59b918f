"""Commands that act on the task queue: retry (requeue dead letters)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models import TaskModel
from ._app import app
from ._common import DbOption, JsonOption, UsageError, db_url, opened, out, print_json, run


@app.command()
def retry(
    ctx: typer.Context,
    task_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Failed tasks to requeue.", show_default=False),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Requeue every failed task (of --type) that can run.")
    ] = False,
    task_type: Annotated[
        str | None,
        typer.Option("--type", "-t", metavar="TYPE", help="With --all: only tasks of this type."),
    ] = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Requeue dead letters ('swarmdb tasks --failed'): pending again, with their retries anew.

    Given ids, all of them or none: an unknown id, or a task that is not failed, is an
    error and nothing is requeued. --all requeues every failed task (of --type) except those
    whose dependency failed or was cancelled.
    """
    url = db_url(ctx, db)
    if every == bool(task_ids):
        raise UsageError("give the ids of failed tasks, or --all (not both)")
    if task_type is not None and not every:
        raise UsageError("--type applies only with --all")

    async def go() -> list[TaskModel] | int:
        async with opened(url, write=True) as storage:
            if every:
                return await storage.retry_failed_tasks(task_type)
            return await storage.retry_tasks(task_ids or [])

    done = run(go())
    if isinstance(done, int):
        if json:
            print_json({"retried": done})
        else:
            out.print(f"requeued {done:,} failed task{'' if done == 1 else 's'}")
        return
    if json:
        print_json({"retried": len(done), "tasks": [t.id for t in done]})
        return
    for task in done:
        out.print(f"requeued {task.id} ({task.task_type})")
