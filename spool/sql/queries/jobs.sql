-- Executors and fold jobs: register, heartbeat, claim, complete, hand back, reap.

-- name: executor_register
INSERT INTO executors (host, pid, queues, workers, version, limits)
VALUES (%(host)s, %(pid)s, %(queues)s, %(workers)s, %(version)s, %(limits)s)
RETURNING id;

-- name: executor_heartbeat
-- Also answers which of our jobs are still ours: a job reaped or cancelled since
-- is missing here, and its fold is stopped.
WITH beat AS (
    UPDATE executors SET heartbeat_at = now(), workers = %(workers)s
    WHERE id = %(executor)s AND state IN ('running', 'stopping')
    RETURNING id
)
SELECT j.id, j.attempts
FROM jobs j JOIN beat ON j.executor_id = beat.id
WHERE j.state = 'running';

-- name: executor_alive
SELECT state FROM executors WHERE id = %(executor)s;

-- name: executor_stopping
UPDATE executors SET state = 'stopping' WHERE id = %(executor)s AND state = 'running';

-- name: executor_stopped
UPDATE executors SET state = 'stopped', stopped_at = now(), heartbeat_at = now()
WHERE id = %(executor)s;

-- name: jobs_claim
-- One committed statement: lock the next queued jobs (high before low, then by turn,
-- which interleaves teams, then oldest) skipping rows other executors hold, mark them
-- ours with the next attempt number.
-- What the fold needs about its submission comes from `submission_info`, cached.
-- Each claim opens the job's row in `attempts`.
WITH next AS (
    SELECT id FROM jobs
    WHERE state = 'queued' AND priority = ANY(%(priorities)s)
    ORDER BY priority, turn, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
UPDATE jobs j
SET state = 'running', attempts = j.attempts + 1, executor_id = %(executor)s,
    claimed_at = now(), finished_at = NULL, error = NULL, error_detail = NULL,
    exit_status = NULL
FROM next WHERE j.id = next.id
RETURNING j.id, j.submission_id, j.fold, j.attempts AS attempt, j.queue
), opened AS (
    INSERT INTO attempts (job_id, attempt, executor_id)
    SELECT id, attempt, %(executor)s FROM claimed
)
SELECT id, submission_id, fold, attempt, queue FROM claimed;

-- name: submission_info
-- Immutable once registered, so executors cache it.
SELECT s.id AS submission_id, s.store_path AS submission_path,
       s.name AS submission, s.team, s.version,
       d.id AS dataset_id, d.name AS dataset, d.store_path AS dataset_path,
       d.workflow, d.task, d.kind, d.summary, d.manifest->>'target' AS target,
       d.manifest->'scores' AS scores
FROM submissions s JOIN datasets d ON d.id = s.dataset_id
WHERE s.id = %(submission_id)s;

-- name: job_complete
-- Fenced: only the executor holding this very attempt completes it, predicted (no
-- error) or failed. Like every statement that ends an attempt, it closes the job's
-- open row in `attempts` and returns the job's id (none: the attempt was no longer
-- ours). A failure leaves what an earlier attempt predicted as it was.
WITH done AS (
UPDATE jobs
SET state = CASE WHEN %(error)s::text IS NULL THEN 'predicted' ELSE 'failed' END,
    finished_at = now(), error = %(error)s, error_detail = %(detail)s,
    prediction_path = CASE WHEN %(error)s::text IS NULL THEN %(prediction_path)s
                           ELSE prediction_path END,
    train_seconds = CASE WHEN %(error)s::text IS NULL THEN %(train_seconds)s
                         ELSE train_seconds END,
    valid_seconds = CASE WHEN %(error)s::text IS NULL THEN %(valid_seconds)s
                         ELSE valid_seconds END,
    test_seconds = CASE WHEN %(error)s::text IS NULL THEN %(test_seconds)s
                        ELSE test_seconds END,
    log_path = %(log_path)s, cpu_seconds = %(cpu_seconds)s,
    peak_rss_bytes = %(peak_rss_bytes)s, exit_status = %(exit_status)s
WHERE id = %(id)s AND attempts = %(attempt)s AND executor_id = %(executor)s
  AND state = 'running'
RETURNING id, state, finished_at, error, exit_status, cpu_seconds, peak_rss_bytes
), closed AS (
    UPDATE attempts a
    SET outcome = done.state, finished_at = done.finished_at, reason = done.error,
        exit_status = done.exit_status, cpu_seconds = done.cpu_seconds,
        peak_rss_bytes = done.peak_rss_bytes
    FROM done WHERE a.job_id = done.id AND a.finished_at IS NULL
)
SELECT id FROM done;

-- name: job_hand_back
-- A clean stop gives the job back without counting an attempt.
WITH done AS (
UPDATE jobs
SET state = 'queued', attempts = attempts - 1, executor_id = NULL, claimed_at = NULL
WHERE id = %(id)s AND attempts = %(attempt)s AND executor_id = %(executor)s
  AND state = 'running'
RETURNING id
), closed AS (
    UPDATE attempts a SET outcome = 'handed back', finished_at = now()
    FROM done WHERE a.job_id = done.id AND a.finished_at IS NULL
)
SELECT id FROM done;

-- name: job_requeue
-- The machine's fault, not the fold's (its runner died, a result it could not keep):
-- the attempt counts, and the job runs again, or fails once it used them all.
WITH done AS (
UPDATE jobs
SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
    error = CASE WHEN attempts >= max_attempts
                 THEN format('%%s; given up after %%s attempts', %(error)s::text, attempts)
                 ELSE error END,
    exit_status = CASE WHEN attempts >= max_attempts THEN %(exit_status)s ELSE NULL END,
    finished_at = CASE WHEN attempts >= max_attempts THEN now() ELSE NULL END,
    executor_id = CASE WHEN attempts >= max_attempts THEN executor_id ELSE NULL END,
    claimed_at = CASE WHEN attempts >= max_attempts THEN claimed_at ELSE NULL END
WHERE id = %(id)s AND attempts = %(attempt)s AND executor_id = %(executor)s
  AND state = 'running'
RETURNING id, state, queue
), closed AS (
    UPDATE attempts a
    SET outcome = CASE done.state WHEN 'failed' THEN 'failed' ELSE 'requeued' END,
        finished_at = now(), reason = %(error)s, exit_status = %(exit_status)s
    FROM done WHERE a.job_id = done.id AND a.finished_at IS NULL
)
SELECT state, queue FROM done;

-- name: executors_mark_lost
-- Executors silent for longer than the lease.
UPDATE executors SET state = 'lost'
WHERE state IN ('running', 'stopping')
  AND heartbeat_at < now() - make_interval(secs => %(lease_seconds)s)
RETURNING id, host, pid;

-- name: jobs_reap
-- Jobs held by lost executors: queued again for their next attempt, or failed once
-- they used all their attempts.
WITH done AS (
UPDATE jobs j
SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'queued' END,
    error = CASE WHEN j.attempts >= j.max_attempts
                 THEN format('its executor (%%s pid %%s) stopped answering on attempt %%s of %%s',
                             e.host, e.pid, j.attempts, j.max_attempts)
                 ELSE j.error END,
    finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() ELSE NULL END,
    executor_id = CASE WHEN j.attempts >= j.max_attempts THEN j.executor_id ELSE NULL END,
    claimed_at = CASE WHEN j.attempts >= j.max_attempts THEN j.claimed_at ELSE NULL END
FROM executors e
WHERE e.id = j.executor_id AND e.state = 'lost' AND j.state = 'running'
RETURNING j.id, j.state, j.queue, e.host, e.pid
), closed AS (
    UPDATE attempts a
    SET outcome = CASE done.state WHEN 'failed' THEN 'failed' ELSE 'requeued' END,
        finished_at = now(),
        reason = format('its executor (%%s pid %%s) stopped answering', done.host, done.pid)
    FROM done WHERE a.job_id = done.id AND a.finished_at IS NULL
)
SELECT id, state, queue FROM done;
