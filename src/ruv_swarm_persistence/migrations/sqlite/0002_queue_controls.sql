-- Queue controls: deduplication, concurrency limits and rate limits.
--
-- A task's dedup_key is held while the task is unfinished: the unique partial index lets no
-- two unfinished tasks share one. Its concurrency_key names the limits its claims obey.
ALTER TABLE tasks ADD COLUMN dedup_key TEXT;
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
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
