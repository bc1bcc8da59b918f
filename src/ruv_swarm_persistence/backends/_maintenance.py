"""Maintenance a storage runs by itself while it is open: its retention policy.

A storage opened with a ``retention`` policy starts a :class:`RetentionLoop` once open and
stops it when it closes. The loop calls the storage's public ``apply_retention`` every
``policy.every``, so a pass takes the transaction gate like any call (it waits for an open
transaction, never joins one). A pass that fails is logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging

from ..errors import StorageError
from ..storage import Storage

__all__ = ["RetentionLoop"]

log = logging.getLogger(__name__)


class RetentionLoop:
    """The background task applying a storage's retention policy."""

    def __init__(self, storage: Storage, every_s: float) -> None:
        self._storage = storage
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None
        #: Passes that ran through.
        self.passes = 0

    @classmethod
    def start_for(cls, storage: Storage, every_s: float | None) -> RetentionLoop | None:
        """Start the loop for ``storage`` if it has a policy (``every_s``) and a running
        event loop; the loop, or ``None``."""
        if every_s is None:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # made outside any event loop: retention on request only
            return None
        self = cls(storage, every_s)
        # A context of its own: begun from inside a transaction, it must not join it.
        self._task = loop.create_task(self._run(), context=contextvars.Context())
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                removed = await self._storage.apply_retention()
            except StorageError as exc:
                if "closed" in str(exc):
                    return
                log.warning("retention pass failed (next in %ss): %s", self._every_s, exc)
                continue
            self.passes += 1
            log.debug("retention pass removed %s", removed)

    async def stop(self) -> None:
        """Stop the loop; a pass under way is one transaction, done whole or not at all."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
