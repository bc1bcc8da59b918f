"""What each operation does on PostgreSQL, given a connection.

The functions here run inside whatever transaction the caller opened: a write of its own
(:meth:`.runner.Runner.write`), a savepoint of a held transaction
(:meth:`.transaction.PostgresTransaction._run_write`), or none for the statements that commit
by themselves. They do not retry, gate or decode: the engine (:mod:`.engine`) runs them
under a retry policy, the front gates and decodes.

Every status change of a task goes through :meth:`PostgresOps.transition`, built on
:mod:`ruv_swarm_persistence.rules`, so dependency counts and leases never drift. Writes
requeue expired leases first, as the memory backend does. The hot paths (the claims, the
completion) are folded into single statements (``*_FAST`` in :mod:`.sql`) that refuse to run
while a lease has expired; the caller then runs the full operation here, which expires the
leases first.

A write records what waiters care about in an :class:`Effects`; :func:`perform` sends its
notifications in the same transaction, and the engine wakes this process's waiters after the
commit. :class:`Keep` lets a write commit what it did and still refuse the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, TypeVar, cast

import asyncpg

from ... import _json, codec, rules
from ..._time import from_us
from ...codec import EventValues, Record
from ...errors import (
    ConflictError,
    MigrationError,
    NotFoundError,
    StorageError,
)
from ...migrations import AppliedMigration, Migration
from ...models import MessageModel, TaskModel
from ...retention import TABLES, RetentionPlan
from ...storage import PruneResult
from ..sql_common import check_new_status, plan_cascade, plan_task_batch, row_record
from . import sql
from .runner import Conn

__all__ = [
    "COPY_ROWS",
    "MIGRATION_LOCK_KEY",
    "Effects",
    "Keep",
    "PostgresOps",
    "agent_args",
    "append_events",
    "applied_migrations",
    "apply_migration",
    "columns",
    "copy_row",
    "decode",
    "find_schema",
    "jsonb_text",
    "message",
    "migration_lock_args",
    "opt_jsonb",
    "perform",
    "revert_migration",
    "task",
    "task_model",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

PENDING, COMPLETED = rules.PENDING, rules.COMPLETED
FAILED, CANCELLED = rules.FAILED, rules.CANCELLED

#: First key of the two-key advisory lock that serializes migrations (the second is the
#: schema's CRC-32, so swarms in different schemas migrate independently).
MIGRATION_LOCK_KEY: Final = 0x53574D47
#: Event batches at least this large are written with COPY rather than one INSERT.
COPY_ROWS: Final = 1000


# --- JSON into jsonb ---------------------------------------------------------------------------

_POSITIVE_EXPONENT = re.compile(r"\d[eE]\+?\d")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?[eE][+-]?\d+')


def _plain_number(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"' or "-" in token.lower().partition("e")[2]:
        return token
    text = format(Decimal(token), "f")
    return text if "." in text else text + ".0"


def jsonb_text(text: str) -> str:
    """JSON text that comes back out of ``jsonb`` as the same values.

    ``jsonb`` stores numbers as ``numeric`` and prints them without exponent, so the float
    ``1e+16`` would come back as the integer ``10000000000000000``. Writing such floats as
    plain decimals with a fractional part (``10000000000000000.0``) keeps them floats.
    """
    if _POSITIVE_EXPONENT.search(text) is None:
        return text
    return _JSON_TOKEN.sub(_plain_number, text)


def opt_jsonb(text: str | None) -> str | None:
    return None if text is None else jsonb_text(text)


# --- records and rows --------------------------------------------------------------------------


def task(row: Any) -> Record:
    """A task row (``sql.TASK_COLS``) as a record."""
    return row_record(sql.TASK_COLS, row)


def decode(table: str, columns: tuple[str, ...], row: Any) -> Any:
    """The model of a row read in ``columns`` order."""
    return codec.decode(table, row_record(columns, row))


def task_model(rec: Record) -> TaskModel:
    return cast(TaskModel, codec.decode("tasks", rec))


def message(row: Any) -> MessageModel:
    return cast(MessageModel, decode("messages", sql.MESSAGE_COLS, row))


#: The columns each statement binds, in parameter order.
_TASK_UPDATE_ARGS: Final = tuple(
    c for c in codec.COLUMNS["tasks"] if c not in ("dependencies", "dedup_key", "concurrency_key")
)
_JSON_COLUMNS: Final = frozenset(
    {"capabilities", "metadata", "payload", "result", "dependencies", "content", "tags"}
)


def _args(names: Sequence[str], r: Record) -> tuple[Any, ...]:
    """A record's values for ``names``, JSON made safe for ``jsonb``."""
    return tuple(opt_jsonb(r[c]) if c in _JSON_COLUMNS else r[c] for c in names)


def agent_args(r: Record) -> tuple[Any, ...]:
    return _args(sql.AGENT_COLS, r)


def _task_update_args(r: Record) -> tuple[Any, ...]:
    return _args(_TASK_UPDATE_ARGS, r)


def columns(recs: Sequence[Record], names: Sequence[str]) -> list[list[Any]]:
    """The records' values column by column (for statements that ``unnest`` arrays)."""
    return [[r[n] for r in recs] for n in names]


def copy_row(sequence: int, row: EventValues) -> tuple[Any, ...]:
    """An event's row for ``COPY``, in ``sql.EVENT_COPY_COLUMNS`` order."""
    id_, event_type, agent_id, task_id, payload, metadata, timestamp = row
    return (
        sequence,
        id_,
        event_type,
        agent_id,
        task_id,
        jsonb_text(payload),
        jsonb_text(metadata),
        timestamp,
    )


# --- effects of a write ------------------------------------------------------------------------


class Keep(Exception):
    """Raised inside a write to commit what it did, then raise ``error`` to the caller.

    A late worker's ``complete_task`` first requeues the expired leases (its own included)
    and then learns it lost the task: the requeue stays, as on every backend.
    """

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(slots=True)
class Effects:
    """What a write changed that waiters care about: notified at commit."""

    events: bool = False
    #: A task may have become ready ("t").
    tasks: bool = False
    mail: set[str] = field(default_factory=set)
    #: A task became completed, failed or cancelled, or was deleted ("f").
    finished: bool = False

    def notes(self) -> list[str]:
        out = [f"m:{a}" for a in sorted(self.mail)]
        if self.events:
            out.append("e")
        if self.tasks:
            out.append("t")
        if self.finished:
            out.append("f")
        return out

    def merge(self, other: Effects) -> None:
        self.events |= other.events
        self.tasks |= other.tasks
        self.mail |= other.mail
        self.finished |= other.finished


#: A write: given the connection and the effects to record, its result.
Op = Callable[[Conn, Effects], Awaitable[T]]


async def perform(
    conn: Conn, op: Op[T], channel: str
) -> tuple[T | None, StorageError | None, Effects]:
    """Run a write and send its notifications, in the caller's transaction.

    Returns its result, the error a :class:`Keep` deferred until after the commit (then
    the result is ``None``), and its effects, for the caller to wake waiters with.
    """
    fx = Effects()
    result: T | None = None
    deferred: StorageError | None = None
    try:
        result = await op(conn, fx)
    except Keep as keep:
        deferred = keep.error
    keys = fx.notes()
    if keys:
        await conn.execute(sql.NOTIFY, channel, keys)
    return result, deferred, fx


# --- migrations --------------------------------------------------------------------------------


def migration_lock_args(schema: str) -> tuple[int, int]:
    """The advisory lock's two keys for ``schema`` (signed 32-bit integers)."""
    crc = zlib.crc32(schema.encode())
    return MIGRATION_LOCK_KEY, crc - (1 << 32) if crc >= 1 << 31 else crc


async def _prepare_schema(conn: Conn, schema: str) -> None:
    """Create the schema and ``schema_migrations`` under the migration lock, if missing."""
    if await conn.fetchval(sql.MIGRATIONS_TABLE_EXISTS):
        return
    await conn.execute(sql.MIGRATION_LOCK, *migration_lock_args(schema))
    if not await conn.fetchval(sql.SCHEMA_EXISTS, schema):
        await conn.execute(sql.create_schema(schema))
    await conn.execute(sql.CREATE_MIGRATIONS_TABLE)


async def find_schema(conn: Conn, schema: str) -> tuple[bool, bool]:
    """Whether the schema exists, and whether it has ``schema_migrations``."""
    table = await conn.fetchval(sql.MIGRATIONS_TABLE_EXISTS)
    return bool(await conn.fetchval(sql.SCHEMA_EXISTS, schema)), bool(table)


async def applied_migrations(conn: Conn) -> list[AppliedMigration]:
    """Rows of ``schema_migrations`` by version (none before the table exists)."""
    if not await conn.fetchval(sql.MIGRATIONS_TABLE_EXISTS):
        return []
    rows = await conn.fetch(sql.APPLIED)
    return [AppliedMigration(r[0], r[1], r[2], from_us(r[3])) for r in rows]


async def apply_migration(
    conn: Conn, schema: str, migration: Migration, recorded_name: str, now: int
) -> bool:
    """Run one migration and record it, in one transaction under the migration lock."""
    async with conn.transaction():
        await _prepare_schema(conn, schema)
        await conn.execute(sql.MIGRATION_LOCK, *migration_lock_args(schema))
        # Another process may have applied it while we waited for the lock.
        if await conn.fetchval(sql.IS_APPLIED, migration.version):
            return False
        try:
            await conn.execute(migration.up)
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.version} ({recorded_name}) failed: {exc}"
            ) from exc
        await conn.execute(
            sql.RECORD_MIGRATION, migration.version, recorded_name, migration.checksum, now
        )
    return True


async def revert_migration(
    conn: Conn, schema: str, migration: Migration, recorded_name: str, down: str
) -> None:
    """Run ``down`` and delete the migration's record, in one transaction under the lock."""
    async with conn.transaction():
        await conn.execute(sql.MIGRATION_LOCK, *migration_lock_args(schema))
        try:
            await conn.execute(down)
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"rolling back migration {migration.version} ({recorded_name}) failed: {exc}"
            ) from exc
        await conn.execute(sql.FORGET_MIGRATION, migration.version)


# --- events ------------------------------------------------------------------------------------


async def append_events(conn: Conn, rows: Sequence[EventValues], channel: str) -> list[int]:
    """Append events on ``conn``; returns their sequences.

    Up to ``COPY_ROWS`` events go in one statement (one round trip); larger batches take
    their sequences, then ``COPY`` the rows, in one transaction.
    """
    if len(rows) >= COPY_ROWS:
        return await _append_copy(conn, rows, channel)
    ids, types, agents, tasks, payloads, metadata, stamps = zip(*rows, strict=True)
    last = await conn.fetchval(
        sql.APPEND_EVENTS,
        ids,
        types,
        agents,
        tasks,
        [jsonb_text(p) for p in payloads],
        [jsonb_text(m) for m in metadata],
        stamps,
        channel,
    )
    first = int(last) - len(rows) + 1
    return list(range(first, first + len(rows)))


async def unless_lost(conn: Conn, work: Awaitable[T]) -> T:
    """Await ``work`` on ``conn``, or fail as a lost connection as soon as ``conn`` is lost.

    asyncpg's COPY and ``executemany`` wait for the socket to accept more data; when the
    connection is lost while that wait is on (the server ended the session mid-stream),
    nothing ends the wait, and the call would hang for ever (``command_timeout`` does not
    cover it).
    """
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()

    def on_lost(_conn: Any) -> None:
        if not lost.done():
            lost.set_result(None)

    running = asyncio.ensure_future(work)
    conn.add_termination_listener(on_lost)
    try:
        await asyncio.wait((running, lost), return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            running.cancel()
            with contextlib.suppress(BaseException):
                await running
            raise asyncpg.ConnectionDoesNotExistError("connection lost while streaming rows")
        return running.result()
    except asyncio.CancelledError:
        running.cancel()
        raise
    finally:
        conn.remove_termination_listener(on_lost)


async def _append_copy(conn: Conn, rows: Sequence[EventValues], channel: str) -> list[int]:
    n = len(rows)
    async with conn.transaction():
        last = int(await conn.fetchval(sql.TAKE_SEQUENCES, n))
        first = last - n + 1
        records = [copy_row(first + i, row) for i, row in enumerate(rows)]
        await unless_lost(
            conn,
            conn.copy_records_to_table("events", records=records, columns=sql.EVENT_COPY_COLUMNS),
        )
        await conn.execute(sql.NOTIFY, channel, ["e"])
    return list(range(first, last + 1))


# --- the operations of tasks and agents --------------------------------------------------------


def _claim_order(rec: Record) -> tuple[int, int, str]:
    return (-rec["priority"], rec["created_at"], rec["id"])


def _claim_args(agent_id: str, lease_us: int, now: int, last: Any) -> tuple[Any, ...]:
    """A claim's parameters: $1 now, $2..$4 what the claim writes, $5 ``last``."""
    c = rules.claim_changes(agent_id, now, lease_us)
    return (now, c["status"], c["assigned_to"], c["lease_expires_at"], last)


class PostgresOps:
    """The writes that read before they write, given the storage's clock and retry policy."""

    def __init__(self, now: Callable[[], int], policy: rules.RetryPolicy) -> None:
        self.now = now
        self.policy = policy

    # --- the transition routine ------------------------------------------------------------

    async def transition(
        self,
        conn: Conn,
        old: Record,
        changes: dict[str, Any],
        now: int,
        fx: Effects,
        *,
        retry: bool = False,
    ) -> Record:
        """Every status change goes through here: legality, dependents, cascades.

        ``retry`` allows requeueing a dead letter (``rules.RETRY``).
        """
        new = {**old, **changes}
        check_new_status(old, new, retry=retry)
        await conn.execute(sql.UPDATE_TASK, *_task_update_args(new))
        old_status, new_status = old["status"], new["status"]
        if new_status == old_status:
            return new
        if new_status == PENDING and new["unfinished_deps"] == 0:
            fx.tasks = True
        elif old_status in rules.ACTIVE and new["concurrency_key"] is not None:
            fx.tasks = True  # a slot of its key is free again
        if new_status in rules.TERMINAL:
            # The cascade below happens only under a final task: this covers it too.
            fx.finished = True
        if new_status == COMPLETED:
            if any(r[0] for r in await conn.fetch(sql.DEPENDENCY_COMPLETED, old["id"])):
                fx.tasks = True
        elif new_status in (FAILED, CANCELLED):
            await self.cascade(conn, new, now)
        return new

    async def cascade(self, conn: Conn, root: Record, now: int) -> list[Record]:
        """Cancel, transitively, the unfinished dependents of a failed or cancelled task."""
        locked: dict[str, Record] = {}
        while True:
            # Lock first, then read the edges: a dependent added meanwhile shows up in the
            # next round, so none is left waiting on a cancelled task.
            rows = await conn.fetch(sql.CASCADE_CANDIDATES, root["id"], list(locked))
            if not rows:
                break
            for row in rows:
                rec = task(row)
                locked[rec["id"]] = rec
        if not locked:
            return []
        dependents: dict[str, list[str]] = {}
        status: dict[str, str] = {}
        for depends_on, task_id, st in await conn.fetch(sql.DEPENDENTS_OF, [root["id"], *locked]):
            dependents.setdefault(depends_on, []).append(task_id)
            status[task_id] = st
        for tid, rec in locked.items():
            status[tid] = rec["status"]
        cancelled = plan_cascade(root["id"], root["status"], dependents, status, locked, now)
        if cancelled:
            args = [_task_update_args(r) for r in cancelled]
            await unless_lost(conn, conn.executemany(sql.UPDATE_TASK, args))
        return cancelled

    async def fail_attempt(
        self, conn: Conn, rec: Record, error: str, now: int, fx: Effects
    ) -> Record:
        """An attempt failed: back to pending after a backoff, or failed for good."""
        changes = rules.failure_changes(
            rec["retry_count"], rec["max_retries"], error, now, self.policy
        )
        return await self.transition(conn, rec, changes, now, fx)

    async def expire_leases(self, conn: Conn, now: int, fx: Effects) -> None:
        """Every held task whose lease ran out counts a failed attempt."""
        for row in await conn.fetch(sql.EXPIRED_LEASES, now):
            rec = task(row)
            log.info("lease of task %s held by %s expired", rec["id"], rec["assigned_to"])
            await self.fail_attempt(conn, rec, rules.lease_error(rec["assigned_to"]), now, fx)

    async def held(self, conn: Conn, task_id: str, agent_id: str, now: int, fx: Effects) -> Record:
        """The task, locked, if ``agent_id`` holds it (expired leases requeued first)."""
        row = await conn.fetchrow(sql.LOCK_HELD_TASK, task_id, now)
        if row is None or row[-1]:
            await self.expire_leases(conn, now, fx)
            row = await conn.fetchrow(sql.LOCK_TASK, task_id)
            if row is None:
                raise Keep(NotFoundError("task", task_id))
            rec = task(row)
        else:
            rec = task(tuple(row)[:-1])
        if (lost := rules.not_held(task_id, agent_id, rec)) is not None:
            raise Keep(lost)
        return rec

    # --- agents ----------------------------------------------------------------------------

    async def delete_agent(self, conn: Conn, fx: Effects, agent_id: str) -> None:
        """Delete an agent and its mailbox; release the tasks it held or was named on."""
        if await conn.fetchval(sql.DELETE_AGENT, agent_id) is None:
            return
        await conn.execute(sql.DELETE_MAILBOX, agent_id)
        now = self.now()
        for row in await conn.fetch(sql.TASKS_OF_AGENT_LOCKED, agent_id):
            # Re-read: releasing an earlier task may have cancelled this one.
            rec = task(await conn.fetchrow(sql.GET_TASK, row[0]))
            if rec["status"] in rules.ACTIVE:
                rec = await self.fail_attempt(conn, rec, rules.released_error(agent_id), now, fx)
            if rec["assigned_to"] is not None:
                await conn.execute(
                    sql.UPDATE_TASK, *_task_update_args({**rec, "assigned_to": None})
                )

    async def reap_stale_agents(
        self, conn: Conn, fx: Effects, cutoff: int, now: int
    ) -> list[Record]:
        """Mark agents silent since ``cutoff`` as ``error``; requeue the tasks they held."""
        reaped = []
        for row in await conn.fetch(sql.LOCK_STALE_AGENTS, cutoff):
            rec = {**row_record(sql.AGENT_COLS, row), "status": "error", "updated_at": now}
            await conn.execute(sql.MARK_AGENT_ERROR, rec["id"], now)
            reaped.append(rec)
            for t in await conn.fetch(sql.HELD_BY_AGENT_LOCKED, rec["id"]):
                await self.fail_attempt(conn, task(t), rules.released_error(rec["id"]), now, fx)
        return reaped

    # --- tasks -----------------------------------------------------------------------------

    async def store_tasks(
        self, conn: Conn, fx: Effects, recs: Sequence[Record], raise_on_duplicate: bool
    ) -> list[str]:
        """Insert a batch of tasks, those whose dedup key is held left out (see
        ``rules.dedup_batch``); the id of each."""
        ids = [r["id"] for r in recs]
        keys = sorted({r["dedup_key"] for r in recs if r["dedup_key"] is not None})
        if keys:
            await conn.execute(sql.LOCK_DEDUP_KEYS, keys)
            taken = {r[0]: r[1] for r in await conn.fetch(sql.DEDUP_HOLDERS, keys)}
            recs, ids = rules.dedup_batch(recs, taken, raise_on_duplicate)
            if recs:
                await self._store_batch(conn, fx, recs)
            return ids
        await self._store_batch(conn, fx, recs)
        return ids

    async def _store_batch(self, conn: Conn, fx: Effects, recs: Sequence[Record]) -> None:
        """Insert a batch of tasks and their dependency edges."""
        ids = [r["id"] for r in recs]
        in_batch = set(ids)
        dep_ids = sorted(
            {d for r in recs for d in _json.loads(r["dependencies"]) if d not in in_batch}
        )
        stored = [r[0] for r in await conn.fetch(sql.EXISTING_TASK_IDS, ids)]
        status: dict[str, str] = {}
        if dep_ids:
            status = {r[0]: r[1] for r in await conn.fetch(sql.DEPENDENCY_STATUS, dep_ids)}
        planned = plan_task_batch(recs, stored, status, self.now())
        rows = [p.record for p in planned]
        cols = columns(rows, codec.COLUMNS["tasks"])
        cols[5] = [jsonb_text(v) for v in cols[5]]  # payload
        cols[6] = [opt_jsonb(v) for v in cols[6]]  # result
        cols[10] = [jsonb_text(v) for v in cols[10]]  # dependencies
        await conn.execute(sql.INSERT_TASKS, *cols, [p.unfinished for p in planned])
        edges = [(d, p.record["id"]) for p in planned for d in p.dependencies]
        if edges:
            await conn.execute(sql.INSERT_EDGES, [e[0] for e in edges], [e[1] for e in edges])
        if any(p.unfinished == 0 and p.record["status"] == PENDING for p in planned):
            fx.tasks = True

    async def store_lone_task(self, conn: Conn, rec: Record, channel: str) -> tuple[bool, bool]:
        """Store one task without dependencies in one statement: (stored, woke waiters).

        Not stored means its id is taken. The checks of the batch path that need no reads
        (the stored status must suit a task without dependencies) run first.
        """
        plan_task_batch([rec], (), {}, self.now())
        args = [rec[c] for c in codec.COLUMNS["tasks"]]
        args[5] = jsonb_text(args[5])  # payload
        args[6] = opt_jsonb(args[6])  # result
        args[10] = jsonb_text(args[10])  # dependencies
        row = await conn.fetchrow(sql.INSERT_LONE_TASK, *args, channel)
        return bool(row[0]), bool(row[1])

    async def update_task(self, conn: Conn, fx: Effects, rec: Record) -> None:
        """Replace a task's fields (a status change goes through the transition)."""
        row = await conn.fetchrow(sql.LOCK_TASK, rec["id"])
        if row is None:
            raise NotFoundError("task", rec["id"])
        old = task(row)
        changes, now = rules.update_changes(old, rec), self.now()
        key = old["concurrency_key"]
        slot = None
        if key is not None and rules.update_claims(old["status"], changes["status"]):
            # A slot as a claim takes one, held to the end of the transaction: a claim
            # running beside this update cannot take it too.
            slot = await conn.fetchval(sql.UPDATE_SLOT, key, now)
            if slot is None:
                raise rules.limit_reached(old["id"], key)
        await self.transition(conn, old, changes, now, fx)
        if slot is not None:
            await conn.execute(sql.HELD_BY_UPDATE, now, slot, old["id"])

    async def delete_task(self, conn: Conn, fx: Effects, task_id: str) -> None:
        """Delete a task no other task depends on."""
        if await conn.fetchval(sql.HAS_DEPENDENTS, task_id):
            raise ConflictError("task", task_id, "has dependent tasks and cannot be deleted")
        if await conn.fetchval(sql.DELETE_TASK, task_id):
            fx.finished = True  # a waiter for it learns that it never will finish

    # A claim reads the clock itself, when it runs: after the caller waited at the gate,
    # and again on every retry, so readiness and the lease are those of that moment.

    async def claim_task_at_once(
        self, conn: Conn, task_id: str, agent_id: str, lease_us: int
    ) -> bool | None:
        """Claim a named ready task in one statement; ``None``: a lease has run out."""
        claim = _claim_args(agent_id, lease_us, self.now(), task_id)
        row = await conn.fetchrow(sql.CLAIM_ONE_FAST, *claim)
        return None if row[0] else bool(row[1])

    async def claim_task(
        self, conn: Conn, fx: Effects, task_id: str, agent_id: str, lease_us: int
    ) -> bool:
        """Claim a named ready task, expired leases requeued first."""
        now = self.now()
        await self.expire_leases(conn, now, fx)
        claim = _claim_args(agent_id, lease_us, now, task_id)
        return await conn.fetchval(sql.CLAIM_ONE, *claim) is not None

    @staticmethod
    async def set_queue_limit(
        conn: Conn, fx: Effects, key: str, kind: str, limit: int | None, period_us: int | None
    ) -> None:
        """Set or remove one of a key's limits (a key left without any loses its row)."""
        if kind == "concurrency":
            await conn.execute(sql.SET_CONCURRENCY_LIMIT, key, limit)
        else:
            await conn.execute(sql.SET_RATE_LIMIT, key, limit, period_us)
            if limit is None:
                await conn.execute(sql.FORGET_CLAIMS, key)
        await conn.execute(sql.DROP_EMPTY_LIMIT, key)
        fx.tasks = True  # a raised limit may let waiting tasks be claimed

    async def claim_next_at_once(
        self, conn: Conn, agent_id: str, types: list[str] | None, lease_us: int
    ) -> tuple[bool, Record | None]:
        """Claim the best ready task in one statement: (a lease has run out, the task)."""
        claim = _claim_args(agent_id, lease_us, self.now(), types)
        row = await conn.fetchrow(sql.CLAIM_NEXT_FAST, *claim)
        if row[0]:
            return True, None
        return False, None if row[1] is None else task(tuple(row)[1:])

    async def claim_next(
        self, conn: Conn, fx: Effects, agent_id: str, types: list[str] | None, lease_us: int
    ) -> Record | None:
        """Claim the best ready task, expired leases requeued first."""
        now = self.now()
        await self.expire_leases(conn, now, fx)
        got = await conn.fetchrow(sql.CLAIM_NEXT, *_claim_args(agent_id, lease_us, now, types))
        return None if got is None else task(got)

    async def claim_batch_at_once(
        self, conn: Conn, agent_id: str, types: list[str] | None, lease_us: int, n: int
    ) -> tuple[bool, list[Record]]:
        """Claim up to ``n`` ready tasks in one statement, as far as no limit is at stake:
        (whether the rest must be claimed one by one, the tasks in claim order)."""
        claim = _claim_args(agent_id, lease_us, self.now(), types)
        rows = await conn.fetch(sql.CLAIM_BATCH_FAST, *claim, n)
        if rows[0][0]:
            return True, []
        got = [task(tuple(row)[2:]) for row in rows if row[2] is not None]
        got.sort(key=_claim_order)
        return bool(rows[0][1]), got

    async def claim_batch(
        self,
        conn: Conn,
        fx: Effects,
        agent_id: str,
        types: list[str] | None,
        lease_us: int,
        n: int,
    ) -> list[Record]:
        """Claim up to ``n`` ready tasks one after another, expired leases requeued first:
        each claim counts those before it against its key's limits."""
        now = self.now()
        await self.expire_leases(conn, now, fx)
        claim = _claim_args(agent_id, lease_us, now, types)
        out: list[Record] = []
        while len(out) < n and (got := await conn.fetchrow(sql.CLAIM_NEXT, *claim)) is not None:
            out.append(task(got))
        return out

    async def start_task(
        self, conn: Conn, fx: Effects, task_id: str, agent_id: str, now: int
    ) -> Record:
        rec = await self.held(conn, task_id, agent_id, now, fx)
        return await self.transition(conn, rec, rules.start_changes(now), now, fx)

    async def complete_at_once(
        self,
        conn: Conn,
        task_id: str,
        agent_id: str,
        encoded: str | None,
        now: int,
        channel: str,
    ) -> tuple[Record | None, bool]:
        """Complete a held task in one statement: (the task, whether a dependent is ready).

        The task is ``None`` when it could not be done so (a lease has run out somewhere, or
        the task is not held as asked): the full :meth:`complete_task` says what went wrong.
        The statement notifies by itself: "f" when done, "t" when a dependent became ready.
        """
        c = rules.complete_changes(encoded, now)
        row = await conn.fetchrow(
            sql.COMPLETE_FAST,
            now,
            task_id,
            agent_id,
            c["status"],
            opt_jsonb(c["result"]),
            c["completed_at"],
            c["lease_expires_at"],
            c["updated_at"],
            channel,
        )
        if row[0] or row[3] is None:
            return None, False
        return task(tuple(row)[3:]), bool(row[1])

    async def complete_task(
        self, conn: Conn, fx: Effects, task_id: str, agent_id: str, encoded: str | None, now: int
    ) -> Record:
        rec = await self.held(conn, task_id, agent_id, now, fx)
        changes = rules.complete_changes(encoded, now)
        return await self.transition(conn, rec, changes, now, fx)

    async def complete_batch_at_once(
        self,
        conn: Conn,
        agent_id: str,
        pairs: Sequence[tuple[str, str | None]],
        now: int,
        channel: str,
    ) -> tuple[list[Record] | None, bool]:
        """Complete held tasks in one statement, all or none: (the tasks in the order given,
        whether a dependent is ready). ``None`` when it could not be done so: the full
        :meth:`complete_tasks` says what went wrong. The statement notifies by itself."""
        c = rules.complete_changes(None, now)
        rows = await conn.fetch(
            sql.COMPLETE_BATCH_FAST,
            now,
            [task_id for task_id, _ in pairs],
            [opt_jsonb(result) for _, result in pairs],
            agent_id,
            c["status"],
            c["completed_at"],
            c["lease_expires_at"],
            c["updated_at"],
            channel,
        )
        first = rows[0]
        if first[0] or not first[1]:
            return None, False
        by_id = {rec["id"]: rec for rec in (task(tuple(row)[4:]) for row in rows)}
        return [by_id[task_id] for task_id, _ in pairs], bool(first[2])

    async def complete_tasks(
        self,
        conn: Conn,
        fx: Effects,
        agent_id: str,
        pairs: Sequence[tuple[str, str | None]],
        now: int,
    ) -> list[Record]:
        """Complete held tasks, all or none: each is checked (and locked) before any is."""
        held = [await self.held(conn, task_id, agent_id, now, fx) for task_id, _ in pairs]
        return [
            await self.transition(conn, rec, rules.complete_changes(result, now), now, fx)
            for rec, (_, result) in zip(held, pairs, strict=True)
        ]

    async def fail_task(
        self, conn: Conn, fx: Effects, task_id: str, agent_id: str, error: str, now: int
    ) -> Record:
        rec = await self.held(conn, task_id, agent_id, now, fx)
        return await self.fail_attempt(conn, rec, error, now, fx)

    async def cancel_task(
        self, conn: Conn, fx: Effects, task_id: str, reason: str | None, now: int
    ) -> list[str]:
        """Cancel a task and, transitively, its unfinished dependents; their ids."""
        await self.expire_leases(conn, now, fx)
        row = await conn.fetchrow(sql.LOCK_TASK, task_id)
        if row is None:
            raise Keep(NotFoundError("task", task_id))
        rec = task(row)
        if rec["status"] == CANCELLED:
            return []
        new = {**rec, **rules.cancel_changes(reason, now)}
        check_new_status(rec, new)
        await conn.execute(sql.UPDATE_TASK, *_task_update_args(new))
        fx.finished = True
        cancelled = [new, *await self.cascade(conn, new, now)]
        cancelled.sort(key=lambda r: r["stored_order"])
        return [r["id"] for r in cancelled]

    async def heartbeat_task(
        self, conn: Conn, fx: Effects, task_id: str, agent_id: str, lease_us: int, now: int
    ) -> Record:
        rec = await self.held(conn, task_id, agent_id, now, fx)
        changes = {"lease_expires_at": now + lease_us, "updated_at": now}
        return await self.transition(conn, rec, changes, now, fx)

    async def release_task(
        self, conn: Conn, fx: Effects, task_id: str, agent_id: str, now: int
    ) -> Record:
        """Give back a held task: pending and claimable at once, not a failed attempt."""
        rec = await self.held(conn, task_id, agent_id, now, fx)
        return await self.transition(conn, rec, rules.release_changes(now), now, fx)

    async def retry_tasks(
        self, conn: Conn, fx: Effects, task_ids: list[str] | None, task_type: str | None, now: int
    ) -> list[Record]:
        """Requeue dead letters: these (all or none), or every one (of a type) that can run."""

        async def dead_dependency(task_id: str) -> tuple[str, str] | None:
            row = await conn.fetchrow(sql.DEAD_DEPENDENCY, task_id)
            return None if row is None else (row[0], row[1])

        chosen: list[Record] = []
        if task_ids is None:
            failed = await (
                conn.fetch(sql.LOCK_FAILED_TASKS)
                if task_type is None
                else conn.fetch(sql.LOCK_FAILED_TASKS_OF_TYPE, task_type)
            )
            for row in failed:
                rec = task(row)
                if await dead_dependency(rec["id"]) is None:
                    chosen.append(rec)
        else:
            # Locked in id order, whatever order they were asked in: no deadlock between two.
            locked = {}
            for task_id in sorted(set(task_ids)):
                row = await conn.fetchrow(sql.LOCK_TASK, task_id)
                if row is not None:
                    locked[task_id] = task(row)
            # Checked in the order asked (the first problem is the one reported), once each.
            for task_id in dict.fromkeys(task_ids):
                if task_id not in locked:
                    raise NotFoundError("task", task_id)
                rules.check_retry(
                    task_id, locked[task_id]["status"], await dead_dependency(task_id)
                )
                chosen.append(locked[task_id])
        keys = sorted({r["dedup_key"] for r in chosen if r["dedup_key"] is not None})
        if keys:
            await conn.execute(sql.LOCK_DEDUP_KEYS, keys)
            taken = {r[0]: r[1] for r in await conn.fetch(sql.DEDUP_HOLDERS, keys)}
            chosen = rules.retries_of_free_keys(chosen, taken, task_ids is not None)
        changes = rules.retry_changes(now)
        return [await self.transition(conn, r, changes, now, fx, retry=True) for r in chosen]

    async def fire_schedule(
        self,
        conn: Conn,
        fx: Effects,
        name: str,
        expected_due: int,
        next_due: int,
        due: int | None,
        task: Record | None,
        now: int,
    ) -> bool:
        """Move a due schedule on and store its task, atomically; whether it was still due."""
        moved = await conn.fetchval(sql.FIRE_SCHEDULE, name, expected_due, next_due, due, now)
        if moved is None:
            return False
        if task is not None:
            await self.store_tasks(conn, fx, [task], True)
        return True

    # --- maintenance -----------------------------------------------------------------------

    async def prune(
        self, conn: Conn, fx: Effects, ev_t: int | None, me_t: int | None, ms_t: int | None
    ) -> PruneResult:
        """Delete events and metrics older than their times, and read messages."""
        result = PruneResult()
        if ev_t is not None:
            result.events = int(await conn.fetchval(sql.PRUNE_EVENTS, ev_t))
        if me_t is not None:
            result.metrics = int(await conn.fetchval(sql.PRUNE_METRICS, me_t))
        if ms_t is not None:
            result.messages = int(await conn.fetchval(sql.PRUNE_MESSAGES, ms_t))
        return result

    async def retain(self, conn: Conn, fx: Effects, plan: RetentionPlan) -> PruneResult:
        """A retention pass, added to the record in ``swarm_counters``."""
        result = PruneResult()

        async def threshold(statement: str, keep: int | None) -> tuple[Any, ...] | None:
            if keep is None:
                return None
            row = await conn.fetchrow(statement, keep)
            return None if row is None else tuple(row)

        if (cut := plan.events) is not None:
            seq = await threshold(sql.EVENT_KEEP_THRESHOLD, cut.keep)
            result.events = int(
                await conn.fetchval(sql.RETAIN_EVENTS, cut.before, None if seq is None else seq[0])
            )
        if (cut := plan.metrics) is not None:
            bound = cut.bound(await threshold(sql.METRIC_KEEP_THRESHOLD, cut.keep))
            result.metrics = int(await conn.fetchval(sql.RETAIN_METRICS, *bound))
        if (cut := plan.messages) is not None:
            bound = cut.bound(await threshold(sql.MESSAGE_KEEP_THRESHOLD, cut.keep))
            result.messages = int(await conn.fetchval(sql.RETAIN_MESSAGES, *bound))
        if (cut := plan.tasks) is not None:
            bound = cut.bound(await threshold(sql.TASK_KEEP_THRESHOLD, cut.keep))
            locked = [r[0] for r in await conn.fetch(sql.LOCK_RETAINED_TASKS, *bound)]
            ids = [r[0] for r in await conn.fetch(sql.STILL_UNPINNED, locked)] if locked else []
            if ids:
                await conn.execute(sql.DELETE_EDGES_TO, ids)
                await conn.execute(sql.DELETE_TASKS, ids)
            result.tasks = len(ids)
        await conn.execute(sql.SET_IN_RECORD, "retention.ran_at", plan.now)
        await conn.executemany(
            sql.ADD_TO_RECORD, [(f"retention.{t}", getattr(result, t)) for t in TABLES]
        )
        return result
