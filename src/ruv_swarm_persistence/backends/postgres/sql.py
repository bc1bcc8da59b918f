"""The PostgreSQL backend's statements, kept apart from the code that runs them.

Tables are named without a schema: every connection's ``search_path`` is the storage's schema.
Times are integer microseconds; "now" is always a parameter taken from the storage's clock.
"""

from __future__ import annotations

from typing import Final

from ...codec import COLUMNS
from ..sql_common import TASK_COLUMNS

#: Task columns as this backend reads them: the shared ones, then the order of storing.
TASK_COLS: Final = (*TASK_COLUMNS, "stored_order")
AGENT_COLS: Final = COLUMNS["agents"]
EVENT_COLS: Final = COLUMNS["events"]
MESSAGE_COLS: Final = COLUMNS["messages"]
METRIC_COLS: Final = COLUMNS["metrics"]

#: Every table of the schema, dependents before what they reference (for size and vacuum).
TABLES: Final = (
    "task_dependencies",
    "tasks",
    "agents",
    "events",
    "messages",
    "metrics",
    "swarm_counters",
    "queue_limits",
    "queue_claims",
    "schedules",
    "schema_migrations",
)


def quote_ident(name: str) -> str:
    """An identifier quoted for SQL text (schema names cannot be bound as parameters)."""
    return '"' + name.replace('"', '""') + '"'


def _cols(cols: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(prefix + c for c in cols)


_T = _cols(TASK_COLS)
_TP = _cols(TASK_COLS, "t.")
_A = _cols(AGENT_COLS)
_E = _cols(EVENT_COLS)
_M = _cols(MESSAGE_COLS)
_X = _cols(METRIC_COLS)
_HELD = "('assigned', 'running')"
_DONE = "('completed', 'failed', 'cancelled')"
_READY = "status = 'pending' AND unfinished_deps = 0 AND (run_after IS NULL OR run_after <= $1)"
_CLAIM_ORDER = "priority DESC, created_at, id"
_OF_TYPES = "($2::text[] IS NULL OR task_type = ANY ($2::text[]))"
#: The slot a claim of a task takes at $1 (see ``queue_slot`` in the migration): -1 for a
#: task whose key has no limits (no slot, no lock), NULL when its key admits no claim now.
_SLOT = """CROSS JOIN LATERAL (SELECT CASE WHEN tasks.concurrency_key IS NULL
        OR NOT EXISTS (SELECT 1 FROM queue_limits AS l WHERE l.key = tasks.concurrency_key)
    THEN -1 ELSE queue_slot(tasks.concurrency_key, $1) END AS slot) AS admitted"""
#: Whether a key's limits admit a claim, by the statement's snapshot: for reads (what
#: ``wait_for_tasks`` asks).
_SEEMS_ADMITTED = """(concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM queue_limits AS l
    WHERE l.key = tasks.concurrency_key AND (
        (l.max_running IS NOT NULL AND l.max_running <= (SELECT count(*) FROM tasks AS h
            WHERE h.concurrency_key = l.key AND h.status IN ('assigned', 'running')))
        OR (l.rate_limit IS NOT NULL AND l.rate_limit <= (SELECT count(*) FROM queue_claims AS c
            WHERE c.key = l.key AND c.claimed_at > $1 - l.rate_period)))))"""
#: A claim (a CTE ``claimed`` returning the task) of a rate-limited key is logged, and the
#: claims that left its window go.
_LOG_CLAIM = """
logged AS (
    INSERT INTO queue_claims (key, claimed_at)
    SELECT l.key, $1 FROM claimed JOIN queue_limits AS l ON l.key = claimed.concurrency_key
    WHERE l.rate_limit IS NOT NULL
),
forgotten AS (
    DELETE FROM queue_claims AS c USING claimed, queue_limits AS l
    WHERE c.key = claimed.concurrency_key AND l.key = c.key AND c.claimed_at <= $1 - l.rate_period
)"""
#: Has any held task's lease run out? The earliest lease, read from the first entry of the
#: partial index on held tasks, whatever the table's size or statistics.
_ANY_EXPIRED = (
    f"COALESCE((SELECT min(lease_expires_at) FROM tasks WHERE status IN {_HELD}) <= $1, FALSE)"
)

# --- schema and migrations -----------------------------------------------------------------

SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)"""


def create_schema(schema: str) -> str:
    """``CREATE SCHEMA`` of a schema name (checked by ``options.check_schema``)."""
    return f"CREATE SCHEMA {quote_ident(schema)}"


MIGRATION_LOCK = "SELECT pg_advisory_xact_lock($1::int4, $2::int4)"
APPLIED = "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
IS_APPLIED = "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)"
RECORD_MIGRATION = (
    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)"
)
FORGET_MIGRATION = "DELETE FROM schema_migrations WHERE version = $1"

# --- notifications -------------------------------------------------------------------------

NOTIFY = "SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k"

# --- agents --------------------------------------------------------------------------------

INSERT_AGENT = f"INSERT INTO agents ({_A}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
UPDATE_AGENT = """
UPDATE agents SET name = $2, agent_type = $3, status = $4, capabilities = $5, metadata = $6,
    heartbeat = $7, created_at = $8, updated_at = $9
WHERE id = $1 RETURNING 1"""
GET_AGENT = f"SELECT {_A} FROM agents WHERE id = $1"
DELETE_AGENT = "DELETE FROM agents WHERE id = $1 RETURNING 1"
DELETE_MAILBOX = "DELETE FROM messages WHERE from_agent = $1 OR to_agent = $1"
LIST_AGENTS = f"SELECT {_A} FROM agents ORDER BY created_at, id"
LIST_AGENTS_BY_STATUS = f"SELECT {_A} FROM agents WHERE status = $1 ORDER BY created_at, id"
HEARTBEAT = "UPDATE agents SET heartbeat = $2, updated_at = $3 WHERE id = $1 RETURNING 1"
STALE_AGENTS = f"""
SELECT {_A} FROM agents WHERE heartbeat < $1 AND status NOT IN ('error', 'shutdown')
ORDER BY heartbeat, id"""
LOCK_STALE_AGENTS = STALE_AGENTS + " FOR UPDATE"
MARK_AGENT_ERROR = "UPDATE agents SET status = 'error', updated_at = $2 WHERE id = $1"

# --- tasks ---------------------------------------------------------------------------------

GET_TASK = f"SELECT {_T} FROM tasks WHERE id = $1"
LOCK_TASK = GET_TASK + " FOR UPDATE"
#: The slot an ``update_task`` holding a task of key $1 takes at $2, as a claim's (``_SLOT``).
UPDATE_SLOT = """SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM queue_limits WHERE key = $1)
    THEN -1 ELSE queue_slot($1, $2) END"""
#: An ``update_task`` that held task $3 at $1: the slot $2 it took, and the claim logged.
HELD_BY_UPDATE = f"""
WITH claimed AS (
    UPDATE tasks SET concurrency_slot = NULLIF($2::int, -1) WHERE id = $3
    RETURNING concurrency_key
),{_LOG_CLAIM}
SELECT 1"""
#: Dead letters, the most recent failure first (no ``completed_at``: the oldest).
FAILED_TASKS = f"""
SELECT {_T} FROM tasks WHERE status = 'failed'
ORDER BY COALESCE(completed_at, 0) DESC, id DESC LIMIT $1"""
FAILED_TASKS_OF_TYPE = f"""
SELECT {_T} FROM tasks WHERE status = 'failed' AND task_type = $1
ORDER BY COALESCE(completed_at, 0) DESC, id DESC LIMIT $2"""
#: Dead letters to requeue in bulk, oldest failure first, locked.
LOCK_FAILED_TASKS = f"""
SELECT {_T} FROM tasks WHERE status = 'failed'
ORDER BY COALESCE(completed_at, 0), id FOR UPDATE"""
LOCK_FAILED_TASKS_OF_TYPE = f"""
SELECT {_T} FROM tasks WHERE status = 'failed' AND task_type = $1
ORDER BY COALESCE(completed_at, 0), id FOR UPDATE"""
#: A dependency of the task that will never complete (the first in its list), if any.
DEAD_DEPENDENCY = """
SELECT t.id, t.status FROM tasks AS s
CROSS JOIN LATERAL jsonb_array_elements_text(s.dependencies) WITH ORDINALITY AS j(id, ord)
JOIN tasks AS t ON t.id = j.id AND t.status IN ('failed', 'cancelled')
WHERE s.id = $1 ORDER BY j.ord LIMIT 1"""
#: A held task, locked, and whether any lease anywhere has run out (then expire those first).
LOCK_HELD_TASK = (
    f"SELECT {_T}, {_ANY_EXPIRED.replace('$1', '$2')} FROM tasks WHERE id = $1 FOR UPDATE"
)
ANY_EXPIRED = f"SELECT {_ANY_EXPIRED}"
EXPIRED_LEASES = f"""
SELECT {_T} FROM tasks WHERE status IN {_HELD} AND lease_expires_at <= $1
ORDER BY lease_expires_at, id FOR UPDATE SKIP LOCKED"""
TASKS_OF_AGENT_LOCKED = (
    f"SELECT {_T} FROM tasks WHERE assigned_to = $1 ORDER BY stored_order FOR UPDATE"
)
HELD_BY_AGENT_LOCKED = (
    f"SELECT {_T} FROM tasks WHERE assigned_to = $1 AND status IN {_HELD} "
    "ORDER BY stored_order FOR UPDATE"
)
EXISTING_TASK_IDS = "SELECT id FROM tasks WHERE id = ANY ($1::text[])"
#: Dependencies of new tasks, share-locked so that none completes or goes away meanwhile.
DEPENDENCY_STATUS = "SELECT id, status FROM tasks WHERE id = ANY ($1::text[]) ORDER BY id FOR SHARE"
INSERT_TASKS = """
INSERT INTO tasks (id, task_type, priority, status, assigned_to, payload, result, error,
    retry_count, max_retries, dependencies, created_at, updated_at, started_at, completed_at,
    lease_expires_at, run_after, dedup_key, concurrency_key, unfinished_deps)
SELECT u.id, u.task_type, u.priority, u.status, u.assigned_to, u.payload::jsonb, u.result::jsonb,
    u.error, u.retry_count, u.max_retries, u.dependencies::jsonb, u.created_at, u.updated_at,
    u.started_at, u.completed_at, u.lease_expires_at, u.run_after, u.dedup_key,
    u.concurrency_key, u.unfinished_deps
FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::int4[], $10::int4[], $11::text[], $12::int8[], $13::int8[], $14::int8[],
    $15::int8[], $16::int8[], $17::int8[], $18::text[], $19::text[], $20::int4[])
    WITH ORDINALITY AS u(id, task_type, priority, status, assigned_to, payload, result, error,
        retry_count, max_retries, dependencies, created_at, updated_at, started_at, completed_at,
        lease_expires_at, run_after, dedup_key, concurrency_key, unfinished_deps, ord)
ORDER BY u.ord"""
#: One task without dependencies nor dedup key in one statement that commits by itself:
#: $1..$19 its columns (``codec.COLUMNS["tasks"]``), $20 the channel. Nothing is stored when
#: the id is taken (the first column counts the rows stored); a pending task sends a "t"
#: notification, as the batch path does.
INSERT_LONE_TASK = """
WITH stored AS (
    INSERT INTO tasks (id, task_type, priority, status, assigned_to, payload, result, error,
        retry_count, max_retries, dependencies, created_at, updated_at, started_at,
        completed_at, lease_expires_at, run_after, dedup_key, concurrency_key, unfinished_deps)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11::jsonb, $12, $13, $14,
        $15, $16, $17, $18, $19, 0)
    ON CONFLICT (id) DO NOTHING
    RETURNING status
),
woken AS (SELECT pg_notify($20, 't') FROM stored WHERE status = 'pending')
SELECT (SELECT count(*) FROM stored), (SELECT count(*) FROM woken)"""
#: Dedup keys taken in turns (sorted, so two batches cannot deadlock), until commit: the
#: look for their holders that follows sees every task stored under them before.
LOCK_DEDUP_KEYS = """
SELECT pg_advisory_xact_lock(hashtextextended('dedup_key:' || k, 0))
FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS sorted"""
#: The unfinished tasks holding any of the dedup keys $1: (key, id).
DEDUP_HOLDERS = """
SELECT dedup_key, id FROM tasks
WHERE dedup_key = ANY ($1::text[]) AND status IN ('pending', 'assigned', 'running')"""
SET_CONCURRENCY_LIMIT = """
INSERT INTO queue_limits (key, max_running) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET max_running = excluded.max_running"""
SET_RATE_LIMIT = """
INSERT INTO queue_limits (key, rate_limit, rate_period) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET rate_limit = excluded.rate_limit,
    rate_period = excluded.rate_period"""
QUEUE_LIMIT_COLS: Final = ("key", "max_running", "rate_limit", "rate_period")
QUEUE_LIMITS = f"SELECT {_cols(QUEUE_LIMIT_COLS)} FROM queue_limits ORDER BY key"
DROP_EMPTY_LIMIT = (
    "DELETE FROM queue_limits WHERE key = $1 AND max_running IS NULL AND rate_limit IS NULL"
)
FORGET_CLAIMS = "DELETE FROM queue_claims WHERE key = $1"
INSERT_EDGES = """
INSERT INTO task_dependencies (depends_on, task_id)
SELECT u.depends_on, u.task_id FROM unnest($1::text[], $2::text[]) WITH ORDINALITY
    AS u(depends_on, task_id, ord)
ORDER BY u.ord"""
#: Every mutable column of a task (dependencies and the count of unfinished ones excepted).
UPDATE_TASK = """
UPDATE tasks SET task_type = $2, priority = $3, status = $4, assigned_to = $5, payload = $6,
    result = $7, error = $8, retry_count = $9, max_retries = $10, created_at = $11,
    updated_at = $12, started_at = $13, completed_at = $14, lease_expires_at = $15,
    run_after = $16
WHERE id = $1"""
#: The one place the count of unfinished dependencies goes down: the dependents of the tasks
#: in ``done`` (a CTE of completed ids) have one unfinished dependency less, locked in id
#: order so two completions sharing dependents cannot deadlock; ``ready`` says which became
#: ready. Used by the transition and by the one-statement completion.
_RELEASED = """
released AS (
    UPDATE tasks AS t SET unfinished_deps = t.unfinished_deps - 1
    FROM (
        SELECT id FROM tasks
        WHERE id IN (SELECT d.task_id FROM task_dependencies d JOIN done ON d.depends_on = done.id)
        ORDER BY id FOR UPDATE
    ) AS locked
    WHERE t.id = locked.id
    RETURNING t.status = 'pending' AND t.unfinished_deps = 0 AS ready
)"""
#: The same for a batch of completed tasks: a dependent counts down once per dependency in
#: ``done``.
_RELEASED_MANY = """
released AS (
    UPDATE tasks AS t SET unfinished_deps = t.unfinished_deps - locked.n
    FROM (
        SELECT tasks.id, c.n FROM tasks JOIN (
            SELECT d.task_id, count(DISTINCT d.depends_on) AS n
            FROM task_dependencies d JOIN done ON d.depends_on = done.id GROUP BY d.task_id
        ) AS c ON c.task_id = tasks.id
        ORDER BY tasks.id FOR UPDATE OF tasks
    ) AS locked
    WHERE t.id = locked.id
    RETURNING t.status = 'pending' AND t.unfinished_deps = 0 AS ready
)"""
#: A dependency ($1) completed: its dependents count down (see ``_RELEASED``).
DEPENDENCY_COMPLETED = f"""
WITH done AS (SELECT $1::text AS id),{_RELEASED}
SELECT ready FROM released"""
HAS_DEPENDENTS = "SELECT EXISTS (SELECT 1 FROM task_dependencies WHERE depends_on = $1)"
DELETE_TASK = "DELETE FROM tasks WHERE id = $1 RETURNING 1"
#: Unfinished tasks reachable from $1 through dependencies, not yet locked by us; locked.
CASCADE_CANDIDATES = f"""
WITH RECURSIVE reach(id) AS (
    SELECT d.task_id FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
    WHERE d.depends_on = $1 AND t.status NOT IN {_DONE}
    UNION
    SELECT d.task_id FROM reach JOIN task_dependencies d ON d.depends_on = reach.id
        JOIN tasks t ON t.id = d.task_id
    WHERE t.status NOT IN {_DONE}
)
SELECT {_T} FROM tasks
WHERE id IN (SELECT id FROM reach) AND status NOT IN {_DONE} AND NOT (id = ANY ($2::text[]))
ORDER BY id FOR UPDATE"""
DEPENDENTS_OF = """
SELECT d.depends_on, d.task_id, t.status FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
WHERE d.depends_on = ANY ($1::text[]) ORDER BY d.position"""
#: Ready and blocked pending tasks are in two indexes of the same order (a merge of both).
PENDING_TASKS = f"""
SELECT {_T} FROM tasks WHERE status = 'pending' AND unfinished_deps = 0 UNION ALL
SELECT {_T} FROM tasks WHERE status = 'pending' AND unfinished_deps != 0
ORDER BY {_CLAIM_ORDER}"""
READY_TASKS = f"SELECT {_T} FROM tasks WHERE {_READY} ORDER BY {_CLAIM_ORDER} LIMIT $2"
#: Is a task (of the types $2, all when NULL) ready at $1, and if not, when does the first
#: one waiting out a backoff become ready, and when does the first lease run out (a claim
#: requeues the task then): what ``wait_for_tasks`` asks, in one round trip. The fourth
#: column: when the first key held back by its rate limit admits a claim again (its
#: window's claims, newest first: the rate_limit-th leaves it last).
TASKS_DUE = f"""
SELECT EXISTS (SELECT 1 FROM tasks WHERE {_READY} AND {_OF_TYPES} AND {_SEEMS_ADMITTED}),
    (SELECT min(run_after) FROM tasks
     WHERE status = 'pending' AND unfinished_deps = 0 AND run_after > $1 AND {_OF_TYPES}),
    (SELECT min(lease_expires_at) FROM tasks
     WHERE status IN ('assigned', 'running') AND {_OF_TYPES}),
    (SELECT min(c.claimed_at + l.rate_period) FROM queue_limits AS l
     CROSS JOIN LATERAL (
        SELECT claimed_at FROM queue_claims
        WHERE key = l.key AND claimed_at > $1 - l.rate_period
        ORDER BY claimed_at DESC OFFSET l.rate_limit - 1 LIMIT 1) AS c
     WHERE l.rate_limit > 0)"""
TASKS_BY_AGENT = f"SELECT {_T} FROM tasks WHERE assigned_to = $1 ORDER BY {_CLAIM_ORDER}"
#: The results of task $1's completed dependencies, in the order it lists them: one row per
#: dependency (``id`` NULL when not completed), or one NULL row for a task without any; no
#: row at all when the task does not exist.
DEPENDENCY_RESULTS = """
SELECT d.id, d.result FROM tasks AS t
LEFT JOIN LATERAL jsonb_array_elements_text(t.dependencies) WITH ORDINALITY AS j(id, ord)
    ON TRUE
LEFT JOIN tasks AS d ON d.id = j.id AND d.status = 'completed'
WHERE t.id = $1
ORDER BY j.ord"""

#: Claim the best ready task in one statement: $1 now, $2..$4 what the claim writes, $5 types.
_PICK = f"""
    SELECT tasks.id, admitted.slot FROM tasks {_SLOT}
    WHERE {_READY} AND ($5::text[] IS NULL OR task_type = ANY ($5::text[])){{extra}}
        AND admitted.slot IS NOT NULL
    ORDER BY {_CLAIM_ORDER} LIMIT 1 FOR UPDATE OF tasks SKIP LOCKED"""
_CLAIM_PICKED = f"""
    UPDATE tasks AS t SET status = $2, assigned_to = $3, lease_expires_at = $4, updated_at = $1,
        concurrency_slot = NULLIF(picked.slot, -1)
    FROM picked WHERE t.id = picked.id
    RETURNING {_TP}"""
CLAIM_NEXT = f"""
WITH picked AS ({_PICK.format(extra="")}),
claimed AS ({_CLAIM_PICKED}),{_LOG_CLAIM}
SELECT * FROM claimed"""
#: The same, unless some lease has run out (the first column says so; then nothing is
#: claimed and the caller expires leases in a transaction first).
CLAIM_NEXT_FAST = f"""
WITH expired AS (SELECT {_ANY_EXPIRED} AS found),
picked AS ({_PICK.format(extra=" AND NOT (SELECT found FROM expired)")}),
claimed AS ({_CLAIM_PICKED}),{_LOG_CLAIM}
SELECT expired.found, claimed.* FROM expired LEFT JOIN claimed ON TRUE"""
#: Claim one named task if ready: $1 now, $2..$4 the claim, $5 the task id.
_CLAIM_ONE = f"""
    UPDATE tasks AS t SET status = $2, assigned_to = $3, lease_expires_at = $4, updated_at = $1,
        concurrency_slot = NULLIF(picked.slot, -1)
    FROM (
        SELECT tasks.id, admitted.slot FROM tasks {_SLOT}
        WHERE tasks.id = $5 AND {_READY}{{extra}} AND admitted.slot IS NOT NULL
        FOR UPDATE OF tasks
    ) AS picked
    WHERE t.id = picked.id
    RETURNING t.concurrency_key"""
CLAIM_ONE = f"""
WITH claimed AS ({_CLAIM_ONE.format(extra="")}),{_LOG_CLAIM}
SELECT 1 FROM claimed"""
CLAIM_ONE_FAST = f"""
WITH expired AS (SELECT {_ANY_EXPIRED} AS found),
claimed AS ({_CLAIM_ONE.format(extra=" AND NOT (SELECT found FROM expired)")}),{_LOG_CLAIM}
SELECT expired.found, EXISTS (SELECT 1 FROM claimed) FROM expired"""

#: Complete a held task in one statement, when nothing stands in the way: $1 now, $2 task,
#: $3 agent, $4..$8 what completing writes, $9 the channel. Dependents count one unfinished
#: dependency less (locked in id order); a "t" notification goes out if one became ready,
#: and an "f" one (a task finished) whenever the task was completed.
#: The first column says a lease has run out somewhere: then nothing was done, and the
#: caller completes in a transaction that expires leases first (as when the row is missing).
COMPLETE_FAST = f"""
WITH expired AS (SELECT {_ANY_EXPIRED} AS found),
done AS (
    UPDATE tasks SET status = $4, result = $5::jsonb, completed_at = $6, lease_expires_at = $7,
        updated_at = $8
    WHERE id = $2 AND assigned_to = $3 AND status IN {_HELD} AND unfinished_deps = 0
        AND (lease_expires_at IS NULL OR lease_expires_at > $1)
        AND NOT (SELECT found FROM expired)
    RETURNING {_T}
),{_RELEASED},
woken AS (
    SELECT pg_notify($9, 't') FROM (
        SELECT 1 FROM released WHERE ready
        UNION ALL
        -- A slot of a limited key is free again.
        SELECT 1 FROM done JOIN queue_limits AS l ON l.key = done.concurrency_key
        WHERE l.max_running IS NOT NULL
    ) AS why LIMIT 1
),
finished AS (SELECT pg_notify($9, 'f') FROM done)
SELECT expired.found, (SELECT count(*) FROM woken) AS woken,
    (SELECT count(*) FROM finished) AS finished, done.*
FROM expired LEFT JOIN done ON TRUE"""
#: Claim up to $6 ready tasks in one statement: $1 now, $2..$4 what the claim writes, $5 types.
#: Only tasks whose key has no limits are claimed so (a batch's own claims could not be
#: counted against a limit): of the $6 best, those before the first task of a limited key.
#: The first column says a lease has run out (then nothing is claimed), the second that a
#: task of a limited key stopped the batch; the caller claims the rest one by one.
CLAIM_BATCH_FAST = f"""
WITH expired AS (SELECT {_ANY_EXPIRED} AS found),
candidates AS (
    SELECT tasks.id, tasks.priority, tasks.created_at,
        tasks.concurrency_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM queue_limits AS l WHERE l.key = tasks.concurrency_key) AS limited
    FROM tasks
    WHERE {_READY} AND ($5::text[] IS NULL OR task_type = ANY ($5::text[]))
        AND NOT (SELECT found FROM expired)
    ORDER BY {_CLAIM_ORDER} LIMIT $6 FOR UPDATE OF tasks SKIP LOCKED
),
ranked AS (
    SELECT id, limited, row_number() OVER (ORDER BY {_CLAIM_ORDER}) AS rank FROM candidates
),
stop AS (SELECT min(rank) AS rank FROM ranked WHERE limited),
claimed AS (
    UPDATE tasks AS t SET status = $2, assigned_to = $3, lease_expires_at = $4, updated_at = $1,
        concurrency_slot = NULL
    FROM ranked
    WHERE t.id = ranked.id AND ranked.rank < COALESCE((SELECT rank FROM stop), $6 + 1)
    RETURNING {_TP}
)
SELECT expired.found, (SELECT rank FROM stop) IS NOT NULL AS stopped, claimed.*
FROM expired LEFT JOIN claimed ON TRUE"""

#: Complete held tasks in one statement, all or none, when nothing stands in the way: $1 now,
#: $2 the tasks' ids, $3 their results (JSON text), $4 agent, $5..$8 what completing writes
#: (but the result), $9 the channel. Notifies as ``COMPLETE_FAST`` does. The first column
#: says a lease has run out somewhere, the second whether every task is held as asked: if
#: either stands in the way nothing was done, and the caller completes them in a
#: transaction (which says what went wrong).
COMPLETE_BATCH_FAST = f"""
WITH expired AS (SELECT {_ANY_EXPIRED} AS found),
given AS (SELECT * FROM unnest($2::text[], $3::text[]) AS g(id, result)),
held AS (
    SELECT tasks.id FROM tasks JOIN given ON given.id = tasks.id
    WHERE tasks.assigned_to = $4 AND tasks.status IN {_HELD} AND tasks.unfinished_deps = 0
        AND (tasks.lease_expires_at IS NULL OR tasks.lease_expires_at > $1)
    ORDER BY tasks.id FOR UPDATE OF tasks
),
ok AS (
    SELECT NOT (SELECT found FROM expired)
        AND (SELECT count(*) FROM held) = cardinality($2::text[]) AS all_held
),
done AS (
    UPDATE tasks SET status = $5, result = given.result::jsonb, completed_at = $6,
        lease_expires_at = $7, updated_at = $8
    FROM given
    WHERE tasks.id = given.id AND (SELECT all_held FROM ok)
        AND tasks.assigned_to = $4 AND tasks.status IN {_HELD}
    RETURNING {_cols(TASK_COLS, "tasks.")}
),{_RELEASED_MANY},
woken AS (
    SELECT pg_notify($9, 't') FROM (
        SELECT 1 FROM released WHERE ready
        UNION ALL
        -- A slot of a limited key is free again.
        SELECT 1 FROM done JOIN queue_limits AS l ON l.key = done.concurrency_key
        WHERE l.max_running IS NOT NULL
    ) AS why LIMIT 1
),
finished AS (SELECT pg_notify($9, 'f') FROM (SELECT 1 FROM done LIMIT 1) AS any_done)
SELECT expired.found, ok.all_held, (SELECT count(*) FROM woken) AS woken,
    (SELECT count(*) FROM finished) AS finished, done.*
FROM expired CROSS JOIN ok LEFT JOIN done ON TRUE"""

#: Take $1 event sequences (the counter row stays locked until commit); returns the last.
TAKE_SEQUENCES = (
    "UPDATE swarm_counters SET value = value + $1 WHERE name = 'events' RETURNING value"
)

# --- events --------------------------------------------------------------------------------

#: Append events: the counter row's lock serializes appends until commit, so sequences are
#: gapless and commit in order. $1..$7 arrays of the events' fields, $8 the channel.
APPEND_EVENTS = """
WITH counter AS (
    UPDATE swarm_counters SET value = value + cardinality($1::text[])
    WHERE name = 'events'
    RETURNING value - cardinality($1::text[]) AS base
), ins AS (
    INSERT INTO events (sequence, id, event_type, agent_id, task_id, payload, metadata, timestamp)
    SELECT counter.base + u.ord, u.id, u.event_type, u.agent_id, u.task_id, u.payload::jsonb,
        u.metadata::jsonb, u.ts
    FROM counter, unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::int8[]) WITH ORDINALITY
        AS u(id, event_type, agent_id, task_id, payload, metadata, ts, ord)
    RETURNING sequence
)
SELECT max(sequence), pg_notify($8, 'e') FROM ins"""
#: The columns a large batch of events is copied into (``COPY``), in row order.
EVENT_COPY_COLUMNS: Final = (
    "sequence",
    "id",
    "event_type",
    "agent_id",
    "task_id",
    "payload",
    "metadata",
    "timestamp",
)
EVENTS_BY_AGENT = (
    f"SELECT {_E} FROM events WHERE agent_id = $1 ORDER BY timestamp DESC, sequence DESC LIMIT $2"
)
EVENTS_BY_TYPE = (
    f"SELECT {_E} FROM events WHERE event_type = $1 ORDER BY timestamp DESC, sequence DESC LIMIT $2"
)
EVENTS_SINCE = f"SELECT {_E} FROM events WHERE timestamp >= $1 ORDER BY timestamp, sequence"
READ_EVENTS = f"SELECT {_E} FROM events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
GET_EVENT = f"SELECT {_E} FROM events WHERE id = $1"

# --- messages ------------------------------------------------------------------------------

STORE_MESSAGE = f"""
WITH ins AS (
    INSERT INTO messages ({_M}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING to_agent
)
SELECT pg_notify($10, 'm:' || to_agent) FROM ins"""
GET_MESSAGE = f"SELECT {_M} FROM messages WHERE id = $1"
DELETE_MESSAGE = "DELETE FROM messages WHERE id = $1"
MESSAGES_BETWEEN = f"""
SELECT {_M} FROM messages
WHERE (from_agent = $1 AND to_agent = $2) OR (from_agent = $2 AND to_agent = $1)
ORDER BY created_at DESC, id DESC LIMIT $3"""
UNREAD_MESSAGES = (
    f"SELECT {_M} FROM messages WHERE to_agent = $1 AND read = 0 "
    "ORDER BY priority DESC, created_at, id"
)
MARK_READ = f"UPDATE messages SET read = 1, read_at = $2 WHERE id = $1 AND read = 0 RETURNING {_M}"

# --- metrics -------------------------------------------------------------------------------

INSERT_METRICS = """
INSERT INTO metrics (id, metric_type, agent_id, value, unit, tags, timestamp)
SELECT u.id, u.metric_type, u.agent_id, u.value, u.unit, u.tags::jsonb, u.ts
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[],
    $7::int8[]) AS u(id, metric_type, agent_id, value, unit, tags, ts)"""
METRICS_BY_AGENT = f"""
SELECT {_X} FROM metrics WHERE agent_id = $1 AND ($2::text IS NULL OR metric_type = $2)
ORDER BY timestamp, id"""
#: The crate's aggregate: one row per agent and unit, its values as one array (summed exactly
#: by the caller).
AGGREGATE_VALUES_BY_AGENT = """
SELECT agent_id, unit, count(*), min(value), max(value), max(timestamp), array_agg(value)
FROM metrics WHERE metric_type = $1 AND timestamp >= $2 AND timestamp <= $3
GROUP BY agent_id, unit"""

METRIC_ROWS = """
SELECT agent_id, unit, tags, value, timestamp FROM metrics
WHERE metric_type = $1 AND timestamp >= $2 AND timestamp <= $3"""

# --- maintenance ---------------------------------------------------------------------------

PRUNE_EVENTS = (
    "WITH d AS (DELETE FROM events WHERE timestamp < $1 RETURNING 1) SELECT count(*) FROM d"
)
PRUNE_METRICS = (
    "WITH d AS (DELETE FROM metrics WHERE timestamp < $1 RETURNING 1) SELECT count(*) FROM d"
)
PRUNE_MESSAGES = """
WITH d AS (DELETE FROM messages WHERE read = 1 AND COALESCE(read_at, 0) < $1
    AND read_at IS NOT NULL RETURNING 1)
SELECT count(*) FROM d"""
# Schedules.
SCHEDULE_COLS: Final = (
    "name", "spec", "timezone", "missed", "template", "paused", "next_due", "last_due",
    "created_at", "updated_at",
)  # fmt: skip
_S = _cols(SCHEDULE_COLS)
#: Store or redefine: the timing decides whether next_due moves (see Engine.put_schedule).
PUT_SCHEDULE = f"""
INSERT INTO schedules ({_S}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (name) DO UPDATE SET missed = EXCLUDED.missed, template = EXCLUDED.template,
    updated_at = EXCLUDED.updated_at,
    next_due = CASE WHEN (schedules.spec, schedules.timezone) = (EXCLUDED.spec, EXCLUDED.timezone)
        THEN schedules.next_due ELSE EXCLUDED.next_due END,
    spec = EXCLUDED.spec, timezone = EXCLUDED.timezone
RETURNING {_S}"""
RESTORE_SCHEDULE = f"""
INSERT INTO schedules ({_S}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (name) DO NOTHING RETURNING name"""
GET_SCHEDULE = f"SELECT {_S} FROM schedules WHERE name = $1"
LIST_SCHEDULES = f"SELECT {_S} FROM schedules ORDER BY name"
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = $1"
SET_SCHEDULE_PAUSED = f"""
UPDATE schedules SET paused = $2, next_due = COALESCE($3::bigint, next_due), updated_at = $4
WHERE name = $1 RETURNING {_S}"""
#: The compare-and-set that fires a due time once (a second firer waits for the row lock,
#: then finds next_due moved on).
FIRE_SCHEDULE = """
UPDATE schedules SET next_due = $3, last_due = COALESCE($4::bigint, last_due), updated_at = $5
WHERE name = $1 AND next_due = $2 AND paused = 0 RETURNING 1"""

# Retention: a count threshold is the newest row beyond the count kept; a cut (``Cut.bound``)
# removes rows up to ($1, $2) on (time, id), or before $1 when $2 is NULL: one index range.
EVENT_KEEP_THRESHOLD = "SELECT sequence FROM events ORDER BY sequence DESC LIMIT 1 OFFSET $1"
#: Events go by timestamp or by sequence: two indexes, a row goes when either says so.
RETAIN_EVENTS = """
WITH d AS (DELETE FROM events WHERE timestamp < $1::bigint OR sequence <= $2::bigint
    RETURNING 1)
SELECT count(*) FROM d"""
METRIC_KEEP_THRESHOLD = (
    "SELECT timestamp, id FROM metrics ORDER BY timestamp DESC, id DESC LIMIT 1 OFFSET $1"
)
RETAIN_METRICS = """
WITH d AS (DELETE FROM metrics
    WHERE timestamp <= $1::bigint AND (timestamp < $1::bigint OR id <= $2::text) RETURNING 1)
SELECT count(*) FROM d"""
MESSAGE_KEEP_THRESHOLD = """
SELECT COALESCE(read_at, 0), id FROM messages WHERE read = 1
ORDER BY COALESCE(read_at, 0) DESC, id DESC LIMIT 1 OFFSET $1"""
RETAIN_MESSAGES = """
WITH d AS (DELETE FROM messages WHERE read = 1 AND COALESCE(read_at, 0) <= $1::bigint
    AND (COALESCE(read_at, 0) < $1::bigint OR id <= $2::text) RETURNING 1)
SELECT count(*) FROM d"""
TASK_KEEP_THRESHOLD = """
SELECT COALESCE(completed_at, 0), id FROM tasks WHERE status = 'completed'
ORDER BY COALESCE(completed_at, 0) DESC, id DESC LIMIT 1 OFFSET $1"""
_UNPINNED = """NOT EXISTS (SELECT 1 FROM task_dependencies AS d JOIN tasks AS c ON c.id = d.task_id
    WHERE d.depends_on = tasks.id AND c.status NOT IN ('completed', 'cancelled'))"""
#: Completed tasks a cut removes that no dependent which may still run needs, locked.
LOCK_RETAINED_TASKS = f"""
SELECT id FROM tasks WHERE status = 'completed' AND COALESCE(completed_at, 0) <= $1::bigint
    AND (COALESCE(completed_at, 0) < $1::bigint OR id <= $2::text) AND {_UNPINNED}
ORDER BY id FOR UPDATE"""
#: Of the locked ones, those still unneeded: a dependent stored meanwhile committed first.
STILL_UNPINNED = f"SELECT id FROM tasks WHERE id = ANY ($1::text[]) AND {_UNPINNED}"
DELETE_EDGES_TO = "DELETE FROM task_dependencies WHERE depends_on = ANY ($1::text[])"
DELETE_TASKS = "DELETE FROM tasks WHERE id = ANY ($1::text[])"
RETENTION_RECORD = "SELECT name, value FROM swarm_counters WHERE name LIKE 'retention.%'"
ADD_TO_RECORD = """
INSERT INTO swarm_counters (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET value = swarm_counters.value + EXCLUDED.value"""
#: The record replaced whole by names $1 and values $2 (its other names go).
SET_RECORD = """
WITH cleared AS (
    DELETE FROM swarm_counters WHERE name LIKE 'retention.%' AND name <> ALL ($1::text[])
)
INSERT INTO swarm_counters (name, value) SELECT * FROM unnest($1::text[], $2::bigint[])
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"""
SET_IN_RECORD = """
INSERT INTO swarm_counters (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"""
STORAGE_SIZE = """
SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::int8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname = ANY ($2::text[])"""

#: Vacuum and analyze every table (not allowed inside a transaction: then only ANALYZE).
VACUUM = f"VACUUM (ANALYZE) {', '.join(TABLES)}"
ANALYZE = f"ANALYZE {', '.join(TABLES)}"
#: Needs superuser or the ``pg_checkpoint`` role; without them, ``PING`` stands in.
CHECKPOINT = "CHECKPOINT"
#: Does the server answer?
PING = "SELECT 1"
