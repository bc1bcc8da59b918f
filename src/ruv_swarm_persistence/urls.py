"""``init_storage(url)``: open the backend a path or URL names.

``None`` means ``$SWARM_DB_URL``, else ``./swarm.db`` (in a browser, under Pyodide:
``indexeddb://swarm``). Accepted: a file path, ``sqlite:///relative.db``,
``sqlite:////absolute.db``, ``memory://``, ``postgresql://user@host:port/db`` and
``indexeddb://NAME`` (a browser's IndexedDB). Query parameters become backend options.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import StorageError, ValidationError
from .storage import Storage

__all__ = [
    "BackendUnavailableError",
    "DEFAULT_BROWSER_URL",
    "DEFAULT_PATH",
    "ParsedUrl",
    "StorageOpening",
    "import_backend",
    "in_browser",
    "init_storage",
    "install_hint",
    "not_in_browser",
    "parse_url",
]

DEFAULT_PATH = "swarm.db"
#: What ``init_storage()`` opens in a browser (Pyodide), where there is no file system to keep.
DEFAULT_BROWSER_URL = "indexeddb://swarm"


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A storage URL split into backend, location and options."""

    scheme: str  # "sqlite", "memory", "postgresql" or "indexeddb"
    # file path, "" for memory, the DSN without options for PostgreSQL, the IndexedDB name
    location: str
    options: dict[str, str]


_SCHEMES = {
    "sqlite": "sqlite",
    "file": "sqlite",
    "memory": "memory",
    "mem": "memory",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "indexeddb": "indexeddb",
}


def in_browser() -> bool:
    """Whether this Python runs in a browser (Pyodide: no threads, processes or sockets)."""
    return sys.platform == "emscripten"


def parse_url(url: str | os.PathLike[str] | None = None) -> ParsedUrl:
    """Split a storage URL or path; an unknown scheme is a :class:`ValidationError`."""
    if url is None:
        url = os.environ.get("SWARM_DB_URL") or (
            DEFAULT_BROWSER_URL if in_browser() else DEFAULT_PATH
        )
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise ValidationError("must be a non-empty path or URL", field="url")
    if "\x00" in text:
        # No file system or database name can hold one; the OS would raise ValueError.
        raise ValidationError("must not contain a NUL character", field="url")
    if "://" not in text:
        if text == ":memory:":
            return ParsedUrl("memory", "", {})
        return ParsedUrl("sqlite", text, {})
    parts = urlsplit(text)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        known = (
            "a file path, sqlite:///file.db, memory://, postgresql://user@host/db, indexeddb://name"
        )
        raise ValidationError(f"unknown scheme {parts.scheme!r} (use {known})", field="url")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "memory":
        return ParsedUrl("memory", "", options)
    if scheme == "sqlite":
        # sqlite:///rel.db → "rel.db"; sqlite:////abs.db → "/abs.db"
        path = unquote(parts.netloc + parts.path)
        if path.startswith("/") and not parts.netloc:
            path = path[1:]
        if not path:
            raise ValidationError("a sqlite URL needs a file path: sqlite:///swarm.db", field="url")
        if "\x00" in path:
            raise ValidationError("must not contain a NUL character", field="url")
        return ParsedUrl("sqlite", path, options)
    if scheme == "indexeddb":
        # indexeddb://swarm → "swarm" (indexeddb:///swarm too); case is kept, as IndexedDB does.
        name = unquote(parts.netloc + parts.path)
        if name.startswith("/") and not parts.netloc:
            name = name[1:]
        if not name:
            raise ValidationError(
                "an indexeddb URL needs a database name: indexeddb://swarm", field="url"
            )
        return ParsedUrl("indexeddb", name, options)
    dsn = text.split("?", 1)[0]
    return ParsedUrl("postgresql", dsn, options)


Opener = Callable[[ParsedUrl, dict[str, Any]], Awaitable[Storage]]

#: Backend module per scheme, and the driver it imports (``""``: none); each module exposes
#: ``async def open_url(parsed, options)``.
BACKENDS: dict[str, tuple[str, str]] = {
    "memory": ("ruv_swarm_persistence.backends.memory", ""),
    "sqlite": ("ruv_swarm_persistence.backends.sqlite", "apsw"),
    "postgresql": ("ruv_swarm_persistence.backends.postgres", "asyncpg"),
    "indexeddb": ("ruv_swarm_persistence.backends.browser", ""),
}

#: Schemes whose backend runs in a browser (Pyodide); the others need a file system, threads
#: or sockets, and their drivers have no build for it.
BROWSER_SCHEMES = frozenset({"memory", "indexeddb"})

#: What brings each driver back. apsw is a dependency of the package itself (there is no
#: extra for it), so only a broken install lacks it; asyncpg comes with the ``postgres`` extra.
INSTALL_HINTS: dict[str, str] = {
    "apsw": "pip install apsw (a dependency of ruv-swarm-persistence: reinstalling it also does)",
    "asyncpg": "pip install 'ruv-swarm-persistence[postgres]'",
}


class BackendUnavailableError(StorageError, ImportError):
    """A backend cannot be loaded: its driver is not installed, or it is not in this version.

    An :class:`ImportError`, so ``from ruv_swarm_persistence import PostgresStorage`` fails the
    way a missing import does, and a :class:`StorageError`, so ``init_storage`` keeps its
    promise that every error it raises is the library's (the URL may come from
    ``$SWARM_DB_URL``, and callers that handle ``StorageError`` should not need a second
    clause for it). The message says what to install.
    """


def install_hint(driver: str) -> str:
    """The command that installs ``driver``."""
    return INSTALL_HINTS.get(driver, f"pip install {driver}")


def not_in_browser(what: str, module_name: str) -> None:
    """Raise :class:`BackendUnavailableError` in a browser (Pyodide): ``what`` needs a file
    system, threads or sockets. The backends that do call it before importing their driver."""
    if in_browser():
        raise BackendUnavailableError(
            f"{what} does not run in a browser (Pyodide): use indexeddb://NAME, kept in "
            "IndexedDB, or memory:// instead",
            name=module_name,
        )


def import_backend(scheme: str, what: str) -> ModuleType:
    """Import the backend module of ``scheme``; ``what`` (the caller's name) leads any error.

    A missing driver or backend module is a :class:`BackendUnavailableError` that says what
    to install, and so, in a browser, is a backend that cannot run there; any other import
    failure (a broken driver) propagates as it is.
    """
    module_name, driver = BACKENDS[scheme]
    if scheme not in BROWSER_SCHEMES:
        not_in_browser(what, module_name)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if driver and exc.name == driver:
            raise BackendUnavailableError(
                f"{what} needs the {driver!r} driver: {install_hint(driver)}", name=driver
            ) from exc
        if exc.name and exc.name.startswith(module_name):
            raise BackendUnavailableError(
                f"{what} is not available in this version", name=exc.name
            ) from exc
        raise


class StorageOpening(Coroutine[Any, Any, Storage]):
    """What :func:`init_storage` returns: await it, or use it with ``async with``.

    ``storage = await init_storage(url)`` gives the open storage (close it, or ``async with``
    it, yourself); ``async with init_storage(url) as storage:`` opens it and closes it on exit.
    It is a coroutine as well, so ``asyncio.run``, ``asyncio.create_task`` and
    ``run_coroutine_threadsafe`` accept it as they accepted the coroutine ``init_storage``
    returned before. Like any coroutine it can be awaited (or entered) once.
    """

    __slots__ = ("_coro", "_storage")

    def __init__(self, coro: Coroutine[Any, Any, Storage]) -> None:
        self._coro = coro
        self._storage: Storage | None = None

    def __await__(self) -> Generator[Any, None, Storage]:
        return self._coro.__await__()

    def send(self, value: Any, /) -> Any:
        """Advance the opening (the coroutine protocol, for event loops)."""
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        """Raise into the opening (the coroutine protocol, for event loops)."""
        # Passed through as given: re-spelling a one-argument throw as the three-argument
        # form would trigger that form's DeprecationWarning.
        return self._coro.throw(*args)

    def close(self) -> None:
        """Abandon the opening (the coroutine protocol)."""
        self._coro.close()

    async def __aenter__(self) -> Storage:
        self._storage = await self._coro
        return self._storage

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._storage is not None:
            await self._storage.close()


def init_storage(url: str | os.PathLike[str] | None = None, **options: Any) -> StorageOpening:
    """Open (creating and migrating if needed) the storage that ``url`` names.

    Use ``async with init_storage(url) as storage:`` (closed on exit) or
    ``storage = await init_storage(url)``. Options are the backend's (see its ``open``);
    they override the URL's query parameters. A backend whose driver is not installed raises
    :class:`BackendUnavailableError` (a :class:`StorageError`) naming what to install.
    """
    return StorageOpening(_open_storage(url, options))


async def _open_storage(url: str | os.PathLike[str] | None, options: dict[str, Any]) -> Storage:
    parsed = parse_url(url)
    module = import_backend(parsed.scheme, f"the {parsed.scheme} backend")
    opener: Opener = module.open_url
    merged: dict[str, Any] = {**parsed.options, **options}
    return await opener(parsed, merged)
