"""The task rules on their own: transitions, readiness, backoff, leases, what each step writes."""

from __future__ import annotations

import pytest

from ruv_swarm_persistence import rules
from ruv_swarm_persistence.errors import ValidationError
from ruv_swarm_persistence.models import TaskStatus
from ruv_swarm_persistence.rules import RetryPolicy

STATUSES = [s.value for s in TaskStatus]
LEGAL = {
    ("pending", "assigned"),
    ("pending", "running"),
    ("pending", "failed"),
    ("pending", "cancelled"),
    ("assigned", "running"),
    ("assigned", "completed"),
    ("assigned", "failed"),
    ("assigned", "cancelled"),
    ("assigned", "pending"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "pending"),
}
PAIRS = [(a, b) for a in STATUSES for b in STATUSES]
S = 1_000_000
NOW = 1_700_000_000 * S

# --- the status machine -----------------------------------------------------------------------


def test_transitions_table_lists_every_status() -> None:
    assert set(rules.TRANSITIONS) == set(STATUSES)
    assert {(a, b) for a, targets in rules.TRANSITIONS.items() for b in targets} == LEGAL


def test_terminal_and_active_sets() -> None:
    assert {"completed", "failed", "cancelled"} == rules.TERMINAL
    assert {"assigned", "running"} == rules.ACTIVE
    for status in rules.TERMINAL:
        assert rules.TRANSITIONS[status] == frozenset()


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_check_transition(old: str, new: str) -> None:
    if old == new or (old, new) in LEGAL:
        rules.check_transition("t", old, new)
    else:
        with pytest.raises(ValidationError) as exc:
            rules.check_transition("t", old, new)
        assert exc.value.field == "task.status"
        assert old in str(exc.value)
        assert new in str(exc.value)


@pytest.mark.parametrize("status", ["assigned", "running"])
def test_stored_held_task_needs_an_agent(status: str) -> None:
    with pytest.raises(ValidationError) as exc:
        rules.check_stored_status("t", status, None, 0)
    assert exc.value.field == "task.assigned_to"
    rules.check_stored_status("t", status, "w", 0)


@pytest.mark.parametrize("status", STATUSES)
def test_stored_status_with_unfinished_dependencies(status: str) -> None:
    agent = "w" if status in rules.ACTIVE else None
    if status in ("assigned", "running", "completed"):
        with pytest.raises(ValidationError) as exc:
            rules.check_stored_status("t", status, agent, 1)
        assert exc.value.field == "task.status"
    else:
        rules.check_stored_status("t", status, agent, 2)
    rules.check_stored_status("t", status, agent, 0)


# --- readiness and leases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "unfinished", "run_after", "ready"),
    [
        ("pending", 0, None, True),
        ("pending", 0, NOW - 1, True),
        ("pending", 0, NOW, True),
        ("pending", 0, NOW + 1, False),
        ("pending", 1, None, False),
        ("pending", 3, NOW - S, False),
        ("assigned", 0, None, False),
        ("running", 0, None, False),
        ("completed", 0, None, False),
        ("failed", 0, None, False),
        ("cancelled", 0, None, False),
    ],
)
def test_is_ready(status: str, unfinished: int, run_after: int | None, ready: bool) -> None:
    assert rules.is_ready(status, unfinished, run_after, NOW) is ready


@pytest.mark.parametrize(
    ("status", "lease", "expired"),
    [
        ("assigned", NOW - 1, True),
        ("assigned", NOW, True),
        ("assigned", NOW + 1, False),
        ("running", NOW - S, True),
        ("running", NOW + S, False),
        ("assigned", None, False),
        ("pending", NOW - S, False),
        ("completed", NOW - S, False),
        ("failed", NOW - S, False),
        ("cancelled", NOW - S, False),
    ],
)
def test_lease_expired(status: str, lease: int | None, expired: bool) -> None:
    assert rules.lease_expired(status, lease, NOW) is expired


# --- backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "wait"),
    [(1, 1 * S), (2, 2 * S), (3, 4 * S), (4, 8 * S), (9, 256 * S), (10, 300 * S), (50, 300 * S)],
)
def test_default_backoff_doubles_up_to_five_minutes(retry: int, wait: int) -> None:
    assert RetryPolicy().backoff_us(retry) == wait


@pytest.mark.parametrize("retry", [0, -1])
def test_backoff_before_first_retry_is_zero(retry: int) -> None:
    assert RetryPolicy().backoff_us(retry) == 0


@pytest.mark.parametrize(
    ("policy", "waits"),
    [
        (RetryPolicy(base_us=500, factor=1.0, max_us=10**9), [500, 500, 500]),
        (RetryPolicy(base_us=100, factor=1.5, max_us=10**9), [100, 150, 225]),
        (RetryPolicy(base_us=0), [0, 0, 0]),
        (RetryPolicy(base_us=10 * S, factor=3.0, max_us=20 * S), [10 * S, 20 * S, 20 * S]),
        (RetryPolicy(base_us=S, max_us=0), [0, 0, 0]),
    ],
    ids=["constant", "fractional-factor", "no-wait", "cap-below-second", "zero-cap"],
)
def test_backoff_formula(policy: RetryPolicy, waits: list[int]) -> None:
    assert [policy.backoff_us(n) for n in (1, 2, 3)] == waits


@pytest.mark.parametrize("retry", [1024, 1025, 5000, 1_000_000])
def test_backoff_of_huge_retry_numbers_is_the_cap(retry: int) -> None:
    assert RetryPolicy().backoff_us(retry) == 300 * S
    assert RetryPolicy(base_us=1, factor=10.0, max_us=7).backoff_us(retry) == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_us": -1},
        {"base_us": 1.5},
        {"base_us": True},
        {"max_us": -1},
        {"max_us": "10"},
        {"factor": 0.5},
        {"factor": float("nan")},
        {"factor": float("inf")},
        {"factor": "2"},
    ],
)
def test_retry_policy_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as exc:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert exc.value.field is not None
    assert exc.value.field.startswith("retry_policy.")


# --- what each step writes --------------------------------------------------------------------


@pytest.mark.parametrize(("retry_count", "max_retries"), [(0, 1), (0, 3), (2, 3), (7, 8)])
def test_failure_with_retries_left_requeues(retry_count: int, max_retries: int) -> None:
    policy = RetryPolicy(base_us=S, factor=2.0, max_us=60 * S)
    changes = rules.failure_changes(retry_count, max_retries, "boom", NOW, policy)
    assert changes == {
        "status": "pending",
        "retry_count": retry_count + 1,
        "error": "boom",
        "assigned_to": None,
        "lease_expires_at": None,
        "run_after": NOW + policy.backoff_us(retry_count + 1),
        "updated_at": NOW,
    }
    assert changes["run_after"] == NOW + min(S * 2**retry_count, 60 * S)


@pytest.mark.parametrize(("retry_count", "max_retries"), [(0, 0), (3, 3), (5, 3)])
def test_failure_without_retries_left_fails(retry_count: int, max_retries: int) -> None:
    changes = rules.failure_changes(retry_count, max_retries, "boom", NOW, RetryPolicy())
    assert changes == {
        "status": "failed",
        "error": "boom",
        "lease_expires_at": None,
        "completed_at": NOW,
        "updated_at": NOW,
    }


def test_default_max_retries_means_four_attempts() -> None:
    retry_count, attempts = 0, 0
    while True:
        attempts += 1
        changes = rules.failure_changes(retry_count, 3, "x", NOW, RetryPolicy())
        if changes["status"] == "failed":
            break
        retry_count = changes["retry_count"]
    assert attempts == 4
    assert retry_count == 3


def test_claim_changes() -> None:
    assert rules.claim_changes("w", NOW, 30 * S) == {
        "status": "assigned",
        "assigned_to": "w",
        "lease_expires_at": NOW + 30 * S,
        "updated_at": NOW,
    }


def test_start_and_complete_changes() -> None:
    assert rules.start_changes(NOW) == {"status": "running", "started_at": NOW, "updated_at": NOW}
    assert rules.complete_changes('{"ok":1}', NOW) == {
        "status": "completed",
        "result": '{"ok":1}',
        "completed_at": NOW,
        "lease_expires_at": None,
        "updated_at": NOW,
    }
    assert rules.complete_changes(None, NOW)["result"] is None


def test_cancel_changes() -> None:
    base = {"status": "cancelled", "lease_expires_at": None, "completed_at": NOW, "updated_at": NOW}
    assert rules.cancel_changes(None, NOW) == base
    assert rules.cancel_changes("why", NOW) == {**base, "error": "why"}
    assert rules.cancel_changes("", NOW)["error"] == ""


def test_error_texts_name_their_cause() -> None:
    assert rules.cascade_error("t-1", "failed") == "dependency t-1 failed"
    assert rules.cascade_error("t-2", "cancelled") == "dependency t-2 cancelled"
    assert "w-9" in rules.lease_error("w-9")
    assert "lease" in rules.lease_error("w-9")
    assert "w-3" in rules.released_error("w-3")
