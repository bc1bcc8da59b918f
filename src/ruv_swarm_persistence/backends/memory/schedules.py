"""Schedules on the memory engine's tables (see :mod:`ruv_swarm_persistence.schedules`).

:class:`MemorySchedules` is a base of the memory engine. Every change goes through the
tables' undo-logged primitives, so it rolls back with a
transaction; the browser engine writes them through to IndexedDB as it does tasks.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...codec import Record
from ...errors import ConflictError

__all__ = ["MemorySchedules"]


class _Tables(Protocol):
    schedules: dict[str, Record]

    def put(self, table: dict[str, Any], key: str, value: Any) -> None: ...

    def drop(self, table: dict[str, Any], key: str) -> None: ...


def put_schedule(t: _Tables, rec: Record) -> Record:
    """Store or redefine a schedule (``Engine.put_schedule``); the stored record."""
    old = t.schedules.get(rec["name"])
    if old is not None:
        kept: tuple[str, ...] = ("paused", "last_due", "created_at")
        if (old["spec"], old["timezone"]) == (rec["spec"], rec["timezone"]):
            kept += ("next_due",)
        rec = {**rec, **{k: old[k] for k in kept}}
    t.put(t.schedules, rec["name"], rec)
    return rec


def set_paused(
    t: _Tables, name: str, paused: bool, next_due: int | None, now: int
) -> Record | None:
    """Pause or resume a schedule; ``None`` if unknown."""
    old = t.schedules.get(name)
    if old is None:
        return None
    rec = {**old, "paused": int(paused), "updated_at": now}
    if next_due is not None:
        rec["next_due"] = next_due
    t.put(t.schedules, name, rec)
    return rec


def due_to_fire(t: _Tables, name: str, expected_due: int) -> Record | None:
    """The schedule, if a pass may still fire it at ``expected_due`` (none did first)."""
    old = t.schedules.get(name)
    if old is None or old["paused"] or old["next_due"] != expected_due:
        return None
    return old


def fired(t: _Tables, old: Record, next_due: int, due: int | None, now: int) -> None:
    """Move a fired schedule on to its next due time."""
    rec = {**old, "next_due": next_due, "updated_at": now}
    if due is not None:
        rec["last_due"] = due
    t.put(t.schedules, old["name"], rec)


class MemorySchedules:
    """The schedule operations of the memory engine (a base of ``MemoryEngine``)."""

    def _schedule_tables(self) -> _Tables:
        raise NotImplementedError

    async def _insert_at_once(self, tx: Any, rec: Record) -> None:
        """Store a task without awaiting anything else (or raise, having changed nothing)."""
        raise NotImplementedError

    async def put_schedule(self, tx: Any, rec: Record) -> Record:
        return put_schedule(self._schedule_tables(), rec)

    async def restore_schedule(self, tx: Any, rec: Record) -> None:
        t = self._schedule_tables()
        if rec["name"] in t.schedules:
            raise ConflictError("schedule", rec["name"])
        t.put(t.schedules, rec["name"], rec)

    async def get_schedule(self, tx: Any, name: str) -> Record | None:
        return self._schedule_tables().schedules.get(name)

    async def list_schedules(self, tx: Any) -> list[Record]:
        return [v for _, v in sorted(self._schedule_tables().schedules.items())]

    async def delete_schedule(self, tx: Any, name: str) -> None:
        t = self._schedule_tables()
        t.drop(t.schedules, name)

    async def set_schedule_paused(
        self, tx: Any, name: str, paused: bool, next_due: int | None, now: int
    ) -> Record | None:
        return set_paused(self._schedule_tables(), name, paused, next_due, now)

    async def fire_schedule(
        self,
        tx: Any,
        name: str,
        expected_due: int,
        next_due: int,
        due: int | None,
        task: Record | None,
        now: int,
    ) -> bool:
        t = self._schedule_tables()
        old = due_to_fire(t, name, expected_due)
        if old is None:
            return False
        if task is not None:
            await self._insert_at_once(tx, task)
        fired(t, old, next_due, due, now)
        return True
