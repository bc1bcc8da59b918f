-- Undoes 0003_schedules: drops the schedules (the tasks they enqueued stay).
DROP TABLE schedules;
