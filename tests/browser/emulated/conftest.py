"""The conformance suite on the browser backend's engine, off-browser: IndexedDB emulated.

This checks the bookkeeping the real browser cannot show quickly: after every test the
storage is closed and opened again from what it wrote to IndexedDB, and every table must
come back as the engine held it — so each write reported every record it changed. The real
IndexedDB runs the core of the suite in headless Chromium (``tests/browser/test_in_browser.py``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ruv_swarm_persistence.backends.browser import IndexedDBStorage
from ruv_swarm_persistence.storage import Storage
from ruv_swarm_persistence.testing.plugin import clock, storage  # noqa: F401 - fixtures
from tests.browser.fake_idb import FakeIndexedDB


def tables_of(s: IndexedDBStorage) -> dict[str, Any]:
    """Every stored table of the storage's engine, comparable across a reload."""
    t = s._browser.tables
    return {
        "agents": t.agents,
        "tasks": t.tasks,
        "messages": t.messages,
        "metrics": t.metrics,
        "events": t.events,
        "event_seq": t.event_seq,
        "unfinished": {k: v for k, v in t.unfinished.items() if k in t.tasks},
        "dependents": {k: sorted(v) for k, v in t.dependents.items() if v},
    }


@pytest.fixture
async def storage_factory() -> AsyncIterator[Any]:
    """Fresh browser storages over one emulated IndexedDB; each is reloaded and compared."""
    idb = FakeIndexedDB()
    made: list[IndexedDBStorage] = []

    async def make(**options: Any) -> Storage:
        s = await IndexedDBStorage.open(f"swarm-{len(made)}", bridge=idb, **options)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()
    for s in made:
        if s._browser._failure is not None:
            continue
        # JSON round trip: what the engine holds is what a reload reads back.
        held = json.loads(json.dumps(tables_of(s)))
        again = await IndexedDBStorage.open(s.name, bridge=idb)
        try:
            assert tables_of(again) == held, f"IndexedDB lost or kept changes of {s.name}"
        finally:
            await again.close()
