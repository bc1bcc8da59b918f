"""OpenTelemetry spans around storage calls, for those who opt in.

``traced(storage)`` returns a storage whose every awaited call (``claim_next_task``,
``store_event``, ``query``, …) runs inside a span named after the method, with the database
system as an attribute, so a user's tracing shows the swarm's database work beside their own.
Calls made through a transaction it begins are traced too. Without ``opentelemetry-api``
installed it returns the storage itself: nothing wraps the calls and nothing is imported.

The core never imports this module: the calls of an untraced storage pay nothing for it.
``swarmdb serve`` traces its storage.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from .storage import Storage, Transaction

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["TRACED_METHODS", "traced"]

S = TypeVar("S", bound=Storage)

#: The storage methods that run in a span: every public coroutine method of the API.
TRACED_METHODS: Final = frozenset(
    name
    for name, member in inspect.getmembers(Transaction)
    if not name.startswith("_") and inspect.iscoroutinefunction(member)
)

#: ``db.system.name`` by backend class (OpenTelemetry's database conventions).
_SYSTEMS: Final = {"sqlite": "sqlite", "postgres": "postgresql", "memory": "memory"}


def _system(storage: Storage) -> str:
    name = type(storage).__name__.lower()
    return next((v for k, v in _SYSTEMS.items() if k in name), "other_sql")


def traced(storage: S, tracer_provider: TracerProvider | None = None) -> S:
    """``storage`` with a span around each call, or ``storage`` itself without OpenTelemetry.

    ``tracer_provider`` defaults to the global one (``opentelemetry.trace``); without an SDK
    configured, OpenTelemetry's own tracer is a no-op.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return storage
    from . import __version__

    tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
    return cast(S, _TracedStorage(storage, tracer, _system(storage)))


class _TracedStorage:
    """Forwards every attribute to the storage; coroutine methods run inside a span."""

    def __init__(self, inner: Storage, tracer: Tracer, system: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._system = system

    def __repr__(self) -> str:
        return f"traced({self._inner!r})"

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._inner, name)
        if name not in TRACED_METHODS:
            return member
        if name == "begin_transaction":
            return self._span(name, member, wrap=True)
        return self._span(name, member)

    def _span(
        self, name: str, method: Callable[..., Awaitable[Any]], *, wrap: bool = False
    ) -> Callable[..., Awaitable[Any]]:
        tracer = self._tracer
        attributes = {"db.system.name": self._system, "db.operation.name": name}

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name, attributes=attributes):
                result = await method(*args, **kwargs)
            return _TracedStorage(result, tracer, self._system) if wrap else result

        return call

    @asynccontextmanager
    async def transaction(self, timeout: Any = None) -> AsyncIterator[Any]:
        """``async with storage.transaction() as tx``, its calls traced."""
        tx = await self.begin_transaction(timeout)
        async with tx:
            yield tx

    async def __aenter__(self) -> Any:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(self._inner, Transaction):
            await self._inner.__aexit__(exc_type, exc, tb)
            return
        # Leaving a transaction's block commits it (or rolls it back): that is the call to show.
        name = "commit" if exc is None else "rollback"
        attributes = {"db.system.name": self._system, "db.operation.name": name}
        with self._tracer.start_as_current_span(name, attributes=attributes):
            await self._inner.__aexit__(exc_type, exc, tb)
