"""The task rules, once, for every backend.

Which status changes are legal, when a task is ready, how long a retry waits, what an expired
lease means and what each operation writes. Backends call these functions (the memory backend
on records, the SQL backends to build their statements' parameters); a SQL backend may fold a
hot path into one statement, and the conformance suite checks it still follows these rules.
All times are integer microseconds since the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from . import _json
from .errors import ConflictError, LeaseLostError, ValidationError
from .models import TaskStatus

__all__ = [
    "ACTIVE",
    "DEFAULT_LEASE_US",
    "RETRY",
    "TERMINAL",
    "TRANSITIONS",
    "RetryPolicy",
    "cancel_changes",
    "cascade_error",
    "check_retry",
    "check_stored_status",
    "check_transition",
    "claim_changes",
    "claim_admitted",
    "dedup_batch",
    "rate_frees_at",
    "retries_of_free_keys",
    "complete_changes",
    "failure_changes",
    "is_ready",
    "lease_expired",
    "limit_reached",
    "release_changes",
    "retry_changes",
    "start_changes",
    "topological",
    "update_changes",
    "update_claims",
]

PENDING: Final = TaskStatus.Pending.value
ASSIGNED: Final = TaskStatus.Assigned.value
RUNNING: Final = TaskStatus.Running.value
COMPLETED: Final = TaskStatus.Completed.value
FAILED: Final = TaskStatus.Failed.value
CANCELLED: Final = TaskStatus.Cancelled.value

#: Statuses a task never leaves.
TERMINAL: Final = frozenset({COMPLETED, FAILED, CANCELLED})
#: Statuses in which a worker holds the task under a lease.
ACTIVE: Final = frozenset({ASSIGNED, RUNNING})
#: Statuses in which a task holds its ``dedup_key``.
UNFINISHED: Final = frozenset({PENDING, ASSIGNED, RUNNING})
#: Fields fixed when a task is stored.
FIXED_FIELDS: Final = ("dependencies", "dedup_key", "concurrency_key")

#: Legal status changes. Staying in the same status is always allowed. A held task goes back
#: to pending on a retry, an expired lease, or when its worker gives it back (release).
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    PENDING: frozenset({ASSIGNED, RUNNING, FAILED, CANCELLED}),
    ASSIGNED: frozenset({RUNNING, COMPLETED, FAILED, CANCELLED, PENDING}),
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, PENDING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

#: The one way out of a final status, taken only by ``retry_task``: a dead letter (a task
#: failed for good) goes back to the queue. ``update_task`` cannot take it.
RETRY: Final = (FAILED, PENDING)

DEFAULT_LEASE_US: Final = 30_000_000

_Rec = TypeVar("_Rec", bound=Mapping[str, Any])


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: retry *n* waits ``base * factor**(n-1)``, at most ``max``."""

    base_us: int = 1_000_000
    factor: float = 2.0
    max_us: int = 300_000_000

    def __post_init__(self) -> None:
        for name in ("base_us", "max_us"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(
                    "must be a non-negative integer", field=f"retry_policy.{name}"
                )
        factor = self.factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
            raise ValidationError(
                "must be a finite number of at least 1", field="retry_policy.factor"
            )
        if math.isinf(factor):
            raise ValidationError("must be finite", field="retry_policy.factor")

    def backoff_us(self, retry_number: int) -> int:
        """Microseconds to wait before retry number ``retry_number`` (1 for the first)."""
        if retry_number <= 0 or self.base_us <= 0:
            return 0
        try:
            delay = self.base_us * self.factor ** (retry_number - 1)
        except OverflowError:  # a float power past ~1e308: far beyond any cap
            return self.max_us
        return int(min(delay, self.max_us))


def check_transition(task_id: str, old: str, new: str, *, retry: bool = False) -> None:
    """Raise :class:`ValidationError` unless ``old → new`` is a legal status change.

    ``retry`` allows :data:`RETRY` too (the transition routines pass it for ``retry_task``).
    """
    if retry and (old, new) == RETRY:
        return
    if old != new and new not in TRANSITIONS[old]:
        raise ValidationError(
            f"task {task_id!r} cannot go from {old} to {new}", field="task.status"
        )


def check_stored_status(
    task_id: str, status: str, assigned_to: str | None, unfinished_deps: int
) -> None:
    """Rules for a task as first stored (a new task, or one copied from another storage)."""
    if status in ACTIVE and assigned_to is None:
        raise ValidationError(f"a {status} task needs assigned_to", field="task.assigned_to")
    if status in (ASSIGNED, RUNNING, COMPLETED) and unfinished_deps:
        raise ValidationError(
            f"task {task_id!r} cannot be {status} before its dependencies complete",
            field="task.status",
        )


def is_ready(status: str, unfinished_deps: int, run_after: int | None, now: int) -> bool:
    """A task is ready when pending, every dependency completed and ``run_after`` passed."""
    return status == PENDING and unfinished_deps == 0 and (run_after is None or run_after <= now)


def lease_expired(status: str, lease_expires_at: int | None, now: int) -> bool:
    """True when a held task's lease has run out (it is then a failed attempt)."""
    return status in ACTIVE and lease_expires_at is not None and lease_expires_at <= now


def claim_changes(agent_id: str, now: int, lease_us: int) -> dict[str, Any]:
    """What a successful claim writes."""
    return {
        "status": ASSIGNED,
        "assigned_to": agent_id,
        "lease_expires_at": now + lease_us,
        "updated_at": now,
    }


def release_changes(now: int) -> dict[str, Any]:
    """What giving back a held task writes: pending and claimable at once, held by no one.

    Not a failed attempt: ``retry_count`` and ``error`` stay as they are, and no backoff
    applies (``run_after`` is cleared). The attempt's ``started_at`` goes with the lease.
    """
    return {
        "status": PENDING,
        "assigned_to": None,
        "lease_expires_at": None,
        "started_at": None,
        "run_after": None,
        "updated_at": now,
    }


def update_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What ``update_task`` writes over a stored task: every field but the id.

    A task's dependencies and keys are fixed when it is stored; a record that changes them
    is refused.
    """
    if _json.loads(old["dependencies"]) != _json.loads(new["dependencies"]):
        raise ValidationError(
            "dependencies cannot change after creation", field="task.dependencies"
        )
    for key in ("dedup_key", "concurrency_key"):
        if old[key] != new[key]:
            raise ValidationError(f"{key} cannot change after creation", field=f"task.{key}")
    return {k: v for k, v in new.items() if k not in ("id", *FIXED_FIELDS)}


def update_claims(old_status: str, new_status: str) -> bool:
    """Whether ``update_task`` puts a task into a worker's hands (pending to assigned or
    running): it is then held to its key's limits as a claim is, and counts as one."""
    return old_status not in ACTIVE and new_status in ACTIVE


def not_held(task_id: str, agent_id: str, rec: Mapping[str, Any]) -> LeaseLostError | None:
    """The error of a write by ``agent_id`` to a task it does not hold (``None``: it holds it)."""
    if rec["status"] in ACTIVE and rec["assigned_to"] == agent_id:
        return None
    return LeaseLostError(task_id, agent_id, f"task is {rec['status']}")


def limit_reached(task_id: str, key: str) -> ConflictError:
    """The error of an ``update_task`` that would hold a task its key's limits do not admit."""
    return ConflictError(
        "task",
        task_id,
        f"cannot be held now: its concurrency_key {key!r} is at its limit "
        "(claim_next_task takes it once the key admits a claim)",
    )


def start_changes(now: int) -> dict[str, Any]:
    """What starting a held task writes."""
    return {"status": RUNNING, "started_at": now, "updated_at": now}


def complete_changes(result_json: str | None, now: int) -> dict[str, Any]:
    """What completing a held task writes (``result`` already encoded)."""
    return {
        "status": COMPLETED,
        "result": result_json,
        "completed_at": now,
        "lease_expires_at": None,
        "updated_at": now,
    }


def failure_changes(
    retry_count: int, max_retries: int, error: str, now: int, policy: RetryPolicy
) -> dict[str, Any]:
    """What a failed attempt writes: a retry after backoff, or failure for good.

    ``max_retries`` counts retries after the first attempt. An expired lease is a failed
    attempt too, with an error saying so.
    """
    if retry_count < max_retries:
        retry = retry_count + 1
        return {
            "status": PENDING,
            "retry_count": retry,
            "error": error,
            "assigned_to": None,
            "lease_expires_at": None,
            "run_after": now + policy.backoff_us(retry),
            "updated_at": now,
        }
    return {
        "status": FAILED,
        "error": error,
        "lease_expires_at": None,
        "completed_at": now,
        "updated_at": now,
    }


def check_retry(task_id: str, status: str, dead_dependency: tuple[str, str] | None) -> None:
    """Raise :class:`ConflictError` unless a task may be requeued by ``retry_task``.

    Only a task failed for good may be; and not one with a dependency failed or cancelled
    (``dead_dependency``: its id and status), which would then wait for ever.
    """
    if status != FAILED:
        raise ConflictError("task", task_id, f"is {status}, not failed: only failed tasks retry")
    if dead_dependency is not None:
        dep_id, dep_status = dead_dependency
        raise ConflictError("task", task_id, f"depends on task {dep_id!r}, which is {dep_status}")


def retry_changes(now: int) -> dict[str, Any]:
    """What requeueing a dead letter writes: pending, claimable at once, a fresh budget.

    ``retry_count`` starts again at 0, so the task gets its ``max_retries`` retries anew
    (the attempts that put it in the dead letters were spent on an earlier run). ``error``
    keeps the last failure until the next attempt overwrites it; the attempt's result,
    times, worker and lease are cleared. Dependents cancelled by its failure stay cancelled.
    """
    return {
        "status": PENDING,
        "retry_count": 0,
        "assigned_to": None,
        "result": None,
        "lease_expires_at": None,
        "started_at": None,
        "completed_at": None,
        "run_after": None,
        "updated_at": now,
    }


def cancel_changes(error: str | None, now: int) -> dict[str, Any]:
    """What cancelling a task writes."""
    changes: dict[str, Any] = {
        "status": CANCELLED,
        "lease_expires_at": None,
        "completed_at": now,
        "updated_at": now,
    }
    if error is not None:
        changes["error"] = error
    return changes


def cascade_error(cause_id: str, cause_status: str) -> str:
    """The error recorded on a task cancelled because a dependency failed or was cancelled."""
    return f"dependency {cause_id} {cause_status}"


def lease_error(agent_id: str | None) -> str:
    """The error recorded when a lease expires."""
    return f"lease expired (held by {agent_id})"


def released_error(agent_id: str) -> str:
    """The error recorded when an agent is deleted or reaped while holding a task."""
    return f"agent {agent_id} lost (deleted or stale)"


def topological(batch: Mapping[str, Any], deps_of: Mapping[str, Sequence[str]]) -> list[str]:
    """Batch ids ordered so every task comes after its batch dependencies; cycles raise."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for root in batch:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack.pop()
            deps = [d for d in deps_of[node] if d in batch]
            if i < len(deps):
                stack.append((node, i + 1))
                d = deps[i]
                if state.get(d) == 1:
                    raise ValidationError(
                        f"dependency cycle through {node!r} and {d!r}",
                        field="task.dependencies",
                    )
                if d not in state:
                    state[d] = 1
                    stack.append((d, 0))
            else:
                state[node] = 2
                order.append(node)
    return order


def dedup_batch(
    records: Sequence[Mapping[str, Any]],
    taken: Mapping[str, str],
    raise_on_duplicate: bool,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Which tasks of a batch to store, and the id each one ends up as.

    ``taken`` maps the dedup keys held by stored unfinished tasks to their ids. A new
    unfinished task whose key is taken (by a stored task or an earlier one of the batch) is
    not stored: its id is the holder's, and the batch's tasks that depend on it depend on
    the holder instead. With ``raise_on_duplicate`` it is a :class:`ConflictError` instead.
    A task stored already finished holds no key.
    """
    holders = dict(taken)
    replaced: dict[str, str] = {}
    ids: list[str] = []
    keep: list[dict[str, Any]] = []
    for rec in records:
        key = rec["dedup_key"]
        if key is not None and rec["status"] in UNFINISHED:
            holder = holders.get(key)
            if holder is not None:
                if raise_on_duplicate:
                    reason = f"dedup_key {key!r} is held by unfinished task {holder!r}"
                    raise ConflictError("task", rec["id"], reason)
                replaced[rec["id"]] = holder
                ids.append(holder)
                continue
            holders[key] = rec["id"]
        ids.append(rec["id"])
        keep.append(dict(rec))
    if replaced:
        for rec in keep:
            deps: list[str] = _json.loads(rec["dependencies"])
            if any(d in replaced for d in deps):
                mapped = list(dict.fromkeys(replaced.get(d, d) for d in deps))
                rec["dependencies"] = _json.dumps(mapped, "task.dependencies", 1 << 62)
    return keep, ids


def claim_admitted(
    max_running: int | None,
    held: int,
    rate_limit: int | None,
    recent_claims: int,
) -> bool:
    """Whether a key's limits admit one more claim.

    ``held`` counts the key's tasks held now (assigned or running, leases not expired),
    ``recent_claims`` its claims within the last rate period.
    """
    if max_running is not None and held >= max_running:
        return False
    return rate_limit is None or recent_claims < rate_limit


def rate_frees_at(rate_limit: int, period_us: int, recent_claims: Sequence[int]) -> int | None:
    """When a key whose rate limit is reached admits a claim again: as the oldest claim that
    keeps it at the limit leaves the window (``recent_claims`` ascending, all within the
    window). ``None`` for a limit of 0, which never admits one."""
    if rate_limit == 0:
        return None
    return recent_claims[len(recent_claims) - rate_limit] + period_us


def retries_of_free_keys(
    chosen: Sequence[_Rec], taken: Mapping[str, str], explicit: bool
) -> list[_Rec]:
    """The dead letters a retry may requeue: a task whose ``dedup_key`` another unfinished
    task holds (``taken``, or one requeued before it) is left failed, or, when asked for by
    id (``explicit``), a :class:`ConflictError`."""
    holders = dict(taken)
    out = []
    for rec in chosen:
        key = rec["dedup_key"]
        if key is not None:
            holder = holders.get(key)
            if holder is not None and holder != rec["id"]:
                if explicit:
                    reason = f"dedup_key {key!r} is held by unfinished task {holder!r}"
                    raise ConflictError("task", rec["id"], reason)
                continue
            holders[key] = rec["id"]
        out.append(rec)
    return out
