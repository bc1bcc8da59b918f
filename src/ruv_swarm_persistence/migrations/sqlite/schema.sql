-- The current schema of the SQLite backend, as every migration in order leaves it.
-- Kept as data: a test builds a database from this file and one by running the
-- migrations, and finds them identical. Update it with each new migration.


CREATE TABLE agents (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    agent_type   TEXT NOT NULL,
    status       TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    heartbeat    INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX agents_by_created ON agents (created_at, id);
CREATE INDEX agents_by_status ON agents (status, created_at, id);
CREATE INDEX agents_by_heartbeat ON agents (heartbeat, id);

-- unfinished_deps counts dependencies not yet completed: a task is ready when it is pending,
-- the count is zero and run_after has passed. The rowid keeps the order tasks were stored.
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY NOT NULL,
    task_type        TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    status           TEXT NOT NULL,
    assigned_to      TEXT,
    payload          TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    retry_count      INTEGER NOT NULL,
    max_retries      INTEGER NOT NULL,
    dependencies     TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    lease_expires_at INTEGER,
    run_after        INTEGER,
    unfinished_deps  INTEGER NOT NULL DEFAULT 0
, dedup_key TEXT, concurrency_key TEXT);
-- The claim: highest priority, oldest first, among ready tasks (of some types).
CREATE INDEX tasks_ready ON tasks (priority DESC, created_at, id)
    WHERE status = 'pending' AND unfinished_deps = 0;
CREATE INDEX tasks_ready_by_type ON tasks (task_type, priority DESC, created_at, id)
    WHERE status = 'pending' AND unfinished_deps = 0;
-- Pending tasks not ready (0004): the list of pending tasks merges this and tasks_ready.
CREATE INDEX tasks_blocked ON tasks (priority DESC, created_at, id)
    WHERE status = 'pending' AND unfinished_deps != 0;
-- Leases to expire: only held tasks carry one.
CREATE INDEX tasks_by_lease ON tasks (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX tasks_by_agent ON tasks (assigned_to, priority DESC, created_at, id)
    WHERE assigned_to IS NOT NULL;

-- One row per dependency; the rowid keeps the order dependents were recorded in, which is
-- the order a cancellation cascades in.
CREATE TABLE task_dependencies (
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES tasks (id),
    UNIQUE (task_id, depends_on)
);
CREATE INDEX task_dependencies_by_parent ON task_dependencies (depends_on);

-- A completed task leaves its dependents one unfinished dependency fewer, in the statement
-- that completes it (so the count cannot drift, whatever wrote the status).
CREATE TRIGGER tasks_completed AFTER UPDATE OF status ON tasks
    WHEN NEW.status = 'completed' AND OLD.status != 'completed'
BEGIN
    UPDATE tasks SET unfinished_deps = unfinished_deps - 1
        WHERE id IN (SELECT task_id FROM task_dependencies WHERE depends_on = NEW.id);
END;

-- sequence is assigned by the single writer inside its write transaction, so it increases
-- strictly in commit order, across processes too; swarm_meta keeps the highest sequence
-- ever pruned, so a sequence is never handed out twice.
CREATE TABLE events (
    sequence   INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    agent_id   TEXT,
    task_id    TEXT,
    payload    TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    timestamp  INTEGER NOT NULL
);
CREATE INDEX events_by_agent ON events (agent_id, timestamp) WHERE agent_id IS NOT NULL;
CREATE INDEX events_by_type ON events (event_type, timestamp);
CREATE INDEX events_by_time ON events (timestamp);

CREATE TABLE messages (
    id           TEXT PRIMARY KEY NOT NULL,
    from_agent   TEXT NOT NULL,
    to_agent     TEXT NOT NULL,
    message_type TEXT NOT NULL,
    content      TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    read         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    read_at      INTEGER
);
CREATE INDEX messages_unread ON messages (to_agent, priority DESC, created_at, id) WHERE read = 0;
CREATE INDEX messages_by_pair ON messages (from_agent, to_agent, created_at, id);
CREATE INDEX messages_by_recipient ON messages (to_agent);
-- Read messages by read time (the epoch when there is none): pruning and retention (0004).
CREATE INDEX messages_read ON messages (coalesce(read_at, 0), id) WHERE read = 1;

CREATE TABLE metrics (
    id          TEXT PRIMARY KEY NOT NULL,
    metric_type TEXT NOT NULL,
    agent_id    TEXT,
    value       REAL NOT NULL,
    unit        TEXT NOT NULL,
    tags        TEXT NOT NULL,
    timestamp   INTEGER NOT NULL
);
CREATE INDEX metrics_by_type ON metrics (metric_type, timestamp);
CREATE INDEX metrics_by_agent ON metrics (agent_id, timestamp, id) WHERE agent_id IS NOT NULL;
CREATE INDEX metrics_by_time ON metrics (timestamp, id);

CREATE TABLE swarm_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Queue controls (0002): a dedup_key is held while its task is unfinished; a
-- concurrency_key names the limits its claims obey.
CREATE UNIQUE INDEX tasks_by_dedup_key ON tasks (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'assigned', 'running');
-- The claim counts a key's held tasks against its limit.
CREATE INDEX tasks_held_by_key ON tasks (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('assigned', 'running');

-- One row per key with a limit: at most max_running held at once, at most rate_limit claims
-- in any window of rate_period microseconds (NULL: no such limit).
CREATE TABLE queue_limits (
    key         TEXT PRIMARY KEY NOT NULL,
    max_running INTEGER,
    rate_limit  INTEGER,
    rate_period INTEGER
) WITHOUT ROWID;

-- The claims of rate-limited keys within their window (older ones are deleted as it moves).
CREATE TABLE queue_claims (
    key        TEXT NOT NULL,
    claimed_at INTEGER NOT NULL
);
CREATE INDEX queue_claims_by_key ON queue_claims (key, claimed_at);

-- Schedules: tasks enqueued at due times (a cron expression in a time zone, or an interval).
-- next_due is the next due time not yet fired; a scheduler fires it by moving it on in the
-- same transaction as the task's insert (a compare-and-set on next_due), so each due time
-- is enqueued once whichever process gets there first. template is the task's JSON.
CREATE TABLE schedules (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    timezone   TEXT NOT NULL,
    missed     TEXT NOT NULL,
    template   TEXT NOT NULL,
    paused     INTEGER NOT NULL,
    next_due   INTEGER NOT NULL,
    last_due   INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Dead letters and retention (0004): dead letters newest failure first (of all types, or of
-- one), completed tasks by completion time; a missing time counts as the epoch.
CREATE INDEX tasks_failed ON tasks (coalesce(completed_at, 0), id) WHERE status = 'failed';
CREATE INDEX tasks_failed_by_type ON tasks (task_type, coalesce(completed_at, 0), id)
    WHERE status = 'failed';
CREATE INDEX tasks_completed ON tasks (coalesce(completed_at, 0), id)
    WHERE status = 'completed';
