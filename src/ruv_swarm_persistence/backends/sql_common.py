"""What the SQL backends share: rows to records, and the task rules' planning without SQL.

A SQL backend reads rows, asks these functions what the rules say must change, and writes
the answer with its own statements. Nothing here touches a database, so the decisions are
the same on every SQL backend and the same as the memory backend's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .. import _json, rules
from ..codec import COLUMNS, Record
from ..errors import ConflictError, ValidationError

__all__ = [
    "TASK_COLUMNS",
    "PlannedTask",
    "check_new_status",
    "plan_cascade",
    "plan_task_batch",
    "row_record",
]

#: A task row as the SQL backends read it: the record's columns, then the count of
#: dependencies not yet completed.
TASK_COLUMNS: Final = (*COLUMNS["tasks"], "unfinished_deps")


def row_record(columns: Sequence[str], row: Iterable[Any]) -> Record:
    """A row read in ``columns`` order as a record keyed by column name."""
    return dict(zip(columns, row, strict=True))


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """A task of a ``store_tasks`` batch, checked and ready to insert."""

    record: Record
    unfinished: int
    dependencies: list[str]


def plan_task_batch(
    records: Sequence[Record],
    stored_ids: Iterable[str],
    stored_status: Mapping[str, str],
    now: int,
) -> list[PlannedTask]:
    """Check a ``store_tasks`` batch and plan its rows, dependencies first.

    ``stored_ids`` are the batch's ids that already exist (each one a conflict);
    ``stored_status`` maps every stored task the batch depends on to its status (a dependency
    missing from both it and the batch is unknown). A task depending on a failed or
    cancelled task is stored cancelled, naming the cause, as the cascade would have left it.
    """
    stored = set(stored_ids)
    batch: dict[str, Record] = {}
    for rec in records:
        tid = rec["id"]
        if tid in stored or tid in batch:
            raise ConflictError("task", tid)
        batch[tid] = rec
    deps_of: dict[str, list[str]] = {}
    for tid, rec in batch.items():
        deps: list[str] = _json.loads(rec["dependencies"])
        for d in deps:
            if d == tid:
                raise ValidationError(f"task {tid!r} depends on itself", field="task.dependencies")
            if d not in stored_status and d not in batch:
                raise ValidationError(
                    f"task {tid!r} depends on unknown task {d!r}", field="task.dependencies"
                )
        deps_of[tid] = deps
    status_of: dict[str, str] = {}
    planned: list[PlannedTask] = []
    for tid in rules.topological(batch, deps_of):
        rec = batch[tid]
        unfinished = 0
        cause: tuple[str, str] | None = None
        for d in deps_of[tid]:
            st = status_of[d] if d in status_of else stored_status[d]
            if st != rules.COMPLETED:
                unfinished += 1
            if st in (rules.FAILED, rules.CANCELLED) and cause is None:
                cause = (d, st)
        if cause is not None and rec["status"] not in rules.TERMINAL:
            rec = {**rec, **rules.cancel_changes(rules.cascade_error(*cause), now)}
        rules.check_stored_status(tid, rec["status"], rec["assigned_to"], unfinished)
        status_of[tid] = rec["status"]
        planned.append(PlannedTask(rec, unfinished, deps_of[tid]))
    return planned


def check_new_status(old: Record, new: Record, *, retry: bool = False) -> None:
    """The rules a status change must follow (``old`` carries ``unfinished_deps``)."""
    old_status, new_status = old["status"], new["status"]
    rules.check_transition(old["id"], old_status, new_status, retry=retry)
    if new_status == old_status:
        return
    if new_status in (rules.ASSIGNED, rules.RUNNING, rules.COMPLETED) and old["unfinished_deps"]:
        raise ValidationError(
            f"task {old['id']!r} cannot be {new_status} before its dependencies complete",
            field="task.status",
        )
    if new_status in rules.ACTIVE and new["assigned_to"] is None:
        raise ValidationError(f"a {new_status} task needs assigned_to", field="task.assigned_to")


def plan_cascade(
    root_id: str,
    root_status: str,
    dependents: Mapping[str, Sequence[str]],
    status: Mapping[str, str],
    tasks: Mapping[str, Record],
    now: int,
) -> list[Record]:
    """The tasks to cancel because ``root_id`` failed or was cancelled, as their new records.

    ``dependents`` maps a task id to the ids depending on it, in the order they were
    recorded; ``status`` gives the status of every task named there, and ``tasks`` the
    current record of every one that is not finished. The walk is depth-first in that order,
    and each cancelled task's error names the dependency through which it was reached first,
    the same as the memory backend's recursion.
    """
    out: list[Record] = []
    status = dict(status)
    stack: list[tuple[str, str, int]] = [(root_id, root_status, 0)]
    while stack:
        node, node_status, i = stack.pop()
        children = dependents.get(node, ())
        if i >= len(children):
            continue
        stack.append((node, node_status, i + 1))
        child = children[i]
        if status[child] in rules.TERMINAL:
            continue
        old = tasks[child]
        new = {**old, **rules.cancel_changes(rules.cascade_error(node, node_status), now)}
        check_new_status(old, new)
        status[child] = rules.CANCELLED
        out.append(new)
        stack.append((child, rules.CANCELLED, 0))
    return out
