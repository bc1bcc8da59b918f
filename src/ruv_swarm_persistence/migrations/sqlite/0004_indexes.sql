-- Indexes for dead letters and retention, each partial to the rows its queries read, and
-- one index fewer for every pending task.
--
-- Dead letters, newest failure first (of all types, or of one): a task failed without a
-- completion time counts as failed at the epoch, so the order is by that expression.
CREATE INDEX tasks_failed ON tasks (coalesce(completed_at, 0), id) WHERE status = 'failed';
CREATE INDEX tasks_failed_by_type ON tasks (task_type, coalesce(completed_at, 0), id)
    WHERE status = 'failed';
-- Retention of completed tasks, by completion time (the epoch when there is none).
CREATE INDEX tasks_completed ON tasks (coalesce(completed_at, 0), id)
    WHERE status = 'completed';
-- Retention of read messages, by read time (the epoch when there is none); pruning by read
-- time reads it too, so it replaces the index on read_at.
DROP INDEX messages_read_at;
CREATE INDEX messages_read ON messages (coalesce(read_at, 0), id) WHERE read = 1;
-- Retention of metrics by time, ties by id: the id joins the index on time.
DROP INDEX metrics_by_time;
CREATE INDEX metrics_by_time ON metrics (timestamp, id);
-- Pending tasks, ready ones aside: a blocked task (dependencies unfinished) is in this index
-- and a ready one in the claim's, so the list of pending tasks merges the two (in order) and
-- a task needs no third index while it waits.
DROP INDEX tasks_pending;
CREATE INDEX tasks_blocked ON tasks (priority DESC, created_at, id)
    WHERE status = 'pending' AND unfinished_deps != 0;
