"""Every SQL statement of the SQLite backend, in one place.

Rows are always read with an explicit column list (never ``*``), so a user migration that
adds a column leaves the backend working. Statements are plain strings; apsw's statement
cache prepares each one once per connection.
"""

from __future__ import annotations

import functools
from typing import Final

from ... import rules
from ...codec import COLUMNS
from ..sql_common import TASK_COLUMNS

__all__ = ["claim_batch", "claim_next", "task_update"]


def _select(table: str, columns: tuple[str, ...] | None = None) -> str:
    return f"SELECT {', '.join(columns or COLUMNS[table])} FROM {table}"


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


# --- connection set-up ----------------------------------------------------------------------

# Each pragma runs on its own: apsw runs the statements after one that returns a row only
# as that row is read, so a script of pragmas would silently stop after the first.

#: Run on every connection.
CONNECTION_PRAGMAS: Final = (
    "PRAGMA foreign_keys = ON",
    # The query builder's LIKE is case-sensitive on every backend.
    "PRAGMA case_sensitive_like = ON",
    # temp_store stays the default: MEMORY made GROUP BY aggregates ~20% slower here.
)
#: Run on the writer before anything else: on a new file, before any table exists
#: (auto_vacuum cannot be turned on later without a full VACUUM).
NEW_DATABASE_PRAGMAS: Final = ("PRAGMA auto_vacuum = INCREMENTAL",)
JOURNAL_WAL: Final = "PRAGMA journal_mode = WAL"
#: The writer checkpoints on its own schedule (the Checkpointer), never on the commit path.
WRITER_PRAGMAS: Final = ("PRAGMA wal_autocheckpoint = 0", "PRAGMA journal_size_limit = 67108864")
READER_PRAGMAS: Final = ("PRAGMA query_only = ON",)
#: A connection learns that the file is in WAL mode on its first read; until then its
#: checkpoints do nothing (and report -1).
CHECKPOINTER_PRAGMAS: Final = ("PRAGMA wal_autocheckpoint = 0", "PRAGMA journal_mode")

# --- migrations -----------------------------------------------------------------------------

CREATE_MIGRATIONS: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
    "applied_at INTEGER NOT NULL)"
)
APPLIED_MIGRATIONS: Final = (
    "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
)
MIGRATIONS_TABLE_EXISTS: Final = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
)
#: The tables of a file, to tell an empty or foreign database from a swarm's.
TABLE_NAMES: Final = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
)
MIGRATIONS_COLUMN_NAMES: Final = ("version", "name", "checksum", "applied_at")
MIGRATIONS_COLUMNS: Final = "PRAGMA table_info(schema_migrations)"
MIGRATION_RECORDED: Final = "SELECT 1 FROM schema_migrations WHERE version = ?"
RECORD_MIGRATION: Final = (
    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)"
)
FORGET_MIGRATION: Final = "DELETE FROM schema_migrations WHERE version = ?"

# --- agents ---------------------------------------------------------------------------------

AGENT_COLUMNS: Final = COLUMNS["agents"]
GET_AGENT: Final = _select("agents") + " WHERE id = ?"
INSERT_AGENT: Final = _insert("agents", AGENT_COLUMNS)
UPDATE_AGENT: Final = (
    "UPDATE agents SET " + ", ".join(f"{c} = ?" for c in AGENT_COLUMNS[1:]) + " WHERE id = ?"
)
DELETE_AGENT: Final = "DELETE FROM agents WHERE id = ?"
LIST_AGENTS: Final = _select("agents") + " ORDER BY created_at, id"
AGENTS_BY_STATUS: Final = _select("agents") + " WHERE status = ? ORDER BY created_at, id"
STALE_AGENTS: Final = (
    _select("agents")
    + " WHERE heartbeat < ? AND status NOT IN ('error', 'shutdown') ORDER BY heartbeat, id"
)
HEARTBEAT: Final = "UPDATE agents SET heartbeat = ?, updated_at = ? WHERE id = ?"
MARK_AGENT_ERROR: Final = (
    "UPDATE agents SET status = 'error', updated_at = ? WHERE id = ? RETURNING "
    + ", ".join(AGENT_COLUMNS)
)
DELETE_MAILBOX: Final = "DELETE FROM messages WHERE from_agent = ? OR to_agent = ?"

# --- tasks ----------------------------------------------------------------------------------

PUBLIC_TASK_COLUMNS: Final = COLUMNS["tasks"]
_TASK_ORDER: Final = " ORDER BY priority DESC, created_at, id"
_READY: Final = (
    "status = 'pending' AND unfinished_deps = 0 AND (run_after IS NULL OR run_after <= ?)"
)
#: Whether the limits of a task's concurrency key admit one more claim (``rules.claim_admitted``)
#: at the time bound to ``?``: counted inside the claim, under the single writer's lock.
_ADMITTED: Final = (
    "(concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM queue_limits AS l"
    " WHERE l.key = tasks.concurrency_key AND ("
    "(l.max_running IS NOT NULL AND l.max_running <= (SELECT count(*) FROM tasks AS h"
    " WHERE h.concurrency_key = l.key AND h.status IN ('assigned', 'running')))"
    " OR (l.rate_limit IS NOT NULL AND l.rate_limit <= (SELECT count(*) FROM queue_claims AS c"
    " WHERE c.key = l.key AND c.claimed_at > ? - l.rate_period)))))"
)
GET_TASK: Final = _select("tasks") + " WHERE id = ?"
#: Whether a task's key admits one more claim at ``?1`` (``update_task`` holding it).
KEY_ADMITS: Final = "SELECT " + _ADMITTED + " FROM tasks WHERE id = ?"
#: A task with its count of unfinished dependencies, for the transition routine.
GET_TASK_STATE: Final = _select("tasks", TASK_COLUMNS) + " WHERE id = ?"
INSERT_TASK: Final = _insert("tasks", TASK_COLUMNS)
INSERT_DEPENDENCY: Final = "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)"
TASK_STATUSES: Final = "SELECT id, status FROM tasks WHERE id IN (SELECT value FROM json_each(?))"
#: The unfinished tasks holding any of these dedup keys: (key, id).
DEDUP_HOLDERS: Final = (
    "SELECT dedup_key, id FROM tasks WHERE dedup_key IN (SELECT value FROM json_each(?))"
    " AND dedup_key IS NOT NULL AND status IN ('pending', 'assigned', 'running')"
)
EXISTING_TASKS: Final = "SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?))"
HAS_DEPENDENTS: Final = "SELECT 1 FROM task_dependencies WHERE depends_on = ? LIMIT 1"
DELETE_TASK: Final = "DELETE FROM tasks WHERE id = ?"
#: Ready and blocked pending tasks are in two indexes of the same order, merged here.
PENDING_TASKS: Final = (
    _select("tasks")
    + " WHERE status = 'pending' AND unfinished_deps = 0 UNION ALL "
    + _select("tasks")
    + " WHERE status = 'pending' AND unfinished_deps != 0"
    + _TASK_ORDER
)
READY_TASKS: Final = _select("tasks") + " INDEXED BY tasks_ready WHERE " + _READY + _TASK_ORDER
READY_TASKS_LIMIT: Final = READY_TASKS + " LIMIT ?"
_OF_TYPES: Final = " AND task_type IN (SELECT value FROM json_each(?))"
#: Whether a task (of these types) is ready: stops at the first one.
ANY_READY: Final = (
    "SELECT 1 FROM tasks INDEXED BY tasks_ready WHERE " + _READY + " AND " + _ADMITTED + " LIMIT 1"
)
ANY_READY_OF_TYPES: Final = (
    "SELECT 1 FROM tasks WHERE " + _READY + _OF_TYPES + " AND " + _ADMITTED + " LIMIT 1"
)
#: Keys with a rate limit (a few rows: one per key given limits).
RATE_LIMITED_KEYS: Final = (
    "SELECT key, rate_limit, rate_period FROM queue_limits WHERE rate_limit IS NOT NULL"
)
RECENT_CLAIMS: Final = (
    "SELECT claimed_at FROM queue_claims WHERE key = ? AND claimed_at > ? ORDER BY claimed_at"
)
#: When the first task (of these types) waiting out a backoff becomes ready.
NEXT_RUN_AFTER: Final = (
    "SELECT min(run_after) FROM tasks"
    " WHERE status = 'pending' AND unfinished_deps = 0 AND run_after > ?"
)
NEXT_RUN_AFTER_OF_TYPES: Final = NEXT_RUN_AFTER + _OF_TYPES
#: When the first lease (of a task of these types) runs out: a claim requeues the task then.
#: The partial index holds only held tasks, a few per worker.
_LEASE_ORDER: Final = (
    " FROM tasks INDEXED BY tasks_by_lease"
    " WHERE lease_expires_at IS NOT NULL AND status IN ('assigned', 'running')"
)
_FIRST_LEASE: Final = " ORDER BY lease_expires_at LIMIT 1)"
NEXT_LEASE_END: Final = "SELECT (SELECT lease_expires_at" + _LEASE_ORDER + _FIRST_LEASE
NEXT_LEASE_END_OF_TYPES: Final = (
    "SELECT (SELECT lease_expires_at" + _LEASE_ORDER + _OF_TYPES + _FIRST_LEASE
)
TASKS_BY_AGENT: Final = _select("tasks") + " WHERE assigned_to = ?" + _TASK_ORDER
#: The results of a task's completed dependencies, in the order it lists them: one row per
#: dependency (``id`` NULL when not completed), or one NULL row for a task without any;
#: no row at all when the task does not exist.
DEPENDENCY_RESULTS: Final = (
    "SELECT dep.id, dep.result FROM tasks"
    " LEFT JOIN json_each(tasks.dependencies)"
    " LEFT JOIN tasks AS dep ON dep.id = json_each.value AND dep.status = 'completed'"
    " WHERE tasks.id = ? ORDER BY json_each.key"
)
#: Tasks an agent holds or held, in the order they were stored (the memory backend's order).
TASKS_NAMING_AGENT: Final = _select("tasks", TASK_COLUMNS) + " WHERE assigned_to = ? ORDER BY rowid"
CLEAR_ASSIGNEE: Final = "UPDATE tasks SET assigned_to = NULL WHERE id = ?"
#: Cheap probe before the full search: one look into the lease index.
ANY_EXPIRED: Final = "SELECT 1 FROM tasks WHERE lease_expires_at <= ? LIMIT 1"
EXPIRED_LEASES: Final = (
    _select("tasks", TASK_COLUMNS)
    + " WHERE lease_expires_at <= ? AND status IN ('assigned', 'running')"
    + " ORDER BY lease_expires_at, id"
)
#: Every dependency edge below a task, with its rowid (the order edges were recorded in).
#: CROSS JOIN keeps the walk going from the few tasks below into the edge index.
DEPENDENT_EDGES: Final = (
    "WITH RECURSIVE below(id) AS ("
    " SELECT ? UNION SELECT task_dependencies.task_id FROM below"
    " CROSS JOIN task_dependencies ON task_dependencies.depends_on = below.id"
    ") SELECT task_dependencies.rowid, depends_on, task_id FROM below"
    " CROSS JOIN task_dependencies ON task_dependencies.depends_on = below.id"
)
TASK_STATES: Final = (
    _select("tasks", TASK_COLUMNS) + " WHERE id IN (SELECT value FROM json_each(?))"
)
#: Dead letters: the most recent failure first (a task failed by ``update_task`` may have
#: no ``completed_at``: it counts as the oldest); ``tasks_failed`` is in this order.
_FAILED_ORDER: Final = " ORDER BY coalesce(completed_at, 0) DESC, id DESC LIMIT ?"
FAILED_TASKS: Final = _select("tasks") + " WHERE status = 'failed'" + _FAILED_ORDER
FAILED_TASKS_OF_TYPE: Final = (
    _select("tasks") + " WHERE status = 'failed' AND task_type = ?" + _FAILED_ORDER
)
#: Dead letters to requeue in bulk, oldest failure first.
FAILED_TASK_STATES: Final = (
    _select("tasks", TASK_COLUMNS)
    + " WHERE status = 'failed' ORDER BY coalesce(completed_at, 0), id"
)
FAILED_TASK_STATES_OF_TYPE: Final = (
    _select("tasks", TASK_COLUMNS)
    + " WHERE status = 'failed' AND task_type = ? ORDER BY coalesce(completed_at, 0), id"
)
#: A dependency of the task that will never complete (the first in its list), if any.
DEAD_DEPENDENCY: Final = (
    "SELECT tasks.id, tasks.status FROM task_dependencies"
    " JOIN tasks ON tasks.id = task_dependencies.depends_on"
    " WHERE task_dependencies.task_id = ? AND tasks.status IN ('failed', 'cancelled')"
    " ORDER BY task_dependencies.rowid LIMIT 1"
)
TASK_ROWIDS: Final = (
    "SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?)) ORDER BY rowid"
)

_CLAIM_SET: Final = tuple(rules.claim_changes("", 0, 0))
#: After the task's columns, whether its key has a rate limit (then the claim is logged).
_RATE_LIMITED: Final = (
    "(SELECT rate_limit IS NOT NULL FROM queue_limits WHERE key = tasks.concurrency_key)"
)
_RETURNING_TASK: Final = " RETURNING " + ", ".join(PUBLIC_TASK_COLUMNS)
CLAIM_TASK: Final = (
    "UPDATE tasks SET "
    + ", ".join(f"{c} = ?" for c in _CLAIM_SET)
    + " WHERE id = ? AND "
    + _READY
    + " AND "
    + _ADMITTED
    + " RETURNING concurrency_key, "
    + _RATE_LIMITED
)
#: A claim of a rate-limited key is logged, and the claims out of its window go.
LOG_CLAIM: Final = (
    "INSERT INTO queue_claims (key, claimed_at)"
    " SELECT key, ? FROM queue_limits WHERE key = ? AND rate_limit IS NOT NULL"
)
FORGET_OLD_CLAIMS: Final = (
    "DELETE FROM queue_claims WHERE key = ?1"
    " AND claimed_at <= ?2 - (SELECT rate_period FROM queue_limits WHERE key = ?1)"
)
QUEUE_LIMIT_COLUMNS: Final = ("key", "max_running", "rate_limit", "rate_period")
QUEUE_LIMITS: Final = f"SELECT {', '.join(QUEUE_LIMIT_COLUMNS)} FROM queue_limits ORDER BY key"
SET_CONCURRENCY_LIMIT: Final = (
    "INSERT INTO queue_limits (key, max_running) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET max_running = excluded.max_running"
)
SET_RATE_LIMIT: Final = (
    "INSERT INTO queue_limits (key, rate_limit, rate_period) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET rate_limit = excluded.rate_limit,"
    " rate_period = excluded.rate_period"
)
DROP_EMPTY_LIMIT: Final = (
    "DELETE FROM queue_limits WHERE key = ? AND max_running IS NULL AND rate_limit IS NULL"
)
FORGET_CLAIMS: Final = "DELETE FROM queue_claims WHERE key = ?"


@functools.cache
def claim_next(type_count: int | None) -> str:
    """The claim in one statement: take the best ready task (of ``type_count`` types).

    Parameters: the claim's values (in :func:`rules.claim_changes` order), then ``now, now``
    without types, or ``now, type, now`` once per type. With several types, each arm takes
    its best task from the per-type index and the best of those wins. A task whose key's
    limits do not admit a claim is skipped (``_ADMITTED``).
    """
    head = "UPDATE tasks SET " + ", ".join(f"{c} = ?" for c in _CLAIM_SET) + " WHERE id = "
    if type_count is None:
        pick = (
            f"(SELECT id FROM tasks INDEXED BY tasks_ready WHERE {_READY} AND {_ADMITTED}"
            f"{_TASK_ORDER} LIMIT 1)"
        )
    else:
        arm = (
            "SELECT * FROM (SELECT id, priority, created_at FROM tasks"
            f" INDEXED BY tasks_ready_by_type WHERE {_READY} AND task_type = ?"
            f" AND {_ADMITTED}{_TASK_ORDER} LIMIT 1)"
        )
        arms = " UNION ALL ".join([arm] * type_count)
        pick = f"(SELECT id FROM ({arms}){_TASK_ORDER} LIMIT 1)"
    return head + pick + _RETURNING_TASK + ", " + _RATE_LIMITED


#: Whether any key has limits: without any, a batch of claims is one statement.
ANY_QUEUE_LIMIT: Final = "SELECT 1 FROM queue_limits LIMIT 1"


@functools.cache
def claim_batch(type_count: int | None) -> str:
    """Claim the ``LIMIT`` best ready tasks (of ``type_count`` types) in one statement.

    Only while no key has limits (``ANY_QUEUE_LIMIT``): the pick is read before any of its
    claims is written, so it could not count the batch's own claims against a limit.
    Parameters: the claim's values (in :func:`rules.claim_changes` order), then ``now, n``
    without types, or ``now, type, n`` once per type and ``n``. The rows come back in no
    particular order.
    """
    head = "UPDATE tasks SET " + ", ".join(f"{c} = ?" for c in _CLAIM_SET) + " WHERE id IN "
    if type_count is None:
        pick = f"(SELECT id FROM tasks INDEXED BY tasks_ready WHERE {_READY}{_TASK_ORDER} LIMIT ?)"
    else:
        arm = (
            "SELECT * FROM (SELECT id, priority, created_at FROM tasks"
            f" INDEXED BY tasks_ready_by_type WHERE {_READY} AND task_type = ?"
            f"{_TASK_ORDER} LIMIT ?)"
        )
        arms = " UNION ALL ".join([arm] * type_count)
        pick = f"(SELECT id FROM ({arms}){_TASK_ORDER} LIMIT ?)"
    return head + pick + _RETURNING_TASK


_task_updates: dict[tuple[str, ...], str] = {}


def task_update(columns: tuple[str, ...]) -> str:
    """``UPDATE tasks SET <columns> WHERE id = ?`` (cached per column set)."""
    sql = _task_updates.get(columns)
    if sql is None:
        sql = "UPDATE tasks SET " + ", ".join(f"{c} = ?" for c in columns) + " WHERE id = ?"
        _task_updates[columns] = sql
    return sql


# --- events ---------------------------------------------------------------------------------

EVENT_COLUMNS: Final = COLUMNS["events"]
#: An event numbered by SQLite (``sequence`` left out: the largest plus one) ...
INSERT_EVENT: Final = _insert("events", EVENT_COLUMNS[:-1])
#: ... and one given its sequence (the first of a run, which may follow pruned ones).
INSERT_EVENT_AT: Final = _insert("events", EVENT_COLUMNS)
#: The last sequence handed out: the highest stored, or the highest ever pruned.
LAST_SEQUENCE: Final = (
    "SELECT max(coalesce((SELECT max(sequence) FROM events), 0),"
    " coalesce((SELECT value FROM swarm_meta WHERE key = 'event_sequence'), 0))"
)
REMEMBER_SEQUENCE: Final = (
    "INSERT INTO swarm_meta (key, value) VALUES ('event_sequence', ?)"
    " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
)
EVENTS_BY_AGENT: Final = (
    _select("events") + " WHERE agent_id = ? ORDER BY timestamp DESC, sequence DESC LIMIT ?"
)
EVENTS_BY_TYPE: Final = (
    _select("events") + " WHERE event_type = ? ORDER BY timestamp DESC, sequence DESC LIMIT ?"
)
EVENTS_SINCE: Final = _select("events") + " WHERE timestamp >= ? ORDER BY timestamp, sequence"
READ_EVENTS: Final = _select("events") + " WHERE sequence > ? ORDER BY sequence LIMIT ?"
GET_EVENT: Final = _select("events") + " WHERE id = ?"
MAX_SEQUENCE: Final = "SELECT coalesce(max(sequence), 0) FROM events"
PRUNE_EVENTS: Final = "DELETE FROM events WHERE timestamp < ?"

# --- messages -------------------------------------------------------------------------------

MESSAGE_COLUMNS: Final = COLUMNS["messages"]
INSERT_MESSAGE: Final = _insert("messages", MESSAGE_COLUMNS)
GET_MESSAGE: Final = _select("messages") + " WHERE id = ?"
DELETE_MESSAGE: Final = "DELETE FROM messages WHERE id = ?"
MESSAGES_BETWEEN: Final = (
    _select("messages")
    + " WHERE (from_agent = ?1 AND to_agent = ?2) OR (from_agent = ?2 AND to_agent = ?1)"
    + " ORDER BY created_at DESC, id DESC LIMIT ?3"
)
UNREAD_MESSAGES: Final = (
    _select("messages") + " WHERE to_agent = ? AND read = 0 ORDER BY priority DESC, created_at, id"
)
HAS_UNREAD: Final = "SELECT 1 FROM messages WHERE to_agent = ? AND read = 0 LIMIT 1"
MARK_READ: Final = (
    "UPDATE messages SET read = 1, read_at = ? WHERE id = ? AND read = 0 RETURNING "
    + ", ".join(MESSAGE_COLUMNS)
)
#: In the terms of the index on read messages (``messages_read``), which also serves retention.
PRUNE_MESSAGES: Final = (
    "DELETE FROM messages WHERE read = 1 AND coalesce(read_at, 0) < ? AND read_at IS NOT NULL"
)

# --- metrics --------------------------------------------------------------------------------

METRIC_COLUMNS: Final = COLUMNS["metrics"]
INSERT_METRIC: Final = _insert("metrics", METRIC_COLUMNS)
METRICS_BY_AGENT: Final = _select("metrics") + " WHERE agent_id = ? ORDER BY timestamp, id"
METRICS_BY_AGENT_AND_TYPE: Final = (
    _select("metrics") + " WHERE agent_id = ? AND metric_type = ? ORDER BY timestamp, id"
)
#: The crate's aggregate, computed by SQLite: one row per agent and unit.
AGGREGATE_BY_AGENT: Final = (
    "SELECT agent_id, unit, count(*), sum(value), min(value), max(value), max(timestamp)"
    " FROM metrics WHERE metric_type = ? AND timestamp BETWEEN ? AND ? GROUP BY agent_id, unit"
)
#: The same per agent and unit, summed exactly (``functions.EXACT_SUM``), as every backend sums.
AGGREGATE_EXACT_BY_AGENT: Final = AGGREGATE_BY_AGENT.replace("sum(value)", "exact_sum(value)", 1)
METRIC_ROWS: Final = (
    "SELECT agent_id, unit, tags, value, timestamp FROM metrics"
    " WHERE metric_type = ? AND timestamp BETWEEN ? AND ?"
)
PRUNE_METRICS: Final = "DELETE FROM metrics WHERE timestamp < ?"

# --- schedules ------------------------------------------------------------------------------

SCHEDULE_COLUMNS: Final = (
    "name", "spec", "timezone", "missed", "template", "paused", "next_due", "last_due",
    "created_at", "updated_at",
)  # fmt: skip
_SCHEDULE_SELECT: Final = f"SELECT {', '.join(SCHEDULE_COLUMNS)} FROM schedules"
#: Store or redefine: the timing decides whether next_due moves (see Engine.put_schedule).
PUT_SCHEDULE: Final = (
    f"INSERT INTO schedules ({', '.join(SCHEDULE_COLUMNS)}) VALUES ({', '.join('?' * 10)})"
    " ON CONFLICT (name) DO UPDATE SET missed = excluded.missed,"
    " template = excluded.template, updated_at = excluded.updated_at,"
    " next_due = CASE WHEN (spec, timezone) = (excluded.spec, excluded.timezone)"
    " THEN next_due ELSE excluded.next_due END,"
    " spec = excluded.spec, timezone = excluded.timezone"
    f" RETURNING {', '.join(SCHEDULE_COLUMNS)}"
)
RESTORE_SCHEDULE: Final = (
    f"INSERT INTO schedules ({', '.join(SCHEDULE_COLUMNS)}) VALUES ({', '.join('?' * 10)})"
    " ON CONFLICT (name) DO NOTHING RETURNING name"
)
GET_SCHEDULE: Final = _SCHEDULE_SELECT + " WHERE name = ?"
LIST_SCHEDULES: Final = _SCHEDULE_SELECT + " ORDER BY name"
DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE name = ?"
SET_SCHEDULE_PAUSED: Final = (
    "UPDATE schedules SET paused = ?, next_due = coalesce(?, next_due), updated_at = ?"
    f" WHERE name = ? RETURNING {', '.join(SCHEDULE_COLUMNS)}"
)
#: The compare-and-set that fires a due time once.
FIRE_SCHEDULE: Final = (
    "UPDATE schedules SET next_due = ?, last_due = coalesce(?, last_due), updated_at = ?"
    " WHERE name = ? AND next_due = ? AND paused = 0"
)

# --- retention ------------------------------------------------------------------------------
# A count threshold is the newest row beyond the count kept; a cut (``Cut.bound``) removes
# rows up to (?1, ?2) on (time, id), or before ?1 when ?2 is NULL: one range of an index.

EVENT_KEEP_THRESHOLD: Final = "SELECT sequence FROM events ORDER BY sequence DESC LIMIT 1 OFFSET ?"
#: Events go by timestamp or by sequence: two indexes, a row goes when either says so.
RETAIN_EVENTS: Final = "DELETE FROM events WHERE timestamp < ?1 OR sequence <= ?2"
METRIC_KEEP_THRESHOLD: Final = (
    "SELECT timestamp, id FROM metrics ORDER BY timestamp DESC, id DESC LIMIT 1 OFFSET ?"
)
RETAIN_METRICS: Final = "DELETE FROM metrics WHERE timestamp <= ?1 AND (timestamp < ?1 OR id <= ?2)"
_READ_AT: Final = "coalesce(read_at, 0)"
MESSAGE_KEEP_THRESHOLD: Final = (
    f"SELECT {_READ_AT}, id FROM messages WHERE read = 1"
    f" ORDER BY {_READ_AT} DESC, id DESC LIMIT 1 OFFSET ?"
)
RETAIN_MESSAGES: Final = (
    f"DELETE FROM messages WHERE read = 1 AND {_READ_AT} <= ?1 AND ({_READ_AT} < ?1 OR id <= ?2)"
)
_COMPLETED_AT: Final = "coalesce(completed_at, 0)"
TASK_KEEP_THRESHOLD: Final = (
    f"SELECT {_COMPLETED_AT}, id FROM tasks WHERE status = 'completed'"
    f" ORDER BY {_COMPLETED_AT} DESC, id DESC LIMIT 1 OFFSET ?"
)
#: Completed tasks a cut removes, but none a dependent that may still run needs.
RETAINED_TASKS: Final = (
    "SELECT id FROM tasks WHERE status = 'completed'"
    f" AND {_COMPLETED_AT} <= ?1 AND ({_COMPLETED_AT} < ?1 OR id <= ?2)"
    " AND NOT EXISTS (SELECT 1 FROM task_dependencies AS d JOIN tasks AS c ON c.id = d.task_id"
    " WHERE d.depends_on = tasks.id AND c.status NOT IN ('completed', 'cancelled'))"
)
DELETE_EDGES_TO: Final = (
    "DELETE FROM task_dependencies WHERE depends_on IN (SELECT value FROM json_each(?))"
)
DELETE_TASKS: Final = "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?))"
RETENTION_RECORD: Final = "SELECT key, value FROM swarm_meta WHERE key LIKE 'retention.%'"
ADD_TO_RECORD: Final = (
    "INSERT INTO swarm_meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
)
CLEAR_RETENTION_RECORD: Final = "DELETE FROM swarm_meta WHERE key LIKE 'retention.%'"
SET_IN_RECORD: Final = (
    "INSERT INTO swarm_meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# --- maintenance ----------------------------------------------------------------------------

DATA_VERSION: Final = "PRAGMA data_version"
STORAGE_SIZE: Final = "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size"
INTEGRITY_CHECK: Final = "PRAGMA integrity_check"
FOREIGN_KEY_CHECK: Final = "PRAGMA foreign_key_check"
#: Tasks whose count of unfinished dependencies disagrees with their dependency edges.
DEPENDENCY_COUNT_CHECK: Final = (
    "SELECT t.id, t.unfinished_deps, count(p.id) FROM tasks t"
    " LEFT JOIN task_dependencies d ON d.task_id = t.id"
    " LEFT JOIN tasks p ON p.id = d.depends_on AND p.status != 'completed'"
    " GROUP BY t.id HAVING t.unfinished_deps != count(p.id)"
)
