-- Every attempt of a fold, kept: a claim clears the job's error, so until now the
-- reason of an earlier attempt was lost. One row per claim, written by the same
-- statement that claims or completes the job (spool/sql/queries/jobs.sql, sweep.sql).
-- `attempt` is the job's counter at the time; `datarun retry` starts it again at 1,
-- so rows are ordered by id, not by attempt.
CREATE TABLE attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          bigint NOT NULL REFERENCES jobs (id),
    attempt         integer NOT NULL CHECK (attempt >= 1),
    executor_id     bigint REFERENCES executors (id),
    claimed_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    outcome         text NOT NULL DEFAULT 'running' CHECK (outcome IN (
                        'running',      -- claimed, not finished
                        'predicted',    -- the fold wrote its predictions
                        'scored',       -- and the master scored them
                        'failed',       -- the fold's fault, or its last attempt
                        'requeued',     -- the machine's fault: the job runs again
                        'handed back',  -- a clean stop: the attempt did not count
                        'cancelled')),
    reason          text,              -- one line, for failed and requeued
    exit_status     text,
    cpu_seconds     double precision,
    peak_rss_bytes  bigint
);
CREATE INDEX attempts_job ON attempts (job_id, id);
-- The open attempt a completion closes (a stale one, if any, closes with it).
CREATE INDEX attempts_open ON attempts (job_id) WHERE finished_at IS NULL;

-- What the jobs table knows of the attempts made before this migration: the last one.
INSERT INTO attempts (job_id, attempt, executor_id, claimed_at, finished_at, outcome,
                      reason, exit_status, cpu_seconds, peak_rss_bytes)
SELECT id, attempts, executor_id, claimed_at,
       CASE WHEN state = 'running' THEN NULL ELSE coalesce(finished_at, claimed_at) END,
       CASE state WHEN 'queued' THEN 'requeued' ELSE state END,
       error, exit_status, cpu_seconds, peak_rss_bytes
FROM jobs
WHERE attempts >= 1 AND claimed_at IS NOT NULL
ORDER BY id;

-- Each attempt with where it ran, newest job first; `try` counts a job's attempts
-- across retries (1, 2, 3...).
CREATE VIEW job_attempts AS
SELECT l.dataset, l.label, j.fold, j.id AS job,
       row_number() OVER (PARTITION BY a.job_id ORDER BY a.id) AS try,
       a.attempt, a.outcome, a.reason, a.exit_status, a.claimed_at, a.finished_at,
       round(extract(epoch FROM a.finished_at - a.claimed_at)::numeric, 3) AS seconds,
       a.cpu_seconds, a.peak_rss_bytes, e.host, e.pid
FROM attempts a
JOIN jobs j ON j.id = a.job_id
JOIN submission_labels l ON l.submission_id = j.submission_id
LEFT JOIN executors e ON e.id = a.executor_id;
