"""What the browser backend needs from IndexedDB, and the real thing under Pyodide.

:class:`Bridge` and :class:`Connection` say it in Python terms: open a database at a schema
version (creating its object stores), read every store, write a batch of puts and deletes in
one transaction that has completed when the call returns, hold a lock for the database, ask
for persistent storage. :class:`PyodideBridge` does it in the browser through ``idb.js`` and
Pyodide's foreign function interface; the tests of the backend's bookkeeping pass a stand-in
that keeps the stores in a dictionary.

Pyodide's ``js`` and ``pyodide`` modules exist only in the browser, so they are imported
inside :class:`PyodideBridge` and typed as ``Any``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Protocol

from ...urls import BackendUnavailableError, in_browser

__all__ = ["Bridge", "Connection", "IdbError", "PyodideBridge"]


class IdbError(Exception):
    """IndexedDB refused a request.

    ``name`` is the name of the browser's ``DOMException`` (``"VersionError"``,
    ``"QuotaExceededError"``, …) or one of ``idb.js``'s own: ``"UpgradeRefused"`` (the
    database needs creating or upgrading and the caller said not to), ``"Blocked"`` (an
    upgrade waits for another page to close the database), ``"Closed"`` (the browser closed
    it). The storage turns it into the library's errors at one boundary.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class Connection(Protocol):
    """An open IndexedDB database."""

    async def load(self, stores: Sequence[str]) -> list[tuple[list[Any], list[str]]]:
        """Every ``(keys, values)`` of each store, read in one transaction."""
        ...

    def commit(
        self,
        stores: Sequence[str],
        ops: list[Any],
        durability: str,
        done: Callable[[IdbError | None], None],
    ) -> None:
        """Write ``ops`` (flat: ``store, key, value``, …; a ``None`` value deletes the key) in
        one readwrite transaction over ``stores``; call ``done(None)`` after its ``complete``
        event, or ``done(error)`` if it failed: once, later, from a callback of the browser
        (outside the event loop's callbacks).

        A callback rather than a coroutine: awaiting the transaction from Python would cost
        two or three turns of the event loop between it and the next one (see the engine).
        """

    def close(self) -> None:
        """Close the database."""


class Bridge(Protocol):
    """The IndexedDB of one origin, and the browser services around it."""

    async def open(
        self, name: str, version: int, stores: Sequence[str], upgrade: bool
    ) -> Connection:
        """Open ``name`` at ``version``, creating missing ``stores`` (unless not ``upgrade``)."""
        ...

    async def version(self, name: str) -> int:
        """The version the database has now; 0 when it does not exist or is not known."""
        ...

    async def delete(self, name: str) -> None:
        """Delete the database ``name`` (nothing if it does not exist)."""

    async def lock(self, name: str) -> Callable[[], Awaitable[None]] | None:
        """Take the exclusive lock ``name`` for this page: what releases it (returning once
        it is free), or ``None`` if another page or worker holds it."""
        ...

    async def persisted(self) -> bool | None:
        """Whether the origin's storage is persistent (asks nobody); ``None`` if unknown."""
        ...

    async def persist(self) -> bool | None:
        """Ask the browser to make the origin's storage persistent (it may ask the user)."""
        ...


def _idb_error(error: Any) -> IdbError:
    """The :class:`IdbError` of a JavaScript error (a ``JsException``, or the error itself)."""
    name = str(getattr(error, "name", "") or type(error).__name__)
    message = str(getattr(error, "message", "") or error)
    return IdbError(name, message)


class _PyodideConnection:
    """A database opened by :class:`PyodideBridge`."""

    def __init__(self, bridge: PyodideBridge, db: Any) -> None:
        self._bridge = bridge
        self._db = db

    async def load(self, stores: Sequence[str]) -> list[tuple[list[Any], list[str]]]:
        b = self._bridge
        result = await b.call(b.js.load(self._db, b.to_js(list(stores))))
        return [(list(keys), list(values)) for keys, values in result.to_py()]

    def commit(
        self,
        stores: Sequence[str],
        ops: list[Any],
        durability: str,
        done: Callable[[IdbError | None], None],
    ) -> None:
        b = self._bridge

        def settled(error: Any = None) -> None:
            done(None if error is None else _idb_error(error))

        # One call issues every request: an await between two of them would end the
        # IndexedDB transaction. Python's None arrives as undefined, which idb.js deletes.
        # The store names as one string: converting a list costs more than the split.
        b.js.commit(self._db, ",".join(stores), b.to_js(ops), durability, b.once(settled))

    def close(self) -> None:
        self._bridge.js.close(self._db)


class PyodideBridge:
    """IndexedDB through ``idb.js``, in a browser under Pyodide."""

    def __init__(self) -> None:
        if not in_browser():
            raise BackendUnavailableError(
                "IndexedDB exists only in a browser: indexeddb:// runs under Pyodide; "
                "here use a file path (SQLite) or memory://",
                name="js",
            )
        # Pyodide's own modules: imported by name, as they exist only in the browser.
        run_js = importlib.import_module("pyodide.code").run_js
        source = resources.files(__package__).joinpath("idb.js").read_text(encoding="utf-8")
        self.js: Any = run_js(source)
        ffi = importlib.import_module("pyodide.ffi")
        self.to_js: Callable[[Any], Any] = ffi.to_js
        #: A JavaScript function that calls the Python one, and lets go of it after one call.
        self.once: Callable[[Callable[..., None]], Any] = ffi.create_once_callable

    @staticmethod
    async def call(promise: Any) -> Any:
        """Await a promise of ``idb.js``; its rejection as an :class:`IdbError`."""
        try:
            return await promise
        except Exception as exc:
            raise _idb_error(exc) from exc

    async def open(
        self, name: str, version: int, stores: Sequence[str], upgrade: bool
    ) -> Connection:
        db = await self.call(self.js.open(name, version, self.to_js(list(stores)), upgrade))
        return _PyodideConnection(self, db)

    async def version(self, name: str) -> int:
        return int(await self.call(self.js.version(name)))

    async def delete(self, name: str) -> None:
        await self.call(self.js.deleteDatabase(name))

    async def lock(self, name: str) -> Callable[[], Awaitable[None]] | None:
        release = await self.call(self.js.lock(name))
        if release is None:
            return None

        async def unlock() -> None:
            await self.call(release())

        return unlock

    async def persisted(self) -> bool | None:
        answer = await self.call(self.js.persisted())
        return None if answer is None else bool(answer)

    async def persist(self) -> bool | None:
        answer = await self.call(self.js.persist())
        return None if answer is None else bool(answer)
