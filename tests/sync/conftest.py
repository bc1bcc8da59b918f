"""Runs the conformance suite through the blocking API.

``AsyncOverSync`` turns a :class:`SyncStorage` back into an async :class:`Storage` by running
each blocking call on a fresh thread, so the suite's tests (written against the async API)
exercise the facade: its loop thread, its transaction routing, its subscription iterator.

A fresh thread per call matters: the facade joins a transaction by the calling thread, so a
thread pool that reused one thread for unrelated calls would join them by accident. Here the
async side's own transaction join (the ``ACTIVE_TRANSACTION`` context variable of the task that
began it) picks the blocking transaction explicitly, as a caller of the blocking API does.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ruv_swarm_persistence.models import EventModel
from ruv_swarm_persistence.storage import ACTIVE_TRANSACTION, Storage, Transaction
from ruv_swarm_persistence.sync import SyncStorage, SyncTransaction, open_storage
from ruv_swarm_persistence.testing.plugin import clock, storage  # noqa: F401 - fixtures

R = TypeVar("R")

#: Backends run through the blocking API (by URL, opened on the facade's own loop).
SYNC_BACKENDS = ["memory", "sqlite"]

#: On SQLite, the suite's behavioural modules run through the facade; the validation and
#: round-trip modules (thousands of cases that never reach a backend-specific path of the
#: facade) run through it on memory only, and directly on SQLite in tests/conformance.
SQLITE_MODULES = {
    "agents",
    "tasks",
    "task_lifecycle",
    "transactions",
    "events",
    "messages",
    "metrics",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the non-behavioural suite modules on SQLite (see ``SQLITE_MODULES``)."""
    here = Path(__file__).parent
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        module = getattr(getattr(item, "function", None), "__module__", "")
        if (
            item.path.is_relative_to(here)
            and callspec is not None
            and callspec.params.get("storage_factory") == "sqlite"
            and module.startswith("ruv_swarm_persistence.testing.")
            and module.rsplit(".", 1)[1] not in SQLITE_MODULES
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_SPECIAL = {"close", "begin_transaction", "transaction", "subscribe"}


async def in_thread(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a blocking call on a new thread and await its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[R] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def work() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        # RuntimeError: the test's loop is gone (the awaiting test was cancelled).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="sync-call", daemon=True).start()
    return await fut


def _forwarder(name: str) -> Callable[..., Any]:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await in_thread(getattr(self._blocking(), name), *args, **kwargs)

    method.__name__ = name
    return method


def _storage_methods() -> list[str]:
    return [
        name
        for name, member in inspect.getmembers(Storage)
        if not name.startswith("_") and inspect.iscoroutinefunction(member) and name not in _SPECIAL
    ]


async def _stream(
    source: SyncStorage | SyncTransaction, after: int, types: Sequence[str] | None
) -> AsyncIterator[EventModel]:
    sub = await in_thread(source.subscribe, after, types)
    try:
        while True:
            event = await in_thread(next, sub, None)
            if event is None:
                return
            yield event
    finally:
        sub.close()


class AsyncOverSync(Storage):
    """An async Storage whose every call goes through a :class:`SyncStorage`."""

    def __init__(self, sync: SyncStorage) -> None:
        self.sync = sync

    def _blocking(self) -> SyncStorage | SyncTransaction:
        tx = ACTIVE_TRANSACTION.get()
        if isinstance(tx, AsyncOverSyncTransaction) and tx.owner is self:
            return tx.blocking
        return self.sync

    async def close(self) -> None:
        await in_thread(self.sync.close)

    async def begin_transaction(self, timeout: Any = None) -> Transaction:
        blocking = await in_thread(self._blocking().begin_transaction, timeout)
        tx = AsyncOverSyncTransaction(self, blocking)
        ACTIVE_TRANSACTION.set(tx)
        return tx

    async def subscribe(  # type: ignore[override]
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[EventModel]:
        async for event in _stream(self.sync, after_sequence, event_types):
            yield event


class AsyncOverSyncTransaction(Transaction):
    """The async view of a :class:`SyncTransaction`."""

    def __init__(self, owner: AsyncOverSync, blocking: SyncTransaction) -> None:
        self.owner = owner
        self.blocking = blocking

    def _blocking(self) -> SyncTransaction:
        return self.blocking

    @property
    def is_active(self) -> bool:
        return self.blocking.is_active

    def _leave(self) -> None:
        if ACTIVE_TRANSACTION.get() is self:
            ACTIVE_TRANSACTION.set(None)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # The blocking transaction's own ``with`` exit decides: commit, roll back, or report
        # a timeout.
        try:
            await in_thread(self.blocking.__exit__, exc_type, exc, tb)
        finally:
            self._leave()

    async def commit(self) -> None:
        try:
            await in_thread(self.blocking.commit)
        finally:
            self._leave()

    async def rollback(self) -> None:
        try:
            await in_thread(self.blocking.rollback)
        finally:
            self._leave()

    async def subscribe(  # type: ignore[override]
        self, after_sequence: int = 0, event_types: Sequence[str] | None = None
    ) -> AsyncIterator[EventModel]:
        async for event in _stream(self.blocking, after_sequence, event_types):
            yield event


for _cls in (AsyncOverSync, AsyncOverSyncTransaction):
    for _name in _storage_methods():
        if _name not in vars(_cls):
            setattr(_cls, _name, _forwarder(_name))
    abc.update_abstractmethods(_cls)


@pytest.fixture(params=SYNC_BACKENDS)
async def storage_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Fresh storages of the parametrized backend, each behind a SyncStorage."""
    made: list[SyncStorage] = []

    async def make(**options: Any) -> Storage:
        url = "memory://" if request.param == "memory" else str(tmp_path / f"{len(made)}.db")
        sync = await in_thread(open_storage, url, **options)
        made.append(sync)
        return AsyncOverSync(sync)

    yield make
    for s in made:
        await in_thread(s.close)
