-- Queue controls: deduplication, concurrency limits and rate limits.
--
-- A task's dedup_key is held while the task is unfinished: the unique partial index lets no
-- two unfinished tasks share one. Its concurrency_key names the limits its claims obey.
ALTER TABLE tasks
    ADD COLUMN dedup_key        TEXT COLLATE "C",
    ADD COLUMN concurrency_key  TEXT COLLATE "C",
    ADD COLUMN concurrency_slot INTEGER;
CREATE UNIQUE INDEX tasks_by_dedup_key ON tasks (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'assigned', 'running');
-- The claim counts a key's held tasks against its limit, and finds the slots they hold.
CREATE INDEX tasks_held_by_key ON tasks (concurrency_key, concurrency_slot)
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

-- The slot a claim of a task of a limited key takes: NULL when the key's limits admit no
-- claim now, -1 when its key has no concurrency limit (nor slots). A concurrency limit of n
-- is n slots, each a transaction-scoped advisory lock taken without waiting, so up to n claims
-- of a key run side by side; a slot is free when no held task of the key records it, which a
-- VOLATILE function reads with a fresh snapshot for each statement, after taking the lock:
-- it sees the claim of whoever held the slot before. A rate limit makes the key's claims take
-- turns on one lock instead, and counts the claims in its window.
CREATE FUNCTION queue_slot(claim_key TEXT, claim_now BIGINT) RETURNS INTEGER
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lim RECORD;
BEGIN
    SELECT max_running, rate_limit, rate_period INTO lim FROM queue_limits WHERE key = claim_key;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    IF lim.rate_limit IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('queue_limits:' || claim_key, 0));
        IF lim.rate_limit <= (SELECT count(*) FROM queue_claims
                              WHERE key = claim_key AND claimed_at > claim_now - lim.rate_period)
        THEN
            RETURN NULL;
        END IF;
    END IF;
    IF lim.max_running IS NULL THEN
        RETURN -1;
    END IF;
    FOR slot IN 0 .. lim.max_running - 1 LOOP
        IF pg_try_advisory_xact_lock(hashtextextended('queue_slot:' || claim_key, slot)) THEN
            IF NOT EXISTS (SELECT 1 FROM tasks
                           WHERE concurrency_key = claim_key AND concurrency_slot = slot
                               AND status IN ('assigned', 'running')) THEN
                -- Tasks held from before the limit (without a slot) count too.
                IF lim.max_running <= (SELECT count(*) FROM tasks
                                       WHERE concurrency_key = claim_key
                                           AND status IN ('assigned', 'running')) THEN
                    RETURN NULL;
                END IF;
                RETURN slot;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
