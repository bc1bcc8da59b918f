"""Storage URLs: every accepted form, the defaults, and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import init_storage, urls
from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.errors import StorageError, ValidationError
from ruv_swarm_persistence.models import AgentModel
from ruv_swarm_persistence.urls import ParsedUrl, parse_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("swarm.db", ParsedUrl("sqlite", "swarm.db", {})),
        ("./data/swarm.db", ParsedUrl("sqlite", "./data/swarm.db", {})),
        ("/var/lib/swarm.db", ParsedUrl("sqlite", "/var/lib/swarm.db", {})),
        (Path("data") / "swarm.db", ParsedUrl("sqlite", "data/swarm.db", {})),
        ("sqlite:///rel.db", ParsedUrl("sqlite", "rel.db", {})),
        ("sqlite:///dir/rel.db", ParsedUrl("sqlite", "dir/rel.db", {})),
        ("sqlite:////abs.db", ParsedUrl("sqlite", "/abs.db", {})),
        ("sqlite:////tmp/my%20swarm.db", ParsedUrl("sqlite", "/tmp/my swarm.db", {})),
        ("SQLITE:///rel.db", ParsedUrl("sqlite", "rel.db", {})),
        (
            "sqlite:///rel.db?readers=4&synchronous=full",
            ParsedUrl("sqlite", "rel.db", {"readers": "4", "synchronous": "full"}),
        ),
        ("memory://", ParsedUrl("memory", "", {})),
        (":memory:", ParsedUrl("memory", "", {})),
        ("memory://?lease=5", ParsedUrl("memory", "", {"lease": "5"})),
        (
            "postgresql://user@host:5432/db",
            ParsedUrl("postgresql", "postgresql://user@host:5432/db", {}),
        ),
        (
            "postgres://user:secret@host/db",
            ParsedUrl("postgresql", "postgres://user:secret@host/db", {}),
        ),
        (
            "postgresql://user@host/db?pool_size=8&lease=10",
            ParsedUrl("postgresql", "postgresql://user@host/db", {"pool_size": "8", "lease": "10"}),
        ),
    ],
    ids=str,
)
def test_accepted_forms(url: Any, expected: ParsedUrl) -> None:
    assert parse_url(url) == expected


def test_none_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_DB_URL", "postgresql://u@h/db")
    assert parse_url(None) == ParsedUrl("postgresql", "postgresql://u@h/db", {})
    monkeypatch.setenv("SWARM_DB_URL", "memory://")
    assert parse_url().scheme == "memory"


@pytest.mark.parametrize("value", [None, ""])
def test_default_is_swarm_db_in_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("SWARM_DB_URL", raising=False)
    else:
        monkeypatch.setenv("SWARM_DB_URL", value)
    assert parse_url() == ParsedUrl("sqlite", "swarm.db", {})
    assert urls.DEFAULT_PATH == "swarm.db"


@pytest.mark.parametrize(
    "url", ["", "mysql://u@h/db", "redis://localhost", "ftp://x/y.db", "sqlite://", "http://x"]
)
def test_bad_urls_are_validation_errors(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_url(url)
    assert info.value.field == "url"
    assert isinstance(info.value, StorageError)


def test_unknown_scheme_lists_what_is_accepted() -> None:
    with pytest.raises(ValidationError, match=r"memory://.*postgresql://"):
        parse_url("mongodb://h/db")


async def test_init_storage_memory() -> None:
    storage = await init_storage("memory://")
    try:
        assert isinstance(storage, MemoryStorage)
        a = AgentModel.new("w", "worker")
        await storage.store_agent(a)
        assert await storage.get_agent(a.id) == a
    finally:
        await storage.close()


async def test_init_storage_memory_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_DB_URL", ":memory:")
    async with await init_storage() as storage:
        assert isinstance(storage, MemoryStorage)


async def test_init_storage_passes_options() -> None:
    async with await init_storage("memory://?lease=5&transaction_timeout=0.5") as storage:
        assert isinstance(storage, MemoryStorage)
    async with await init_storage("memory://", lease=7) as storage:
        assert isinstance(storage, MemoryStorage)


@pytest.mark.parametrize("url", ["memory://?bogus=1", "memory://?lease=soon", "memory://?lease=-1"])
async def test_init_storage_bad_memory_options(url: str) -> None:
    with pytest.raises(ValidationError):
        await init_storage(url)


async def test_init_storage_unknown_scheme_is_a_storage_error() -> None:
    with pytest.raises(StorageError) as info:
        await init_storage("redis://localhost/0")
    assert isinstance(info.value, ValidationError)


async def test_missing_backend_module_is_a_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        urls.BACKENDS, "memory", ("ruv_swarm_persistence.backends.not_built_yet", "")
    )
    with pytest.raises(StorageError, match="not available"):
        await init_storage("memory://")


async def test_missing_driver_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "no_such_driver_for_tests"
    monkeypatch.setitem(urls.BACKENDS, "postgresql", (missing, missing))
    with pytest.raises(StorageError, match=r"pip install") as info:
        await init_storage("postgresql://u@h/db")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
