-- Queue controls: deduplication, concurrency limits and rate limits.
--
-- A task's dedup_key is held while the task is unfinished: the unique partial index lets no
-- two unfinished tasks share one. Its concurrency_key names the limits its claims obey.
ALTER TABLE tasks
    ADD COLUMN dedup_key       TEXT COLLATE "C",
    ADD COLUMN concurrency_key TEXT COLLATE "C";
CREATE UNIQUE INDEX tasks_by_dedup_key ON tasks (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'assigned', 'running');
-- The claim counts a key's held tasks against its limit.
CREATE INDEX tasks_held_by_key ON tasks (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('assigned', 'running');

-- One row per key with a limit: at most max_running held at once, at most rate_limit claims
-- in any window of rate_period microseconds (NULL: no such limit).
CREATE TABLE queue_limits (
    key         TEXT COLLATE "C" PRIMARY KEY,
    max_running INTEGER,
    rate_limit  INTEGER,
    rate_period BIGINT
);

-- The claims of rate-limited keys within their window (older ones are deleted as it moves).
CREATE TABLE queue_claims (
    key        TEXT COLLATE "C" NOT NULL,
    claimed_at BIGINT NOT NULL
);
CREATE INDEX queue_claims_by_key ON queue_claims (key, claimed_at);

-- Whether a key's limits admit one more claim at claim_now, asked by the claim for a task of
-- a limited key. The key's advisory lock, held until the claiming transaction ends, makes
-- claims of one key take turns; and a VOLATILE function reads with a fresh snapshot for each
-- statement, so the count below sees every claim committed by the key's previous holder.
CREATE FUNCTION queue_admits(claim_key TEXT, claim_now BIGINT) RETURNS BOOLEAN
LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('queue_limits:' || claim_key, 0))
    FROM queue_limits WHERE key = claim_key;
    SELECT NOT EXISTS (
        SELECT 1 FROM queue_limits AS l
        WHERE l.key = claim_key AND (
            (l.max_running IS NOT NULL AND l.max_running <= (
                SELECT count(*) FROM tasks AS h
                WHERE h.concurrency_key = claim_key AND h.status IN ('assigned', 'running')))
            OR (l.rate_limit IS NOT NULL AND l.rate_limit <= (
                SELECT count(*) FROM queue_claims AS c
                WHERE c.key = claim_key AND c.claimed_at > claim_now - l.rate_period))));
$$;
