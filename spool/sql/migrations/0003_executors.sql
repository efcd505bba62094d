-- Executors record their limits; jobs record how their fold process ended.

ALTER TABLE executors ADD COLUMN limits jsonb NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN exit_status text;
-- The reaper looks for running jobs of executors by heartbeat age.
CREATE INDEX jobs_running_idx ON jobs (executor_id, id) WHERE state = 'running';
DROP INDEX jobs_executor_idx;
