"""What each write does on SQLite: synchronous operations on the writer's connection.

Each operation runs inside a write transaction the writer (or a held transaction) opened,
and is atomic on its own: one statement, or several inside :func:`savepoint`. Expired
leases are requeued in a step of their own before the operation that noticed them, so the
requeue stays even when the operation then refuses the caller (as on the memory backend).

Every status change of a task goes through :meth:`SqliteOps.transition`, which applies the
rules of :mod:`ruv_swarm_persistence.rules`, keeps the dependency counts in step and flags a
task that became final (``ctx.finished``) for the waiters of ``wait_for_task``. The
claim is the one hot path folded into a single statement; its ``WHERE`` clause is the
readiness rule and its ``SET`` clause is :func:`rules.claim_changes`.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable, Sequence
from typing import Any, Final

import apsw

from ... import _json, rules
from ...codec import EventValues, Record
from ...errors import (
    ConflictError,
    NotFoundError,
    StorageError,
)
from ...retention import TABLES, RetentionPlan
from ...storage import PruneResult
from ..sql_common import TASK_COLUMNS, check_new_status, plan_cascade, plan_task_batch
from . import sql
from .errors import translate
from .writer import Outcome, WriteContext, savepoint

__all__ = ["METRIC_VALUES", "Row", "SqliteOps", "scalar", "task_state"]

log = logging.getLogger(__name__)

PENDING, COMPLETED = rules.PENDING, rules.COMPLETED
FAILED, CANCELLED = rules.FAILED, rules.CANCELLED
_CANCEL_COLUMNS = tuple(rules.cancel_changes("", 0))


def task_state(row: Sequence[Any]) -> Record:
    """A task row read with ``TASK_COLUMNS`` as a record (with ``unfinished_deps``)."""
    return dict(zip(TASK_COLUMNS, row, strict=True))


def scalar(conn: apsw.Connection, statement: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the one row a statement returns."""
    for row in conn.execute(statement, params):
        return row[0]
    raise StorageError(f"no row from {statement!r}")


def _ids_json(ids: Sequence[str]) -> str:
    return json.dumps(list(ids))


def _claim_order(rec: Record) -> tuple[int, int, str]:
    return (-rec["priority"], rec["created_at"], rec["id"])


#: A metric record's values in insert order, as one tuple (``itemgetter`` builds it in C).
METRIC_VALUES: Final = operator.itemgetter(*sql.METRIC_COLUMNS)

#: A row to insert: its columns in insert order, the id first (an event's without its
#: sequence, which SQLite assigns; see :func:`_insert_run`).
Row = tuple[Any, ...]


def _insert_run(
    conn: apsw.Connection, statement: str, rows: Sequence[Row], start: int, sequence: int | None
) -> tuple[int, BaseException | None]:
    """Insert ``rows[start:]`` in order until one fails: how many went in, and the error.

    A failing row is undone by SQLite alone (statement atomicity), so the rows before it
    stand. The rows get consecutive rowids (an ``INTEGER PRIMARY KEY`` left out is the
    largest plus one), so ``last_insert_rowid`` tells how many went in, whatever triggers a
    schema adds. Events (``sequence`` given) are numbered that way: the first row is
    written with ``sequence``, and SQLite numbers the rest on, which spares building a new
    tuple per row.
    """
    error: BaseException | None = None
    first = 0
    conn.set_last_insert_rowid(0)  # rowids start at 1: 0 means "none went in"
    try:
        if sequence is None:
            conn.execute(statement, rows[start])
        else:
            conn.execute(sql.INSERT_EVENT_AT, (*rows[start], sequence))
        first = conn.last_insert_rowid()
        if start + 1 < len(rows):
            conn.executemany(statement, rows[start + 1 :])
    except apsw.Error as exc:
        error = exc
    last: int = conn.last_insert_rowid()
    done = last - first + 1 if last else 0
    if error is None and done != len(rows) - start:
        raise StorageError(f"rowids out of step: {len(rows) - start} rows from {first} to {last}")
    return done, error


class SqliteOps:
    """The write operations, given the storage's clock and retry policy."""

    def __init__(self, now: Callable[[], int], policy: rules.RetryPolicy) -> None:
        self.now = now
        self.policy = policy

    # --- rows in bulk -------------------------------------------------------------------

    def _rows_in_bulk(
        self, ctx: WriteContext, statement: str, kind: str, rows: Sequence[Row], sequenced: bool
    ) -> list[Outcome]:
        """Insert rows of many callers; a failing row fails only its caller."""
        conn = ctx.conn
        seq: int | None = scalar(conn, sql.LAST_SEQUENCE) + 1 if sequenced else None
        out: list[Outcome] = []
        start, n = 0, len(rows)
        while start < n:
            done, exc = _insert_run(conn, statement, rows, start, seq)
            if seq is None:
                out.extend([(True, None)] * done)
            else:
                out.extend((True, s) for s in range(seq, seq + done))
                seq += done
            if exc is None:
                break
            start += done
            out.append((False, translate(exc, kind=kind, row_id=rows[start][0])))
            start += 1
            if not conn.in_transaction:
                # The whole batch is gone; the writer fails it. Write nothing outside it.
                out.extend([(False, out[-1][1])] * (n - start))
                break
        return out

    def event_rows(self, ctx: WriteContext, rows: list[EventValues]) -> list[Outcome]:
        """Insert single events of many callers together; each gets its sequence."""
        out = self._rows_in_bulk(ctx, sql.INSERT_EVENT, "event", rows, True)
        ctx.events = True
        return out

    def metric_rows(self, ctx: WriteContext, rows: list[Row]) -> list[Outcome]:
        """Insert single metrics of many callers together."""
        return self._rows_in_bulk(ctx, sql.INSERT_METRIC, "metric", rows, False)

    @staticmethod
    def _insert_all(
        conn: apsw.Connection, statement: str, kind: str, rows: Sequence[Row], seq: int | None
    ) -> None:
        """Insert every row or none (the caller holds a savepoint); events from ``seq`` on."""
        if rows:
            done, exc = _insert_run(conn, statement, rows, 0, seq)
            if exc is not None:
                raise translate(exc, kind=kind, row_id=rows[done][0]) from exc

    def store_events(self, ctx: WriteContext, rows: Sequence[EventValues]) -> list[int]:
        """Insert events atomically, in order; returns their sequences."""
        conn = ctx.conn
        first = scalar(conn, sql.LAST_SEQUENCE) + 1
        with savepoint(conn):
            self._insert_all(conn, sql.INSERT_EVENT, "event", rows, first)
        ctx.events = True
        return list(range(first, first + len(rows)))

    def store_metrics(self, ctx: WriteContext, rows: Sequence[Row]) -> None:
        """Insert metrics atomically."""
        with savepoint(ctx.conn):
            self._insert_all(ctx.conn, sql.INSERT_METRIC, "metric", rows, None)

    # --- agents ---------------------------------------------------------------------------

    @staticmethod
    def insert_agent(ctx: WriteContext, rec: Record) -> None:
        """Store a new agent (a duplicate id is a conflict, translated by the caller)."""
        ctx.conn.execute(sql.INSERT_AGENT, tuple(rec[c] for c in sql.AGENT_COLUMNS))

    @staticmethod
    def update_agent(ctx: WriteContext, rec: Record) -> None:
        """Replace a stored agent."""
        conn = ctx.conn
        conn.execute(sql.UPDATE_AGENT, (*(rec[c] for c in sql.AGENT_COLUMNS[1:]), rec["id"]))
        if conn.changes() == 0:
            raise NotFoundError("agent", rec["id"])

    def heartbeat(self, ctx: WriteContext, agent_id: str, stamp: int | None) -> None:
        """Stamp an agent's heartbeat (now, or ``stamp``)."""
        conn = ctx.conn
        now = self.now()
        conn.execute(sql.HEARTBEAT, (now if stamp is None else stamp, now, agent_id))
        if conn.changes() == 0:
            raise NotFoundError("agent", agent_id)

    def delete_agent(self, ctx: WriteContext, agent_id: str) -> None:
        """Delete an agent, its mailbox, and release the tasks it held."""
        conn = ctx.conn
        with savepoint(conn):
            conn.execute(sql.DELETE_AGENT, (agent_id,))
            if conn.changes() == 0:
                return
            conn.execute(sql.DELETE_MAILBOX, (agent_id, agent_id))
            now = self.now()
            for row in conn.execute(sql.TASKS_NAMING_AGENT, (agent_id,)).fetchall():
                rec = task_state(row)
                if rec["status"] in rules.ACTIVE:
                    rec = self.fail_attempt(ctx, rec, rules.released_error(agent_id), now)
                    ctx.tasks = True
                if rec["assigned_to"] is not None:
                    conn.execute(sql.CLEAR_ASSIGNEE, (rec["id"],))

    def reap_stale_agents(self, ctx: WriteContext, cutoff: int, now: int) -> list[Record]:
        """Mark stale agents ``error`` and requeue the tasks they held; returns them."""
        conn = ctx.conn
        reaped: list[Record] = []
        with savepoint(conn):
            stale = [str(r[0]) for r in conn.execute(sql.STALE_AGENTS, (cutoff,)).fetchall()]
            for agent_id in stale:
                for row in conn.execute(sql.MARK_AGENT_ERROR, (now, agent_id)):
                    reaped.append(dict(zip(sql.AGENT_COLUMNS, row, strict=True)))
                for trow in conn.execute(sql.TASKS_NAMING_AGENT, (agent_id,)).fetchall():
                    rec = task_state(trow)
                    if rec["status"] in rules.ACTIVE:
                        self.fail_attempt(ctx, rec, rules.released_error(agent_id), now)
                        ctx.tasks = True
        return reaped

    # --- the transition routine -----------------------------------------------------------

    def transition(
        self,
        ctx: WriteContext,
        old: Record,
        changes: dict[str, Any],
        now: int,
        cancelled: list[str] | None = None,
        *,
        retry: bool = False,
    ) -> Record:
        """Every status change goes through here: legality, dependents, cascades.

        ``old`` is the stored state (with ``unfinished_deps``); the changes are written and
        the new state returned. ``cancelled`` collects the ids this change cancelled;
        ``retry`` allows requeueing a dead letter (``rules.RETRY``).
        """
        conn = ctx.conn
        new = {**old, **changes}
        check_new_status(old, new, retry=retry)
        columns = tuple(changes)
        conn.execute(sql.task_update(columns), (*(new[c] for c in columns), old["id"]))
        old_status, new_status = old["status"], new["status"]
        if new_status == old_status:
            return new
        if new_status in rules.TERMINAL:
            # The cascade below happens only under a final task: this covers it too.
            ctx.finished = True
        # On COMPLETED the schema's trigger has counted the dependents down already.
        if new_status in (FAILED, CANCELLED):
            if new_status == CANCELLED and cancelled is not None:
                cancelled.append(old["id"])
            self._cascade(conn, old["id"], new_status, now, cancelled)
        return new

    def _cascade(
        self,
        conn: apsw.Connection,
        root_id: str,
        root_status: str,
        now: int,
        cancelled: list[str] | None,
    ) -> None:
        edges: list[tuple[Any, ...]] = conn.execute(sql.DEPENDENT_EDGES, (root_id,)).fetchall()
        if not edges:
            return
        edges.sort()  # by rowid: each task's dependents in the order they were recorded
        dependents: dict[str, list[str]] = {}
        for _rowid, parent, child in edges:
            dependents.setdefault(parent, []).append(child)
        children = list({child for _, _, child in edges})
        tasks = {
            rec["id"]: rec
            for rec in map(task_state, conn.execute(sql.TASK_STATES, (_ids_json(children),)))
        }
        status = {task_id: rec["status"] for task_id, rec in tasks.items()}
        update = sql.task_update(_CANCEL_COLUMNS)
        for new in plan_cascade(root_id, root_status, dependents, status, tasks, now):
            conn.execute(update, (*(new[c] for c in _CANCEL_COLUMNS), new["id"]))
            if cancelled is not None:
                cancelled.append(new["id"])

    def fail_attempt(self, ctx: WriteContext, rec: Record, error: str, now: int) -> Record:
        """A failed attempt: retry after backoff, or fail for good (and cancel dependents)."""
        changes = rules.failure_changes(
            rec["retry_count"], rec["max_retries"], error, now, self.policy
        )
        return self.transition(ctx, rec, changes, now)

    def expire_leases(self, ctx: WriteContext, now: int) -> None:
        """Requeue (or fail) every held task whose lease has run out."""
        conn = ctx.conn
        if conn.execute(sql.ANY_EXPIRED, (now,)).fetchone() is None:
            return
        rows = conn.execute(sql.EXPIRED_LEASES, (now,)).fetchall()
        if not rows:
            return
        ctx.tasks = True
        with savepoint(conn):
            for row in rows:
                rec = task_state(row)
                log.info("lease of task %s held by %s expired", rec["id"], rec["assigned_to"])
                self.fail_attempt(ctx, rec, rules.lease_error(rec["assigned_to"]), now)

    @staticmethod
    def _state(conn: apsw.Connection, task_id: str) -> Record | None:
        row = conn.execute(sql.GET_TASK_STATE, (task_id,)).fetchone()
        return None if row is None else task_state(row)

    def _held(self, ctx: WriteContext, task_id: str, agent_id: str, now: int) -> Record:
        conn = ctx.conn
        self.expire_leases(ctx, now)
        rec = self._state(conn, task_id)
        if rec is None:
            raise NotFoundError("task", task_id)
        if (lost := rules.not_held(task_id, agent_id, rec)) is not None:
            raise lost
        return rec

    # --- tasks ----------------------------------------------------------------------------

    def store_tasks(
        self, ctx: WriteContext, recs: Sequence[Record], raise_on_duplicate: bool
    ) -> list[str]:
        """Store tasks atomically, those whose dedup key is held left out (see
        ``rules.dedup_batch``); the id of each."""
        ids = [r["id"] for r in recs]
        keys = [r["dedup_key"] for r in recs if r["dedup_key"] is not None]
        if keys:
            # Under the writer's lock: no other process stores a task between this look
            # and the insert.
            rows: list[Any] = ctx.conn.execute(sql.DEDUP_HOLDERS, (_ids_json(keys),)).fetchall()
            taken: dict[str, str] = {row[0]: row[1] for row in rows}
            recs, ids = rules.dedup_batch(recs, taken, raise_on_duplicate)
            if not recs:
                return ids
        if len(recs) == 1 and recs[0]["dependencies"] == "[]":
            self._store_lone_task(ctx, recs[0])
        else:
            self._store_batch(ctx, recs)
        return ids

    def _store_batch(self, ctx: WriteContext, recs: Sequence[Record]) -> None:
        """Store tasks atomically; dependencies first, counts of unfinished ones set."""
        conn = ctx.conn
        ids = [r["id"] for r in recs]
        batch = set(ids)
        existing = [row[0] for row in conn.execute(sql.EXISTING_TASKS, (_ids_json(ids),))]
        outside = sorted({d for r in recs for d in _json.loads(r["dependencies"])} - batch)
        stored_status: dict[str, str] = {}
        if outside:
            for task_id, status in conn.execute(sql.TASK_STATUSES, (_ids_json(outside),)):
                stored_status[task_id] = status
        planned = plan_task_batch(recs, existing, stored_status, self.now())
        task_rows = [
            (*(p.record[c] for c in sql.PUBLIC_TASK_COLUMNS), p.unfinished) for p in planned
        ]
        edges = [(p.record["id"], d) for p in planned for d in p.dependencies]
        with savepoint(conn):
            conn.executemany(sql.INSERT_TASK, task_rows)
            if edges:
                conn.executemany(sql.INSERT_DEPENDENCY, edges)
        ctx.tasks = True

    def _store_lone_task(self, ctx: WriteContext, rec: Record) -> None:
        """One task without dependencies: one INSERT, no reads first, no savepoint.

        A failing INSERT is undone by SQLite alone, and a taken id is the primary key's
        violation; the batch's other checks need no reads for a task without dependencies.
        """
        (planned,) = plan_task_batch([rec], (), {}, self.now())
        row = (*(planned.record[c] for c in sql.PUBLIC_TASK_COLUMNS), 0)
        try:
            ctx.conn.execute(sql.INSERT_TASK, row)
        except apsw.ConstraintError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise ConflictError("task", rec["id"]) from exc
            raise
        ctx.tasks = True

    def update_task(self, ctx: WriteContext, rec: Record) -> None:
        """Replace a stored task through the transition routine."""
        conn = ctx.conn
        old = self._state(conn, rec["id"])
        if old is None:
            raise NotFoundError("task", rec["id"])
        changes, now = rules.update_changes(old, rec), self.now()
        key = old["concurrency_key"]
        claims = key is not None and rules.update_claims(old["status"], changes["status"])
        if claims and not conn.execute(sql.KEY_ADMITS, (now, old["id"])).fetchall()[0][0]:
            raise rules.limit_reached(old["id"], key)
        with savepoint(conn):
            self.transition(ctx, old, changes, now)
            if claims:
                self._log_claim(conn, key, now)
        ctx.tasks = True

    def delete_task(self, ctx: WriteContext, task_id: str) -> None:
        """Delete a task nothing depends on (its own dependency edges go with it)."""
        conn = ctx.conn
        if conn.execute(sql.HAS_DEPENDENTS, (task_id,)).fetchone() is not None:
            raise ConflictError("task", task_id, "has dependent tasks and cannot be deleted")
        conn.execute(sql.DELETE_TASK, (task_id,))
        if conn.changes():
            ctx.finished = True  # a waiter for it learns that it never will finish

    def claim_task(self, ctx: WriteContext, task_id: str, agent_id: str, lease_us: int) -> bool:
        """Claim this task if it is ready."""
        conn = ctx.conn
        now = self.now()
        self.expire_leases(ctx, now)
        changes = rules.claim_changes(agent_id, now, lease_us)
        row = conn.execute(sql.CLAIM_TASK, (*changes.values(), task_id, now, now)).fetchone()
        if row is None:
            return False
        if row[1]:
            self._log_claim(conn, row[0], now)
        return True

    @staticmethod
    def _log_claim(conn: apsw.Connection, key: str, now: int) -> None:
        """Count a claim against its key's rate limit."""
        conn.execute(sql.LOG_CLAIM, (now, key))
        conn.execute(sql.FORGET_OLD_CLAIMS, (key, now))

    @staticmethod
    def set_queue_limit(
        ctx: WriteContext, key: str, kind: str, limit: int | None, period_us: int | None
    ) -> None:
        """Set or remove one of a key's limits (a key left without any loses its row)."""
        conn = ctx.conn
        if kind == "concurrency":
            conn.execute(sql.SET_CONCURRENCY_LIMIT, (key, limit))
        else:
            conn.execute(sql.SET_RATE_LIMIT, (key, limit, period_us))
            if limit is None:
                conn.execute(sql.FORGET_CLAIMS, (key,))
        conn.execute(sql.DROP_EMPTY_LIMIT, (key,))
        ctx.tasks = True  # a raised limit may let waiting tasks be claimed

    def claim_next_task(
        self, ctx: WriteContext, agent_id: str, types: list[str] | None, lease_us: int
    ) -> Record | None:
        """Claim the best ready task (of these types) in one statement; its record, or None."""
        conn = ctx.conn
        now = self.now()
        self.expire_leases(ctx, now)
        if types is not None and not types:
            return None
        params: list[Any] = list(rules.claim_changes(agent_id, now, lease_us).values())
        if types is None:
            params += (now, now)
        else:
            for t in types:
                params += (now, t, now)
        row = conn.execute(sql.claim_next(None if types is None else len(types)), params).fetchone()
        if row is None:
            return None
        *columns, rate_limited = row
        rec = dict(zip(sql.PUBLIC_TASK_COLUMNS, columns, strict=True))
        if rate_limited:
            self._log_claim(conn, rec["concurrency_key"], now)
        return rec

    def claim_next_tasks(
        self, ctx: WriteContext, agent_id: str, types: list[str] | None, lease_us: int, n: int
    ) -> list[Record]:
        """Claim up to ``n`` of the best ready tasks (of these types); their records, in
        claim order. One statement while no key has limits; else one claim after another,
        each counting the ones before it against its key's limits."""
        conn = ctx.conn
        now = self.now()
        self.expire_leases(ctx, now)
        if types is not None and not types:
            return []
        if conn.execute(sql.ANY_QUEUE_LIMIT).fetchone() is not None:
            out: list[Record] = []
            while len(out) < n and (rec := self.claim_next_task(ctx, agent_id, types, lease_us)):
                out.append(rec)
            return out
        params: list[Any] = list(rules.claim_changes(agent_id, now, lease_us).values())
        if types is None:
            params += (now, n)
        else:
            for t in types:
                params += (now, t, n)
            params.append(n)
        statement = sql.claim_batch(None if types is None else len(types))
        recs = [
            dict(zip(sql.PUBLIC_TASK_COLUMNS, row, strict=True))
            for row in conn.execute(statement, params)
        ]
        recs.sort(key=_claim_order)
        return recs

    def start_task(self, ctx: WriteContext, task_id: str, agent_id: str) -> Record:
        """Mark a held task running."""
        now = self.now()
        rec = self._held(ctx, task_id, agent_id, now)
        return self.transition(ctx, rec, rules.start_changes(now), now)

    def complete_task(
        self, ctx: WriteContext, task_id: str, agent_id: str, result: str | None
    ) -> Record:
        """Complete a held task (one statement; the trigger counts its dependents down)."""
        now = self.now()
        rec = self._held(ctx, task_id, agent_id, now)
        new = self.transition(ctx, rec, rules.complete_changes(result, now), now)
        ctx.tasks = True
        return new

    def complete_tasks(
        self, ctx: WriteContext, agent_id: str, pairs: Sequence[tuple[str, str | None]]
    ) -> list[Record]:
        """Complete held tasks, all or none (each checked before any is written)."""
        conn = ctx.conn
        now = self.now()
        self.expire_leases(ctx, now)
        ids = [task_id for task_id, _ in pairs]
        states = {
            rec["id"]: rec
            for rec in map(task_state, conn.execute(sql.TASK_STATES, (_ids_json(ids),)))
        }
        held: list[Record] = []
        for task_id in ids:
            rec = states.get(task_id)
            if rec is None:
                raise NotFoundError("task", task_id)
            if (lost := rules.not_held(task_id, agent_id, rec)) is not None:
                raise lost
            held.append(rec)
        with savepoint(conn):
            out = [
                self.transition(ctx, rec, rules.complete_changes(result, now), now)
                for rec, (_, result) in zip(held, pairs, strict=True)
            ]
        ctx.tasks = True
        return out

    def fail_task(self, ctx: WriteContext, task_id: str, agent_id: str, error: str) -> Record:
        """Record a failed attempt of a held task."""
        conn = ctx.conn
        now = self.now()
        rec = self._held(ctx, task_id, agent_id, now)
        with savepoint(conn):
            new = self.fail_attempt(ctx, rec, error, now)
        ctx.tasks = True
        return new

    def heartbeat_task(
        self, ctx: WriteContext, task_id: str, agent_id: str, lease_us: int
    ) -> Record:
        """Extend the lease of a held task."""
        now = self.now()
        rec = self._held(ctx, task_id, agent_id, now)
        changes = {"lease_expires_at": now + lease_us, "updated_at": now}
        return self.transition(ctx, rec, changes, now)

    def release_task(self, ctx: WriteContext, task_id: str, agent_id: str) -> Record:
        """Give back a held task: pending and claimable at once, not a failed attempt."""
        now = self.now()
        rec = self._held(ctx, task_id, agent_id, now)
        new = self.transition(ctx, rec, rules.release_changes(now), now)
        ctx.tasks = True
        return new

    def cancel_task(self, ctx: WriteContext, task_id: str, reason: str | None) -> list[str]:
        """Cancel a task and its unfinished dependents; their ids in the order stored."""
        conn = ctx.conn
        now = self.now()
        self.expire_leases(ctx, now)
        rec = self._state(conn, task_id)
        if rec is None:
            raise NotFoundError("task", task_id)
        if rec["status"] == CANCELLED:
            return []
        cancelled: list[str] = []
        with savepoint(conn):
            self.transition(ctx, rec, rules.cancel_changes(reason, now), now, cancelled)
        if len(cancelled) < 2:
            return cancelled
        return [r[0] for r in conn.execute(sql.TASK_ROWIDS, (_ids_json(cancelled),))]

    def retry_tasks(
        self, ctx: WriteContext, task_ids: list[str] | None, task_type: str | None
    ) -> list[Record]:
        """Requeue dead letters: these (all or none), or every one (of a type) that can run."""
        conn = ctx.conn
        now = self.now()

        def dead_dependency(task_id: str) -> tuple[str, str] | None:
            row = conn.execute(sql.DEAD_DEPENDENCY, (task_id,)).fetchone()
            return None if row is None else (row[0], row[1])

        if task_ids is None:
            failed = (
                conn.execute(sql.FAILED_TASK_STATES)
                if task_type is None
                else conn.execute(sql.FAILED_TASK_STATES_OF_TYPE, (task_type,))
            )
            chosen = [rec for rec in map(task_state, failed) if dead_dependency(rec["id"]) is None]
        else:
            chosen = []
            for task_id in dict.fromkeys(task_ids):  # once each, as asked
                rec = self._state(conn, task_id)
                if rec is None:
                    raise NotFoundError("task", task_id)
                rules.check_retry(task_id, rec["status"], dead_dependency(task_id))
                chosen.append(rec)
        keys = [r["dedup_key"] for r in chosen if r["dedup_key"] is not None]
        if keys:
            rows: list[Any] = conn.execute(sql.DEDUP_HOLDERS, (_ids_json(keys),)).fetchall()
            taken = {row[0]: row[1] for row in rows}
            chosen = rules.retries_of_free_keys(chosen, taken, task_ids is not None)
        changes = rules.retry_changes(now)
        with savepoint(conn):
            out = [self.transition(ctx, rec, changes, now, retry=True) for rec in chosen]
        if out:
            ctx.tasks = True
        return [{c: rec[c] for c in sql.PUBLIC_TASK_COLUMNS} for rec in out]

    def fire_schedule(
        self,
        ctx: WriteContext,
        name: str,
        expected_due: int,
        next_due: int,
        due: int | None,
        task: Record | None,
        now: int,
    ) -> bool:
        """Move a due schedule on and store its task, atomically; whether it was still due."""
        conn = ctx.conn
        with savepoint(conn):
            conn.execute(sql.FIRE_SCHEDULE, (next_due, due, now, name, expected_due))
            if conn.changes() == 0:
                return False
            if task is not None:
                self.store_tasks(ctx, [task], True)
        return True

    # --- messages -------------------------------------------------------------------------

    @staticmethod
    def insert_message(ctx: WriteContext, rec: Record) -> None:
        """Store a message and wake its recipient's waiters after COMMIT."""
        ctx.conn.execute(sql.INSERT_MESSAGE, tuple(rec[c] for c in sql.MESSAGE_COLUMNS))
        ctx.mail.add(rec["to_agent"])

    @staticmethod
    def delete_message(ctx: WriteContext, message_id: str) -> None:
        """Delete a message (idempotent)."""
        ctx.conn.execute(sql.DELETE_MESSAGE, (message_id,))

    def mark_message_read(self, ctx: WriteContext, message_id: str) -> Record:
        """Record a read receipt (the first read time stays); the message's record."""
        conn = ctx.conn
        row: tuple[Any, ...] | None = conn.execute(
            sql.MARK_READ, (self.now(), message_id)
        ).fetchone()
        if row is None:
            row = conn.execute(sql.GET_MESSAGE, (message_id,)).fetchone()
            if row is None:
                raise NotFoundError("message", message_id)
        return dict(zip(sql.MESSAGE_COLUMNS, row, strict=True))

    # --- retention --------------------------------------------------------------------------

    @staticmethod
    def prune(
        conn: apsw.Connection,
        events_before: int | None,
        metrics_before: int | None,
        read_messages_before: int | None,
    ) -> PruneResult:
        """Delete old history inside the open transaction; how many rows went."""
        result = PruneResult()
        if events_before is not None:
            # Sequences must never be handed out again, even once every event is pruned.
            conn.execute(sql.REMEMBER_SEQUENCE, conn.execute(sql.MAX_SEQUENCE).fetchone())
            conn.execute(sql.PRUNE_EVENTS, (events_before,))
            result.events = conn.changes()
        if metrics_before is not None:
            conn.execute(sql.PRUNE_METRICS, (metrics_before,))
            result.metrics = conn.changes()
        if read_messages_before is not None:
            conn.execute(sql.PRUNE_MESSAGES, (read_messages_before,))
            result.messages = conn.changes()
        return result

    @staticmethod
    def retain(conn: apsw.Connection, plan: RetentionPlan) -> PruneResult:
        """A retention pass inside the open transaction, added to the record in swarm_meta."""
        result = PruneResult()

        def threshold(statement: str, keep: int | None) -> tuple[Any, ...] | None:
            if keep is None:
                return None
            row = conn.execute(statement, (keep,)).fetchone()
            return None if row is None else tuple(row)

        if (cut := plan.events) is not None:
            conn.execute(sql.REMEMBER_SEQUENCE, conn.execute(sql.MAX_SEQUENCE).fetchone())
            seq = threshold(sql.EVENT_KEEP_THRESHOLD, cut.keep)
            conn.execute(sql.RETAIN_EVENTS, (cut.before, None if seq is None else seq[0]))
            result.events = conn.changes()
        if (cut := plan.metrics) is not None:
            bound = cut.bound(threshold(sql.METRIC_KEEP_THRESHOLD, cut.keep))
            conn.execute(sql.RETAIN_METRICS, bound)
            result.metrics = conn.changes()
        if (cut := plan.messages) is not None:
            bound = cut.bound(threshold(sql.MESSAGE_KEEP_THRESHOLD, cut.keep))
            conn.execute(sql.RETAIN_MESSAGES, bound)
            result.messages = conn.changes()
        if (cut := plan.tasks) is not None:
            bound = cut.bound(threshold(sql.TASK_KEEP_THRESHOLD, cut.keep))
            ids = [r[0] for r in conn.execute(sql.RETAINED_TASKS, bound)]
            if ids:
                conn.execute(sql.DELETE_EDGES_TO, (_ids_json(ids),))
                conn.execute(sql.DELETE_TASKS, (_ids_json(ids),))
            result.tasks = len(ids)
        conn.execute(sql.SET_IN_RECORD, ("retention.ran_at", plan.now))
        for table in TABLES:
            conn.execute(sql.ADD_TO_RECORD, (f"retention.{table}", getattr(result, table)))
        return result
