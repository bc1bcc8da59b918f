-- A concurrency limit lowered below the tasks its key holds: the tasks held in slots past
-- the new limit (or without a slot, held before the limit was set) count against it, and
-- two claims beside each other must each see the other's. queue_slot makes the key's claims
-- take turns while such tasks are held (as a rate limit's claims always do); once they are
-- done, claims take slots side by side again.
CREATE OR REPLACE FUNCTION queue_slot(claim_key TEXT, claim_now BIGINT) RETURNS INTEGER
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
    -- Held tasks without a slot below the limit (held from before it, or past a lowered
    -- one) are counted, not locked: claims beside each other would each count without the
    -- other's. While there are any, the key's claims take turns.
    IF EXISTS (SELECT 1 FROM tasks WHERE concurrency_key = claim_key
                   AND status IN ('assigned', 'running')
                   AND (concurrency_slot IS NULL OR concurrency_slot >= lim.max_running)) THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('queue_limits:' || claim_key, 0));
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
