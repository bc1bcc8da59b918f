-- Undoes 0001_initial: drops every table of the swarm (and with them their data).
DROP TABLE swarm_meta;
DROP TABLE metrics;
DROP TABLE messages;
DROP TABLE events;
DROP TRIGGER tasks_completed;
DROP TABLE task_dependencies;
DROP TABLE tasks;
DROP TABLE agents;
