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
