-- An executor's heartbeat reports the workers it has alive, which may be none for a
-- moment (a worker that died is restarted): the row must not claim capacity it lacks.
ALTER TABLE executors DROP CONSTRAINT executors_workers_check;
ALTER TABLE executors ADD CONSTRAINT executors_workers_check CHECK (workers >= 0);
