-- Undoes 0004_indexes: the indexes as 0001_initial made them.
DROP INDEX tasks_blocked;
CREATE INDEX tasks_pending ON tasks (priority DESC, created_at, id) WHERE status = 'pending';
DROP INDEX metrics_by_time;
CREATE INDEX metrics_by_time ON metrics (timestamp);
DROP INDEX messages_read;
CREATE INDEX messages_read_at ON messages (read_at) WHERE read = 1;
DROP INDEX tasks_completed;
DROP INDEX tasks_failed_by_type;
DROP INDEX tasks_failed;
