"""ruv-swarm-persistence: the persistence layer multi-agent swarms run on.

Agents register and heartbeat; tasks wait in a priority queue until their dependencies are
done and exactly one worker claims each; everything that happens is appended to an event log;
agents message each other with read receipts; metrics are stored and aggregated. One async API,
several backends (memory, SQLite, PostgreSQL, and IndexedDB in a browser under Pyodide), one
conformance suite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codec import Limits
from .errors import (
    ConflictError,
    DatabaseError,
    LeaseLostError,
    MigrationError,
    NotFoundError,
    PoolError,
    SerializationError,
    StorageError,
    TransactionError,
    ValidationError,
)
from .models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MessagePriority,
    MetricModel,
    TaskModel,
    TaskPriority,
    TaskStatus,
)
from .query import QueryBuilder
from .repository import Repository
from .rules import RetryPolicy
from .storage import MetricAggregate, PruneResult, Storage, Transaction
from .urls import import_backend as _import_backend
from .urls import init_storage
from .worker import TaskContext, Worker

if TYPE_CHECKING:
    from .backends.browser import IndexedDBStorage
    from .backends.memory import MemoryStorage
    from .backends.postgres import PostgresStorage
    from .backends.sqlite import SqliteStorage

__version__ = "0.1.0"

__all__ = [
    "AgentModel",
    "AgentStatus",
    "ConflictError",
    "DatabaseError",
    "EventModel",
    "IndexedDBStorage",
    "LeaseLostError",
    "Limits",
    "MemoryStorage",
    "MessageModel",
    "MessagePriority",
    "MetricAggregate",
    "MetricModel",
    "MigrationError",
    "NotFoundError",
    "PoolError",
    "PostgresStorage",
    "PruneResult",
    "QueryBuilder",
    "Repository",
    "RetryPolicy",
    "SerializationError",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "TaskContext",
    "TaskModel",
    "TaskPriority",
    "TaskStatus",
    "Transaction",
    "TransactionError",
    "ValidationError",
    "Worker",
    "__version__",
    "init_storage",
]

#: Backend classes loaded on first use, by the scheme whose module defines them.
_LAZY = {
    "MemoryStorage": "memory",
    "SqliteStorage": "sqlite",
    "PostgresStorage": "postgresql",
    "IndexedDBStorage": "indexeddb",
}


def __getattr__(name: str) -> Any:
    """Import backend classes on first use, so their drivers load only when needed.

    A backend whose driver is missing raises ``urls.BackendUnavailableError``, an
    ``ImportError`` (and a ``StorageError``) whose message says what to install.
    """
    scheme = _LAZY.get(name)
    if scheme is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_backend(scheme, name), name)
    globals()[name] = value
    return value
