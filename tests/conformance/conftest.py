"""Runs the conformance suite against every backend: one fixture parameter per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.storage import Storage
from ruv_swarm_persistence.testing.plugin import clock, storage  # noqa: F401 - fixtures

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
async def storage_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A factory of fresh, empty storages of the parametrized backend."""
    made: list[Storage] = []

    async def make(**options: Any) -> Storage:
        if request.param == "memory":
            s: Storage = MemoryStorage(**options)
        elif request.param == "sqlite":
            from ruv_swarm_persistence.backends.sqlite import SqliteStorage

            s = await SqliteStorage.open(tmp_path / f"{len(made)}.db", **options)
        else:  # pragma: no cover - each backend adds its branch
            raise AssertionError(request.param)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()
