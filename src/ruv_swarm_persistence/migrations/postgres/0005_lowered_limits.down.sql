-- Undoes 0005_lowered_limits: queue_slot as 0002_queue_controls made it.
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
