"""The public surface: ``__all__`` pinned, every name resolvable, the core free of drivers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ruv_swarm_persistence as pkg
from ruv_swarm_persistence import codec, errors, models, query, storage, urls
from ruv_swarm_persistence.storage import Storage

PUBLIC = [
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

BACKEND_CLASSES = ["MemoryStorage", "SqliteStorage", "PostgresStorage", "IndexedDBStorage"]


def test_all_is_pinned() -> None:
    """Changing the public API is deliberate: update this list with the change."""
    assert sorted(pkg.__all__) == sorted(PUBLIC)
    assert len(set(pkg.__all__)) == len(pkg.__all__)


@pytest.mark.parametrize("name", [n for n in PUBLIC if n not in BACKEND_CLASSES])
def test_every_public_name_is_importable(name: str) -> None:
    assert getattr(pkg, name) is not None


@pytest.mark.parametrize("name", BACKEND_CLASSES)
def test_backend_classes_load_lazily_as_storages(name: str) -> None:
    try:
        cls = getattr(pkg, name)
    except ImportError:
        # A backend whose driver is not installed says so (tested below).
        return
    assert isinstance(cls, type)
    assert issubclass(cls, Storage)
    assert cls.__name__ == name


def test_memory_storage_always_loads() -> None:
    from ruv_swarm_persistence.backends.memory import MemoryStorage

    assert pkg.MemoryStorage is MemoryStorage


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = pkg.NoSuchThing


def test_version_is_a_string() -> None:
    assert isinstance(pkg.__version__, str)
    assert pkg.__version__.count(".") >= 2


@pytest.mark.parametrize(
    "module", [codec, errors, models, query, storage, urls], ids=lambda m: m.__name__
)
def test_module_all_names_exist(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        assert hasattr(module, name), name


def test_migrations_exports() -> None:
    from ruv_swarm_persistence.migrations import Migration, MigrationRunner

    assert Migration.__name__ == "Migration"
    assert MigrationRunner.__name__ == "MigrationRunner"


def test_importing_the_core_loads_no_driver_cli_or_test_library() -> None:
    code = (
        "import sys, ruv_swarm_persistence as p\n"
        "from ruv_swarm_persistence import codec, query, repository, rules, storage, urls\n"
        "from ruv_swarm_persistence.backends import memory\n"
        "bad = {'apsw', 'asyncpg', 'rich', 'typer', 'pytest', 'hypothesis'} & set(sys.modules)\n"
        "print(sorted(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "driver", "hint"),
    [
        ("PostgresStorage", "asyncpg", "pip install 'ruv-swarm-persistence[postgres]'"),
        ("SqliteStorage", "apsw", "pip install apsw"),
    ],
)
def test_backend_without_its_driver_is_an_import_error_that_says_what_to_install(
    name: str, driver: str, hint: str
) -> None:
    # A None entry in sys.modules makes `import driver` fail as an uninstalled package does.
    code = (
        f"import sys\nsys.modules[{driver!r}] = None\n"
        "try:\n"
        f"    from ruv_swarm_persistence import {name}\n"
        "except ImportError as exc:\n"
        "    from ruv_swarm_persistence import StorageError\n"
        "    print(exc.name, isinstance(exc, StorageError))\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    flags, message = out.stdout.splitlines()
    assert flags == f"{driver} True"
    assert message == f"{name} needs the {driver!r} driver: {urls.install_hint(driver)}"
    assert hint in message


def test_indexeddb_storage_loads_outside_a_browser_without_pyodide() -> None:
    # The class imports anywhere (Pyodide's modules load only when a storage opens).
    code = (
        "import sys\n"
        "from ruv_swarm_persistence import IndexedDBStorage\n"
        "from ruv_swarm_persistence.backends.browser import IndexedDBStorage as Cls\n"
        "print(IndexedDBStorage is Cls, {'js', 'pyodide'} & set(sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True set()"


def test_memory_storage_needs_no_driver() -> None:
    code = (
        "import sys\n"
        "sys.modules['apsw'] = sys.modules['asyncpg'] = None\n"
        "from ruv_swarm_persistence import MemoryStorage\n"
        "print(MemoryStorage.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "MemoryStorage"
