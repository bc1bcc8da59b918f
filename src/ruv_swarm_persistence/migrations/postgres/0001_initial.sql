-- The swarm's tables on PostgreSQL.
--
-- Times are BIGINT microseconds since the epoch (as on SQLite): exact to the microsecond and
-- compared as integers. JSON fields are jsonb. Every text column uses the "C" collation, so
-- ordering and comparisons are by code point, the same as the memory and SQLite backends,
-- whatever the database's locale.

CREATE TABLE agents (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL,
    agent_type   TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    capabilities JSONB NOT NULL,
    metadata     JSONB NOT NULL,
    heartbeat    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX agents_by_created ON agents (created_at, id);
CREATE INDEX agents_by_status ON agents (status, created_at, id);
CREATE INDEX agents_by_heartbeat ON agents (heartbeat, id);

-- unfinished_deps counts dependencies not yet completed; a task is ready when it is pending,
-- the count is zero and run_after has passed. stored_order keeps the order tasks were stored.
CREATE TABLE tasks (
    id               TEXT COLLATE "C" PRIMARY KEY,
    task_type        TEXT COLLATE "C" NOT NULL,
    priority         SMALLINT NOT NULL,
    status           TEXT COLLATE "C" NOT NULL,
    assigned_to      TEXT COLLATE "C",
    payload          JSONB NOT NULL,
    result           JSONB,
    error            TEXT COLLATE "C",
    retry_count      INTEGER NOT NULL,
    max_retries      INTEGER NOT NULL,
    dependencies     JSONB NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    lease_expires_at BIGINT,
    run_after        BIGINT,
    unfinished_deps  INTEGER NOT NULL DEFAULT 0,
    stored_order     BIGINT GENERATED ALWAYS AS IDENTITY
);
-- The claim: highest priority, oldest first, among ready tasks.
CREATE INDEX tasks_ready ON tasks (priority DESC, created_at, id)
    WHERE status = 'pending' AND unfinished_deps = 0;
CREATE INDEX tasks_pending ON tasks (priority DESC, created_at, id) WHERE status = 'pending';
-- Leases of held tasks, earliest first: every task write checks the first one has not run out.
CREATE INDEX tasks_by_lease ON tasks (lease_expires_at) WHERE status IN ('assigned', 'running');
CREATE INDEX tasks_by_agent ON tasks (assigned_to, priority DESC, created_at, id)
    WHERE assigned_to IS NOT NULL;

-- One row per dependency; position keeps the order dependents were recorded in.
CREATE TABLE task_dependencies (
    depends_on TEXT COLLATE "C" NOT NULL REFERENCES tasks (id),
    task_id    TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    position   BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (depends_on, position)
);
CREATE INDEX task_dependencies_by_task ON task_dependencies (task_id);

-- sequence is assigned from swarm_counters under its row lock, so sequences are gapless and
-- commit in order: a reader following read_events(after=N) never misses a later commit.
CREATE TABLE events (
    sequence   BIGINT PRIMARY KEY,
    id         TEXT COLLATE "C" NOT NULL UNIQUE,
    event_type TEXT COLLATE "C" NOT NULL,
    agent_id   TEXT COLLATE "C",
    task_id    TEXT COLLATE "C",
    payload    JSONB NOT NULL,
    metadata   JSONB NOT NULL,
    timestamp  BIGINT NOT NULL
);
CREATE INDEX events_by_agent ON events (agent_id, timestamp DESC, sequence DESC)
    WHERE agent_id IS NOT NULL;
CREATE INDEX events_by_type ON events (event_type, timestamp DESC, sequence DESC);
CREATE INDEX events_by_time ON events (timestamp, sequence);

CREATE TABLE messages (
    id           TEXT COLLATE "C" PRIMARY KEY,
    from_agent   TEXT COLLATE "C" NOT NULL,
    to_agent     TEXT COLLATE "C" NOT NULL,
    message_type TEXT COLLATE "C" NOT NULL,
    content      JSONB NOT NULL,
    priority     SMALLINT NOT NULL,
    read         SMALLINT NOT NULL,
    created_at   BIGINT NOT NULL,
    read_at      BIGINT
);
CREATE INDEX messages_unread ON messages (to_agent, priority DESC, created_at, id) WHERE read = 0;
CREATE INDEX messages_by_pair ON messages (from_agent, to_agent, created_at, id);
CREATE INDEX messages_by_recipient ON messages (to_agent, created_at);
CREATE INDEX messages_read_at ON messages (read_at) WHERE read = 1;

CREATE TABLE metrics (
    id          TEXT COLLATE "C" PRIMARY KEY,
    metric_type TEXT COLLATE "C" NOT NULL,
    agent_id    TEXT COLLATE "C",
    value       DOUBLE PRECISION NOT NULL,
    unit        TEXT COLLATE "C" NOT NULL,
    tags        JSONB NOT NULL,
    timestamp   BIGINT NOT NULL
);
CREATE INDEX metrics_by_type ON metrics (metric_type, timestamp);
CREATE INDEX metrics_by_agent ON metrics (agent_id, metric_type, timestamp, id);
CREATE INDEX metrics_by_time ON metrics (timestamp);

CREATE TABLE swarm_counters (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO swarm_counters (name, value) VALUES ('events', 0);
