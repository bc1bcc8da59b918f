-- Undoes 0002_queue_controls: drops the limits and the task keys (and with them their data).
DROP FUNCTION queue_slot(TEXT, BIGINT);
DROP TABLE queue_claims;
DROP TABLE queue_limits;
DROP INDEX tasks_held_by_key;
DROP INDEX tasks_by_dedup_key;
ALTER TABLE tasks DROP COLUMN concurrency_slot, DROP COLUMN concurrency_key, DROP COLUMN dedup_key;
