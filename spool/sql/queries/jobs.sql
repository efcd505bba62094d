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

-- name: submission_info
-- Immutable once registered, so executors cache it.
SELECT s.id AS submission_id, s.store_path AS submission_path,
       s.name AS submission, s.team, s.version,
       d.id AS dataset_id, d.name AS dataset, d.store_path AS dataset_path,
       d.workflow, d.task, d.kind, d.summary, d.manifest->>'target' AS target,
       d.manifest->'scores' AS scores
FROM submissions s JOIN datasets d ON d.id = s.dataset_id
WHERE s.id = %(submission_id)s;

-- name: jobs_settle
-- One round trip: complete the attempts that ended, each fenced on its own attempt
-- ('completed' rows; missing: no longer ours), then claim the next queued jobs by
-- priority, turn (interleaving teams), id, skipping others' locks.
WITH ended AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::int[], %(errors)s::text[], %(details)s::text[],
        %(prediction_paths)s::text[], %(log_paths)s::text[], %(train)s::float8[],
        %(valid)s::float8[], %(test)s::float8[], %(cpu)s::float8[], %(peak)s::bigint[],
        %(exit_statuses)s::text[]
    ) AS e(id, attempt, error, detail, prediction_path, log_path, train_seconds,
           valid_seconds, test_seconds, cpu_seconds, peak_rss_bytes, exit_status)
), done AS (
UPDATE jobs j
SET state = CASE WHEN e.error IS NULL THEN 'predicted' ELSE 'failed' END,
    finished_at = now(), error = e.error, error_detail = e.detail,
    prediction_path = CASE WHEN e.error IS NULL THEN e.prediction_path
                           ELSE j.prediction_path END,
    train_seconds = CASE WHEN e.error IS NULL THEN e.train_seconds ELSE j.train_seconds END,
    valid_seconds = CASE WHEN e.error IS NULL THEN e.valid_seconds ELSE j.valid_seconds END,
    test_seconds = CASE WHEN e.error IS NULL THEN e.test_seconds ELSE j.test_seconds END,
    log_path = e.log_path, cpu_seconds = e.cpu_seconds,
    peak_rss_bytes = e.peak_rss_bytes, exit_status = e.exit_status
FROM ended e
WHERE j.id = e.id AND j.attempts = e.attempt AND j.executor_id = %(executor)s
  AND j.state = 'running'
RETURNING j.id, j.state, j.finished_at, j.error, j.exit_status, j.cpu_seconds,
          j.peak_rss_bytes
), closed AS (
    UPDATE attempts a
    SET outcome = done.state, finished_at = done.finished_at, reason = done.error,
        exit_status = done.exit_status, cpu_seconds = done.cpu_seconds,
        peak_rss_bytes = done.peak_rss_bytes
    FROM done WHERE a.job_id = done.id AND a.finished_at IS NULL
), next AS MATERIALIZED (  -- locked once, as in jobs_settle_shared
    SELECT id, submission_id, priority FROM jobs
    WHERE state = 'queued' AND priority = ANY(%(priorities)s::smallint[])
    ORDER BY priority, turn, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
UPDATE jobs j
SET state = 'running', attempts = j.attempts + 1, executor_id = %(executor)s,
    claimed_at = now(), finished_at = NULL, error = NULL, error_detail = NULL,
    exit_status = NULL
FROM next c WHERE j.id = c.id
RETURNING j.id, j.submission_id, j.fold, j.attempts AS attempt, j.queue
), opened AS (
    INSERT INTO attempts (job_id, attempt, executor_id)
    SELECT id, attempt, %(executor)s FROM claimed
)
SELECT 'claimed' AS kind, c.id, c.submission_id, c.fold, c.attempt, c.queue,
       false AS shared
FROM claimed c
UNION ALL
SELECT 'completed', id, NULL, NULL, NULL, NULL, NULL FROM done;

-- name: jobs_settle_shared
-- jobs_settle (its text up to `next` must stay the same: a test compares them), where
-- a head job of a submission with short folds (all done under short_seconds; none
-- done: in `short`, or its dataset says so; never in `long`) brings up to share - 1
-- more of its queued folds: one turn, so fair share holds.
WITH ended AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::int[], %(errors)s::text[], %(details)s::text[],
        %(prediction_paths)s::text[], %(log_paths)s::text[], %(train)s::float8[],
        %(valid)s::float8[], %(test)s::float8[], %(cpu)s::float8[], %(peak)s::bigint[],
        %(exit_statuses)s::text[]
    ) AS e(id, attempt, error, detail, prediction_path, log_path, train_seconds,
           valid_seconds, test_seconds, cpu_seconds, peak_rss_bytes, exit_status)
), done AS (
UPDATE jobs j
SET state = CASE WHEN e.error IS NULL THEN 'predicted' ELSE 'failed' END,
    finished_at = now(), error = e.error, error_detail = e.detail,
    prediction_path = CASE WHEN e.error IS NULL THEN e.prediction_path
                           ELSE j.prediction_path END,
    train_seconds = CASE WHEN e.error IS NULL THEN e.train_seconds ELSE j.train_seconds END,
    valid_seconds = CASE WHEN e.error IS NULL THEN e.valid_seconds ELSE j.valid_seconds END,
    test_seconds = CASE WHEN e.error IS NULL THEN e.test_seconds ELSE j.test_seconds END,
    log_path = e.log_path, cpu_seconds = e.cpu_seconds,
    peak_rss_bytes = e.peak_rss_bytes, exit_status = e.exit_status
FROM ended e
WHERE j.id = e.id AND j.attempts = e.attempt AND j.executor_id = %(executor)s
  AND j.state = 'running'
RETURNING j.id, j.state, j.finished_at, j.error, j.exit_status, j.cpu_seconds,
          j.peak_rss_bytes
), closed AS (
    UPDATE attempts a
    SET outcome = done.state, finished_at = done.finished_at, reason = done.error,
        exit_status = done.exit_status, cpu_seconds = done.cpu_seconds,
        peak_rss_bytes = done.peak_rss_bytes
    FROM done WHERE a.job_id = done.id AND a.finished_at IS NULL
), next AS (
    SELECT id, submission_id, priority FROM jobs
    WHERE state = 'queued' AND priority = ANY(%(priorities)s::smallint[])
    ORDER BY priority, turn, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), short AS (
    SELECT h.id, h.submission_id, h.priority FROM next h
    WHERE %(share)s > 1 AND NOT h.submission_id = ANY(%(long)s::bigint[]) AND COALESCE(
        (SELECT max(d.train_seconds + COALESCE(d.valid_seconds, 0)
                    + COALESCE(d.test_seconds, 0))
         FROM jobs d WHERE d.submission_id = h.submission_id
           AND d.state IN ('predicted', 'scored')) < %(short_seconds)s,
        h.submission_id = ANY(%(short)s::bigint[]) OR (
            SELECT t.manifest @> '{"cv": {"short_folds": true}}' FROM submissions s
            JOIN datasets t ON t.id = s.dataset_id WHERE s.id = h.submission_id))
), more AS (
    SELECT m.id FROM short h CROSS JOIN LATERAL (
        SELECT id FROM jobs m
        WHERE m.submission_id = h.submission_id AND m.state = 'queued'
          AND m.priority = h.priority AND m.id <> h.id
        ORDER BY m.id
        LIMIT %(share)s - 1
        FOR UPDATE SKIP LOCKED
    ) m
), claimed AS (
UPDATE jobs j
SET state = 'running', attempts = j.attempts + 1, executor_id = %(executor)s,
    claimed_at = now(), finished_at = NULL, error = NULL, error_detail = NULL,
    exit_status = NULL
FROM (SELECT id FROM next UNION SELECT id FROM more) c WHERE j.id = c.id
RETURNING j.id, j.submission_id, j.fold, j.attempts AS attempt, j.queue
), opened AS (
    INSERT INTO attempts (job_id, attempt, executor_id)
    SELECT id, attempt, %(executor)s FROM claimed
)
SELECT 'claimed' AS kind, c.id, c.submission_id, c.fold, c.attempt, c.queue,
       EXISTS (SELECT 1 FROM short s WHERE s.submission_id = c.submission_id) AS shared
FROM claimed c
UNION ALL
SELECT 'completed', id, NULL, NULL, NULL, NULL, NULL FROM done;

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
