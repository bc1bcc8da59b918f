-- Indexes for dead letters and retention, each partial to the rows its queries read.
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
