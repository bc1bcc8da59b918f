"""The error tree: one base, structured fields, drawn in the module docstring."""

from __future__ import annotations

import pytest

from ruv_swarm_persistence import errors
from ruv_swarm_persistence.errors import (
    ConflictError,
    DatabaseError,
    LeaseLostError,
    MigrationError,
    NotASwarmDatabaseError,
    NotFoundError,
    PoolError,
    SerializationError,
    StorageError,
    TransactionError,
    ValidationError,
)

SUBCLASSES = [
    ValidationError,
    NotFoundError,
    ConflictError,
    LeaseLostError,
    TransactionError,
    MigrationError,
    DatabaseError,
    SerializationError,
    PoolError,
    NotASwarmDatabaseError,
]


def test_the_tree_is_exactly_the_designed_one() -> None:
    assert sorted(errors.__all__) == sorted(c.__name__ for c in [StorageError, *SUBCLASSES])
    assert StorageError.__bases__ == (Exception,)


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_every_error_derives_from_storage_error(cls: type[Exception]) -> None:
    assert issubclass(cls, StorageError)
    assert cls.__module__ == "ruv_swarm_persistence.errors"
    assert cls.__doc__


@pytest.mark.parametrize("cls", [StorageError, *SUBCLASSES], ids=lambda c: c.__name__)
def test_the_module_docstring_draws_every_error(cls: type[Exception]) -> None:
    assert errors.__doc__ is not None
    assert cls.__name__ in errors.__doc__


def test_not_a_swarm_database_is_a_database_error_that_says_if_empty() -> None:
    assert issubclass(NotASwarmDatabaseError, DatabaseError)
    assert NotASwarmDatabaseError("nothing here", empty=True).empty is True


def test_builtin_bases_let_callers_catch_familiar_types() -> None:
    assert issubclass(ValidationError, ValueError)
    assert issubclass(NotFoundError, LookupError)


def test_validation_error_names_its_field() -> None:
    e = ValidationError("must not be empty", field="agent.id")
    assert e.field == "agent.id"
    assert str(e) == "agent.id: must not be empty"
    bare = ValidationError("nothing to name")
    assert bare.field is None
    assert str(bare) == "nothing to name"


def test_not_found_and_conflict_carry_kind_and_id() -> None:
    nf = NotFoundError("message", "m-1")
    assert (nf.kind, nf.id) == ("message", "m-1")
    assert str(nf) == "message 'm-1' not found"
    c = ConflictError("task", "t-1")
    assert (c.kind, c.id) == ("task", "t-1")
    assert str(c) == "task 't-1' already exists"
    assert str(ConflictError("task", "t-1", "has dependents")) == "task 't-1' has dependents"


def test_lease_lost_names_task_and_agent() -> None:
    e = LeaseLostError("t-1", "a-1", "task is pending")
    assert (e.task_id, e.agent_id) == ("t-1", "a-1")
    assert str(e) == "agent 'a-1' does not hold task 't-1': task is pending"
    assert str(LeaseLostError("t", "a")) == "agent 'a' does not hold task 't'"


def test_serialization_error_names_table_and_row() -> None:
    e = SerializationError("events", "e-1", "bad JSON")
    assert (e.table, e.id) == ("events", "e-1")
    assert str(e) == "cannot decode events row 'e-1': bad JSON"


@pytest.mark.parametrize(
    "error",
    [
        errors.ValidationError("must be positive", field="lease"),
        errors.ValidationError("bad"),
        errors.NotFoundError("task", "t-1"),
        errors.ConflictError("agent", "a-1"),
        errors.ConflictError("task", "t-1", "has dependent tasks and cannot be deleted"),
        errors.LeaseLostError("t-1", "w-1", "task is pending"),
        errors.SerializationError("events", "e-1", "bad JSON"),
        errors.TransactionError("timed out"),
        errors.DatabaseError("disk I/O error"),
    ],
)
def test_errors_survive_pickling(error: errors.StorageError) -> None:
    """Errors cross process boundaries (worker pools, the blocking API) intact."""
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
