-- Schedules: tasks enqueued at due times (a cron expression in a time zone, or an interval).
-- next_due is the next due time not yet fired; a scheduler fires it by moving it on in the
-- same transaction as the task's insert (a compare-and-set on next_due, the row locked by
-- the UPDATE), so each due time is enqueued once whichever process gets there first.
-- template is the task's JSON, kept as text: it is read back exactly as written.
CREATE TABLE schedules (
    name       TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,
    timezone   TEXT NOT NULL,
    missed     TEXT NOT NULL,
    template   TEXT NOT NULL,
    paused     SMALLINT NOT NULL,
    next_due   BIGINT NOT NULL,
    last_due   BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
