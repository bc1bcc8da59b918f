"""IndexedDB of one origin kept in dictionaries: the browser backend's bookkeeping, off-browser.

It follows the rules the real one imposes on the backend: a commit is all or nothing, done in
a later turn of the loop, which its ``done`` callback reports; values must be text; keys sort
numbers before text; a database of a higher version than asked for is a ``VersionError``; an
upgrade refused with ``upgrade=False`` is ``UpgradeRefused``; a lock is held until released.
``fail_commits`` makes the next commits fail as a full disk would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruv_swarm_persistence.backends.browser.idb import IdbError


@dataclass
class FakeDatabase:
    version: int
    stores: dict[str, dict[Any, str]] = field(default_factory=dict)
    open_connections: int = 0


def _key_order(key: Any) -> tuple[int, Any]:
    # IndexedDB orders numbers before strings.
    return (0, key) if isinstance(key, (int, float)) else (1, key)


class FakeConnection:
    def __init__(self, idb: FakeIndexedDB, name: str) -> None:
        self._idb = idb
        self._name = name
        self.closed = False

    def _db(self) -> FakeDatabase:
        db = self._idb.databases.get(self._name)
        if self.closed or db is None:
            raise IdbError("InvalidStateError", "The database connection is closing.")
        return db

    async def load(self, stores: Sequence[str]) -> list[tuple[list[Any], list[str]]]:
        db = self._db()
        await asyncio.sleep(0)
        out = []
        for name in stores:
            items = sorted(db.stores[name].items(), key=lambda kv: _key_order(kv[0]))
            out.append(([k for k, _ in items], [v for _, v in items]))
        return out

    def commit(
        self,
        stores: Sequence[str],
        ops: list[Any],
        durability: str,
        done: Callable[[IdbError | None], None],
    ) -> None:
        db = self._db()
        assert durability in ("relaxed", "strict", "default")
        assert len(ops) % 3 == 0
        assert list(stores) == sorted(set(stores)), stores
        for i in range(0, len(ops), 3):
            store, key, value = ops[i : i + 3]
            # The real transaction refuses a store outside its scope.
            assert store in stores, (store, stores)
            assert value is None or isinstance(value, str), type(value)
            assert isinstance(key, (str, int)), key
        self._idb.transactions += 1
        # The transaction is in flight until its complete event: other tasks run meanwhile.
        asyncio.get_running_loop().call_soon(self._complete, db, list(ops), done)

    def _complete(
        self, db: FakeDatabase, ops: list[Any], done: Callable[[IdbError | None], None]
    ) -> None:
        if self._idb.fail_commits:
            self._idb.fail_commits -= 1
            done(IdbError("QuotaExceededError", "The quota has been exceeded."))
            return
        for i in range(0, len(ops), 3):
            store, key, value = ops[i : i + 3]
            if value is None:
                db.stores[store].pop(key, None)
            else:
                db.stores[store][key] = value
        self._idb.committed_ops += len(ops) // 3
        done(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            db = self._idb.databases.get(self._name)
            if db is not None:
                db.open_connections -= 1


class FakeIndexedDB:
    """One origin's IndexedDB and Web Locks (see the module)."""

    def __init__(self) -> None:
        self.databases: dict[str, FakeDatabase] = {}
        self.locks: set[str] = set()
        self.fail_commits = 0
        self.transactions = 0
        self.committed_ops = 0
        self.persistent: bool | None = False
        self.grant_persistence: bool | None = True

    async def open(
        self, name: str, version: int, stores: Sequence[str], upgrade: bool
    ) -> FakeConnection:
        await asyncio.sleep(0)
        db = self.databases.get(name)
        if db is not None and db.version > version:
            raise IdbError("VersionError", "The requested version is less than the existing.")
        if db is None or db.version < version:
            if not upgrade:
                raise IdbError("UpgradeRefused", "needs an upgrade")
            if db is None:
                db = self.databases[name] = FakeDatabase(version)
            db.version = version
            for store in stores:
                db.stores.setdefault(store, {})
        db.open_connections += 1
        return FakeConnection(self, name)

    async def version(self, name: str) -> int:
        db = self.databases.get(name)
        return 0 if db is None else db.version

    async def delete(self, name: str) -> None:
        self.databases.pop(name, None)

    async def lock(self, name: str) -> Callable[[], Awaitable[None]] | None:
        if name in self.locks:
            return None
        self.locks.add(name)

        async def release() -> None:
            await asyncio.sleep(0)
            self.locks.discard(name)

        return release

    async def persisted(self) -> bool | None:
        return self.persistent

    async def persist(self) -> bool | None:
        await asyncio.sleep(0)
        self.persistent = self.grant_persistence
        return self.persistent

    def values(self, name: str, store: str) -> dict[Any, str]:
        """What the store holds now."""
        return dict(self.databases[name].stores[store])
