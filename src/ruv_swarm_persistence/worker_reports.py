"""What a :class:`~ruv_swarm_persistence.worker.Worker` tells about its work: the outcome of
each attempt (:class:`Outcome`, :class:`TaskReport`), its counts (:class:`WorkerStats`), and
the error text it records for a failed attempt."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .models import TaskModel

__all__ = ["MAX_ERROR_CHARS", "Outcome", "TaskReport", "WorkerStats", "error_text"]

#: An error text longer than this is cut (the storage refuses strings past its limit).
MAX_ERROR_CHARS: Final = 4000


class Outcome(StrEnum):
    """How one attempt at a task ended, as far as this worker is concerned."""

    #: The handler returned and its result was stored: the task is completed.
    Completed = "completed"
    #: The handler raised (or returned a value that is not JSON) and the attempt was recorded
    #: as failed: the task is pending for a retry, or failed for good (``task.status`` says).
    Failed = "failed"
    #: The worker no longer held the task (its lease ran out and another worker took it):
    #: nothing was written.
    LeaseLost = "lease_lost"
    #: The task was cancelled while this worker held it: the handler was cancelled (or its
    #: result refused), and the task stays cancelled.
    Cancelled = "cancelled"
    #: The worker stopped before the handler finished and gave the task back: pending again,
    #: no attempt counted.
    Released = "released"
    #: The outcome could not be written (the storage failed): the task stays leased until its
    #: lease runs out, which counts as a failed attempt, and is then retried.
    Unrecorded = "unrecorded"


#: How each outcome reads in the log (``again`` and ``retry`` say whether a failure is final).
LOG_PHRASES: Final = {
    Outcome.Completed: "completed (attempt {attempt}, {ms:.1f} ms)",
    Outcome.Failed: "{again} (attempt {attempt}{retry}): {error}",
    Outcome.LeaseLost: "lost its lease (attempt {attempt}): another worker has it, nothing written",
    Outcome.Cancelled: "was cancelled while running (attempt {attempt}): handler stopped",
    Outcome.Released: "released unfinished (attempt {attempt}): pending again for any worker",
    Outcome.Unrecorded: "",
}


@dataclass(frozen=True, slots=True)
class TaskReport:
    """One finished attempt, handed to ``on_outcome``."""

    outcome: Outcome
    #: The task as stored after the worker's write (completed, failed or pending for a retry,
    #: released); when nothing was written, the task as this worker last saw it.
    task: TaskModel
    agent_id: str
    #: What the handler returned (``None`` unless it returned).
    result: Any = None
    #: The error recorded for a failed attempt (or why nothing was written).
    error: str | None = None
    #: Seconds the handler ran (0 when it never started).
    duration: float = 0.0


class _Draft:
    """A :class:`TaskReport` being filled in: the same slots, set as plain attributes."""

    __slots__ = TaskReport.__slots__

    def __init__(
        self,
        outcome: Outcome,
        task: TaskModel,
        agent_id: str,
        result: Any,
        error: str | None,
        duration: float,
    ) -> None:
        self.outcome = outcome
        self.task = task
        self.agent_id = agent_id
        self.result = result
        self.error = error
        self.duration = duration


def new_report(
    outcome: Outcome,
    task: TaskModel,
    agent_id: str,
    result: Any,
    error: str | None,
    duration: float,
) -> TaskReport:
    """``TaskReport(outcome, task, agent_id, result, error, duration)`` at a third of the cost:
    the frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (a
    worker makes one report per task). The draft has the report's very layout, so it may
    become one by assigning its class."""
    report = _Draft(outcome, task, agent_id, result, error, duration)
    report.__class__ = TaskReport  # type: ignore[assignment]
    return report  # type: ignore[return-value]


@dataclass(slots=True)
class WorkerStats:
    """What a worker has done so far (:attr:`Worker.stats` returns a copy)."""

    claimed: int = 0
    running: int = 0
    completed: int = 0
    #: Failed attempts recorded (each retried after backoff, or the task failed for good).
    failed: int = 0
    lease_lost: int = 0
    cancelled: int = 0
    released: int = 0
    unrecorded: int = 0

    def count(self, outcome: Outcome) -> None:
        """Count one attempt that ended so."""
        if outcome is Outcome.Completed:
            self.completed += 1
        elif outcome is Outcome.Failed:
            self.failed += 1
        elif outcome is Outcome.LeaseLost:
            self.lease_lost += 1
        elif outcome is Outcome.Cancelled:
            self.cancelled += 1
        elif outcome is Outcome.Released:
            self.released += 1
        else:
            self.unrecorded += 1

    def payload(self) -> dict[str, int]:
        """The counts of finished work, as the ``worker.stopped`` event records them."""
        return {
            "claimed": self.claimed,
            "completed": self.completed,
            "failed": self.failed,
            "lease_lost": self.lease_lost,
            "cancelled": self.cancelled,
            "released": self.released,
            "unrecorded": self.unrecorded,
        }


def error_text(exc: BaseException) -> str:
    """``Type: message`` as the storage accepts it: cut to a sane length, no NUL, no lone
    surrogates (an exception's message may hold anything)."""
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    text = text.replace("\x00", "\\0")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
