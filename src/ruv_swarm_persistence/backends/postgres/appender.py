"""Group commit for ``store_event``: concurrent appends of one process share a statement.

Appends are serialized by the event counter's row lock anyway (see ``sql.APPEND_EVENTS``),
so one statement in flight per process costs nothing and turns N round trips and commits
into one. Each caller is resolved only after its statement committed; a conflict (an event
id already stored) fails only the caller it belongs to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ...codec import EventValues
from ...errors import ConflictError

__all__ = ["EventAppender"]

_Group = tuple[list[EventValues], "asyncio.Future[list[int]]"]


class EventAppender:
    """Queues appends and writes them in batches of at most ``MAX_ROWS`` events.

    ``write`` appends rows in one self-committing statement and returns their sequences;
    ``committed`` is called after each batch that went in (to wake this process's readers).
    """

    MAX_ROWS: Final = 2000

    def __init__(
        self,
        write: Callable[[list[EventValues]], Awaitable[list[int]]],
        committed: Callable[[], None],
    ) -> None:
        self._write = write
        self._committed = committed
        self._pending: list[_Group] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, rows: list[EventValues]) -> list[int]:
        """Append ``rows`` with whatever else is pending; their sequences once committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[int]] = loop.create_future()
        self._pending.append((rows, fut))
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await fut

    async def drain(self) -> None:
        """Wait until every pending append is resolved."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._pending:
                groups: list[_Group] = []
                rows = 0
                while self._pending and (
                    not groups or rows + len(self._pending[0][0]) <= self.MAX_ROWS
                ):
                    group = self._pending.pop(0)
                    groups.append(group)
                    rows += len(group[0])
                await self._flush(groups)
        finally:
            self._task = None

    async def _flush(self, groups: list[_Group]) -> None:
        rows = [r for g, _ in groups for r in g]
        try:
            seqs = await self._write(rows)
        except ConflictError as exc:
            if len(groups) == 1:
                _resolve_error(groups[0][1], exc)
                return
            for one in groups:  # find whose event conflicts; the others go through
                await self._flush([one])
            return
        except BaseException as exc:
            for _, fut in groups:
                _resolve_error(fut, exc)
            if not isinstance(exc, Exception):
                raise
            return
        i = 0
        for group, fut in groups:
            if not fut.done():
                fut.set_result(seqs[i : i + len(group)])
            i += len(group)
        self._committed()


def _resolve_error(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        if isinstance(exc, Exception):
            fut.set_exception(exc)
        else:
            fut.cancel()
