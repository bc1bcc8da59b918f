"""The memory engine's tables: dictionaries, the task queue's heaps and an undo log.

Synchronous and unaware of the API: :mod:`.engine` runs the operations on them. While a
transaction is open every change goes through the undo-logged primitives, which a rollback
replays backwards; the queue's heaps and the key indexes are derived from the tasks and
rebuilt after a rollback.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any, Final

from ... import rules
from ...codec import Record
from ...errors import DatabaseError

__all__ = ["Tables", "read_only_error"]

_MISSING: Final = object()
PENDING = rules.PENDING


def read_only_error() -> DatabaseError:
    """The error of a write to a storage opened read-only."""
    return DatabaseError("the storage was opened read-only: every write is refused")


class Tables:
    """The tables, indexes and task queue; synchronous, with an optional undo log."""

    def __init__(self, *, read_only: bool = False) -> None:
        self.read_only = read_only
        self.agents: dict[str, Record] = {}
        self.tasks: dict[str, Record] = {}
        self.unfinished: dict[str, int] = {}  # task id -> dependencies not yet completed
        self.dependents: dict[str, list[str]] = {}  # task id -> ids of tasks depending on it
        self.events: list[Record] = []  # in sequence order
        self.event_ids: dict[str, Record] = {}
        self.events_by_agent: dict[str, list[Record]] = {}
        self.events_by_type: dict[str, list[Record]] = {}
        self.event_seq = 0
        self.messages: dict[str, Record] = {}
        self.metrics: dict[str, Record] = {}
        #: The record of maintenance (``Engine.retention_record``).
        self.meta: dict[str, int] = {}
        # Queue controls: key -> (max_running, rate_limit, rate_period_us), and the times of
        # the claims of each rate-limited key within its last period, oldest first.
        self.limits: dict[str, tuple[int | None, int | None, int | None]] = {}
        self.claim_log: dict[str, list[int]] = {}
        # Derived from the tasks (rebuilt after a rollback): who holds each dedup key, and
        # the held tasks of each concurrency key.
        self.dedup_holders: dict[str, str] = {}
        self.held_by_key: dict[str, set[str]] = {}
        self.schedules: dict[str, Record] = {}
        self.undo: list[Callable[[], None]] | None = None
        # Task queue: heaps with lazy deletion, rebuilt from the tables after a rollback.
        self.ready: dict[str, list[tuple[int, int, str]]] = {}  # type -> (-prio, created, id)
        self.delayed: list[tuple[int, str]] = []  # (run_after, id)
        self.leases: list[tuple[int, str]] = []  # (lease_expires_at, id)

    # --- undo-logged primitives ---------------------------------------------------------

    def put(self, table: dict[str, Any], key: str, value: Any) -> None:
        if self.read_only:
            raise read_only_error()
        if self.undo is not None:
            old = table.get(key, _MISSING)
            if old is _MISSING:
                self.undo.append(lambda: table.pop(key, None))
            else:
                self.undo.append(lambda: table.__setitem__(key, old))
        table[key] = value

    def drop(self, table: dict[str, Any], key: str) -> None:
        if self.read_only:
            raise read_only_error()
        if key not in table:
            return
        if self.undo is not None:
            old = table[key]
            self.undo.append(lambda: table.__setitem__(key, old))
        del table[key]

    def append(self, items: list[Any], value: Any) -> None:
        if self.read_only:
            raise read_only_error()
        if self.undo is not None:
            self.undo.append(items.pop)
        items.append(value)

    def set_attr(self, name: str, value: Any) -> None:
        if self.read_only:
            raise read_only_error()
        if self.undo is not None:
            old = getattr(self, name)
            self.undo.append(lambda: setattr(self, name, old))
        setattr(self, name, value)

    # --- task queue -----------------------------------------------------------------------

    def _queue(self, rec: Record) -> None:
        """Index a task record in the queue heaps it may need."""
        status = rec["status"]
        if status == PENDING and self.unfinished.get(rec["id"], 0) == 0:
            heap = self.ready.get(rec["task_type"])
            if heap is None:
                heap = self.ready[rec["task_type"]] = []
            heapq.heappush(heap, (-rec["priority"], rec["created_at"], rec["id"]))
        elif status in rules.ACTIVE and rec["lease_expires_at"] is not None:
            heapq.heappush(self.leases, (rec["lease_expires_at"], rec["id"]))

    def rebuild_queue(self) -> None:
        self.ready = {}
        self.delayed = []
        self.leases = []
        self.dedup_holders = {}
        self.held_by_key = {}
        for rec in self.tasks.values():
            self._queue(rec)
            self._index_keys(rec)

    def _index_keys(self, rec: Record) -> None:
        """Keep the dedup holders and the held tasks per concurrency key up to date."""
        status = rec["status"]
        dedup_key = rec["dedup_key"]
        if dedup_key is not None:
            if status in rules.UNFINISHED:
                self.dedup_holders[dedup_key] = rec["id"]
            elif self.dedup_holders.get(dedup_key) == rec["id"]:
                del self.dedup_holders[dedup_key]
        key = rec["concurrency_key"]
        if key is not None:
            held = self.held_by_key.get(key)
            if status in rules.ACTIVE:
                if held is None:
                    self.held_by_key[key] = {rec["id"]}
                else:
                    held.add(rec["id"])
            elif held is not None:
                held.discard(rec["id"])

    def set_task(self, rec: Record) -> None:
        self.put(self.tasks, rec["id"], rec)
        self._queue(rec)
        if rec["dedup_key"] is not None or rec["concurrency_key"] is not None:
            self._index_keys(rec)

    def drop_task(self, rec: Record) -> None:
        self.drop(self.tasks, rec["id"])
        self._index_keys({**rec, "status": rules.CANCELLED})

    def _valid_ready(self, entry: tuple[int, int, str]) -> Record | None:
        rec = self.tasks.get(entry[2])
        if (
            rec is None
            or rec["status"] != PENDING
            or self.unfinished.get(rec["id"], 0) != 0
            or -rec["priority"] != entry[0]
            or rec["created_at"] != entry[1]
        ):
            return None
        return rec

    def promote_delayed(self, now: int) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, task_id = heapq.heappop(delayed)
            rec = self.tasks.get(task_id)
            if rec is not None:
                self._queue(rec)

    def admits(self, key: str | None, now: int) -> bool:
        """Whether the limits of a task's concurrency key admit one more claim now."""
        if key is None:
            return True
        limit = self.limits.get(key)
        if limit is None:
            return True
        max_running, rate, period = limit
        held = len(self.held_by_key.get(key, ()))
        recent = 0
        if rate is not None and period is not None:
            recent = sum(1 for at in self.claim_log.get(key, ()) if at > now - period)
        return rules.claim_admitted(max_running, held, rate, recent)

    def note_claim(self, rec: Record, now: int) -> None:
        """Log a claim of a rate-limited key (older claims out of its window go)."""
        key = rec["concurrency_key"]
        limit = None if key is None else self.limits.get(key)
        if key is None or limit is None or limit[2] is None:
            return
        period = limit[2]
        recent = [at for at in self.claim_log.get(key, ()) if at > now - period]
        self.put(self.claim_log, key, [*recent, now])

    def rate_frees_at(self, key: str, now: int) -> int | None:
        """When a key blocked by its rate limit alone admits a claim again (else None)."""
        max_running, rate, period = self.limits[key]
        if max_running is not None and len(self.held_by_key.get(key, ())) >= max_running:
            return None
        if rate is None or period is None:
            return None
        recent = [at for at in self.claim_log.get(key, ()) if at > now - period]
        return rules.rate_frees_at(rate, period, recent)

    def pop_ready(self, types: Sequence[str] | None, now: int) -> Record | None:
        """Remove and return the best ready task of these types that its key's limits
        admit, or None."""
        self.promote_delayed(now)
        heaps = (
            list(self.ready.values())
            if types is None
            else [self.ready[t] for t in types if t in self.ready]
        )
        # Made only when a key's limits refuse a task: with no limits set (self.limits
        # empty) a claim pays nothing for the queue controls.
        skipped: list[tuple[list[tuple[int, int, str]], tuple[int, int, str]]] | None = None
        refused: set[str] | None = None
        try:
            while True:
                best: list[tuple[int, int, str]] | None = None
                for heap in heaps:
                    while heap and self._valid_ready(heap[0]) is None:
                        heapq.heappop(heap)
                    if heap and (best is None or heap[0] < best[0]):
                        best = heap
                if best is None:
                    return None
                entry = heapq.heappop(best)
                rec = self.tasks[entry[2]]
                run_after = rec["run_after"]
                if run_after is not None and run_after > now:
                    heapq.heappush(self.delayed, (run_after, rec["id"]))
                    continue
                key = rec["concurrency_key"]
                if (
                    key is not None
                    and self.limits
                    and ((refused is not None and key in refused) or not self.admits(key, now))
                ):
                    if refused is None or skipped is None:
                        refused, skipped = set(), []
                    refused.add(key)
                    skipped.append((best, entry))
                    continue
                return rec
        finally:
            if skipped is not None:
                for heap, entry in skipped:
                    heapq.heappush(heap, entry)

    def due_leases(self, now: int) -> list[Record]:
        out = []
        leases = self.leases
        while leases and leases[0][0] <= now:
            expires, task_id = heapq.heappop(leases)
            rec = self.tasks.get(task_id)
            if (
                rec is not None
                and rec["lease_expires_at"] == expires
                and rec["status"] in rules.ACTIVE
            ):
                out.append(rec)
        return out
