"""``init_storage(url)``: open the backend a path or URL names.

``None`` means ``$SWARM_DB_URL``, else ``./swarm.db``. Accepted: a file path,
``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``memory://`` and
``postgresql://user@host:port/db``. Query parameters become backend options.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import StorageError, ValidationError
from .storage import Storage

__all__ = ["ParsedUrl", "init_storage", "parse_url", "DEFAULT_PATH"]

DEFAULT_PATH = "swarm.db"


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A storage URL split into backend, location and options."""

    scheme: str  # "sqlite", "memory" or "postgresql"
    location: str  # file path, "" for memory, the DSN without options for PostgreSQL
    options: dict[str, str]


_SCHEMES = {
    "sqlite": "sqlite",
    "file": "sqlite",
    "memory": "memory",
    "mem": "memory",
    "postgresql": "postgresql",
    "postgres": "postgresql",
}


def parse_url(url: str | os.PathLike[str] | None = None) -> ParsedUrl:
    """Split a storage URL or path; an unknown scheme is a :class:`ValidationError`."""
    if url is None:
        url = os.environ.get("SWARM_DB_URL") or DEFAULT_PATH
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise ValidationError("must be a non-empty path or URL", field="url")
    if "://" not in text:
        if text == ":memory:":
            return ParsedUrl("memory", "", {})
        return ParsedUrl("sqlite", text, {})
    parts = urlsplit(text)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        known = "a file path, sqlite:///file.db, memory://, postgresql://user@host/db"
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
        return ParsedUrl("sqlite", path, options)
    dsn = text.split("?", 1)[0]
    return ParsedUrl("postgresql", dsn, options)


Opener = Callable[[ParsedUrl, dict[str, Any]], Awaitable[Storage]]

#: Backend module per scheme; each exposes ``async def open_url(parsed, options)``.
BACKENDS: dict[str, tuple[str, str]] = {
    "memory": ("ruv_swarm_persistence.backends.memory", ""),
    "sqlite": ("ruv_swarm_persistence.backends.sqlite", "apsw"),
    "postgresql": ("ruv_swarm_persistence.backends.postgres", "asyncpg"),
}


async def init_storage(url: str | os.PathLike[str] | None = None, **options: Any) -> Storage:
    """Open (creating and migrating if needed) the storage that ``url`` names."""
    parsed = parse_url(url)
    module_name, driver = BACKENDS[parsed.scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == driver or exc.name.startswith(module_name)):
            if exc.name == driver:
                extra = "postgres" if driver == "asyncpg" else "sqlite"
                raise StorageError(
                    f"the {parsed.scheme} backend needs the {driver!r} driver: "
                    f"pip install 'ruv-swarm-persistence[{extra}]'"
                ) from exc
            raise StorageError(
                f"the {parsed.scheme} backend is not available in this version"
            ) from exc
        raise
    opener: Opener = module.open_url
    merged: dict[str, Any] = {**parsed.options, **options}
    return await opener(parsed, merged)
