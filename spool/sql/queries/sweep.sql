-- The sweeper: score predicted jobs, refresh results, retry and cancel.

-- name: sweeper_try_lock
-- One active sweeper per database, even when two masters run by mistake.
SELECT pg_try_advisory_lock(hashtext('datarun.sweeper')) AS locked;

-- name: jobs_to_score
SELECT j.id, j.fold, j.attempts AS attempt, j.prediction_path, j.submission_id,
       d.id AS dataset_id, d.store_path AS dataset_path, d.metrics, d.task, d.kind,
       d.manifest->>'target' AS target
FROM jobs j
JOIN submissions s ON s.id = j.submission_id
JOIN datasets d ON d.id = s.dataset_id
WHERE j.state = 'predicted'
ORDER BY j.id
LIMIT %(n)s;

-- name: score_insert
INSERT INTO scores (job_id, split, metric, value)
VALUES (%(job_id)s, %(split)s, %(metric)s, %(value)s)
ON CONFLICT DO NOTHING;

-- name: job_scored
-- Fenced like every completion: only the attempt whose file was scored. Its row in
-- `attempts` is the job's last one.
WITH done AS (
    UPDATE jobs SET state = 'scored', scored_at = now()
    WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'predicted'
    RETURNING id
)
UPDATE attempts a SET outcome = 'scored'
FROM done
WHERE a.id = (SELECT max(id) FROM attempts WHERE job_id = done.id);

-- name: job_unscorable
WITH done AS (
    UPDATE jobs SET state = 'failed', error = %(error)s, error_detail = %(detail)s
    WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'predicted'
    RETURNING id, error
)
UPDATE attempts a SET outcome = 'failed', reason = done.error
FROM done
WHERE a.id = (SELECT max(id) FROM attempts WHERE job_id = done.id);

-- name: submissions_changed
-- Submissions whose jobs changed since their results files were last written.
SELECT s.id, max(j.updated_at) AS changed_at
FROM submissions s JOIN jobs j ON j.submission_id = s.id
GROUP BY s.id, s.results_at
HAVING s.results_at IS NULL OR max(j.updated_at) > s.results_at
ORDER BY s.id
LIMIT %(n)s;

-- name: submission_for_results
SELECT s.id, s.name, s.team, s.version, s.queue, s.created_at, s.cancelled_at,
       s.store_path, s.owner, s.notes, d.id AS dataset_id, d.name AS dataset, d.store_path AS dataset_path,
       d.metrics, d.task, d.kind, d.n_folds, d.manifest->>'target' AS target
FROM submissions s JOIN datasets d ON d.id = s.dataset_id
WHERE s.id = %(id)s;

-- name: submission_jobs
SELECT id, fold, state, attempts, error, error_detail, exit_status, prediction_path,
       log_path, queued_at, claimed_at, finished_at, scored_at, train_seconds,
       valid_seconds, test_seconds, cpu_seconds, peak_rss_bytes
FROM jobs WHERE submission_id = %(id)s ORDER BY fold;

-- name: submission_fold_scores
SELECT j.fold, sc.split, sc.metric, sc.value
FROM scores sc JOIN jobs j ON j.id = sc.job_id
WHERE j.submission_id = %(id)s AND j.state = 'scored'
ORDER BY j.fold, sc.split, sc.metric;

-- name: bagged_upsert
INSERT INTO bagged_scores (submission_id, split, metric, value, n_folds)
VALUES (%(submission_id)s, %(split)s, %(metric)s, %(value)s, %(n_folds)s)
ON CONFLICT (submission_id, split, metric)
DO UPDATE SET value = EXCLUDED.value, n_folds = EXCLUDED.n_folds;

-- name: summary_clear
-- A submission's summaries are replaced as a whole: a retried fold's scores no longer count.
DELETE FROM score_summaries WHERE submission_id = %(id)s;

-- name: summary_insert
INSERT INTO score_summaries (submission_id, split, metric, n_folds, mean, std)
VALUES (%(submission_id)s, %(split)s, %(metric)s, %(n_folds)s, %(mean)s, %(std)s);

-- name: summary_of
SELECT split, metric, n_folds, mean, std FROM score_summaries
WHERE submission_id = %(id)s ORDER BY split, metric;

-- name: dataset_for_folds
SELECT d.id, d.name, d.kind, d.store_path, d.metrics, d.manifest, d.summary,
       d.lower_is_better, d.task, d.manifest->>'target' AS target,
       EXISTS (SELECT 1 FROM dataset_folds f WHERE f.dataset_id = d.id) AS stored
FROM datasets d WHERE d.name = %(name)s;

-- name: folds_insert
INSERT INTO dataset_folds (dataset_id, fold, train, valid)
VALUES (%(dataset_id)s, %(fold)s, %(train)s, %(valid)s)
ON CONFLICT DO NOTHING;

-- name: results_written
UPDATE submissions SET results_at = %(changed_at)s WHERE id = %(id)s;

-- name: retry_job
-- A failed job is queued again with fresh attempts.
UPDATE jobs SET state = 'queued', attempts = 0, executor_id = NULL, error = NULL,
       error_detail = NULL, exit_status = NULL, claimed_at = NULL, finished_at = NULL,
       queued_at = now()
WHERE id = %(id)s AND state = 'failed'
RETURNING id, queue;

-- name: retry_submission
UPDATE jobs SET state = 'queued', attempts = 0, executor_id = NULL, error = NULL,
       error_detail = NULL, exit_status = NULL, claimed_at = NULL, finished_at = NULL,
       queued_at = now()
WHERE submission_id = %(id)s AND state = 'failed'
RETURNING id, queue;

-- name: retry_dataset
UPDATE jobs j SET state = 'queued', attempts = 0, executor_id = NULL, error = NULL,
       error_detail = NULL, exit_status = NULL, claimed_at = NULL, finished_at = NULL,
       queued_at = now()
FROM submissions s, datasets d
WHERE j.submission_id = s.id AND s.dataset_id = d.id AND d.name = %(dataset)s
  AND j.state = 'failed' AND s.cancelled_at IS NULL
RETURNING j.id, j.queue;

-- name: cancel_submission
-- Queued jobs never run; running ones stop at their executor's next heartbeat.
WITH marked AS (
    UPDATE submissions SET cancelled_at = now()
    WHERE id = %(id)s AND cancelled_at IS NULL RETURNING id
), before AS (
    SELECT id, state FROM jobs
    WHERE submission_id = %(id)s AND state IN ('queued', 'running', 'predicted')
    FOR UPDATE
), done AS (
    UPDATE jobs j SET state = 'cancelled', finished_at = now()
    FROM before WHERE j.id = before.id
    RETURNING j.id, before.state
), closed AS (
    UPDATE attempts a SET outcome = 'cancelled', finished_at = now()
    FROM done WHERE a.job_id = done.id AND a.finished_at IS NULL
)
SELECT id, state FROM done;

-- name: submission_by_label
SELECT submission_id AS id FROM submission_labels
WHERE dataset = %(dataset)s AND label = %(label)s;

-- name: leaderboard_fold_scores
-- Each submission's validation scores by fold, on the dataset's first metric.
SELECT l.label, j.fold, sc.value
FROM scores sc
JOIN jobs j ON j.id = sc.job_id AND j.state = 'scored'
JOIN submission_labels l ON l.submission_id = j.submission_id
JOIN datasets d ON d.name = l.dataset
WHERE l.dataset = %(dataset)s AND sc.split = 'valid' AND sc.metric = d.metrics[1]
ORDER BY l.label, j.fold;

-- name: leaderboard_errors
-- The first error of each submission that has failed folds.
SELECT DISTINCT ON (l.label) l.label, j.error
FROM jobs j JOIN submission_labels l ON l.submission_id = j.submission_id
WHERE l.dataset = %(dataset)s AND j.state = 'failed' AND j.error IS NOT NULL
ORDER BY l.label, j.fold;

-- name: submissions_to_bag
-- Submissions among these with every fold scored: their datasets and prediction files.
SELECT s.id, d.id AS dataset_id, d.store_path AS dataset_path, d.kind, d.task, d.metrics,
       d.manifest->>'target' AS target, j.fold, j.prediction_path
FROM submissions s
JOIN datasets d ON d.id = s.dataset_id
JOIN jobs j ON j.submission_id = s.id
WHERE s.id = ANY(%(ids)s) AND s.cancelled_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.submission_id = s.id AND k.state <> 'scored')
ORDER BY s.id, j.fold;

-- name: submission_attempts
-- Every attempt of each of a submission's folds, oldest first (status.json's history).
SELECT j.fold, a.attempt, a.outcome, a.reason, a.exit_status, a.claimed_at,
       a.finished_at, a.cpu_seconds, a.peak_rss_bytes, e.host, e.pid
FROM attempts a
JOIN jobs j ON j.id = a.job_id
LEFT JOIN executors e ON e.id = a.executor_id
WHERE j.submission_id = %(id)s
ORDER BY j.fold, a.id;

-- name: submission_prioritize
-- An organizer moves a submission to another queue: its folds still waiting take a turn
-- there, as a new submission of its team would (take_turn, 0013).
WITH sub AS (
    UPDATE submissions SET queue = %(queue)s WHERE id = %(id)s RETURNING id, team
), taken AS (
    SELECT take_turn(%(priority)s::smallint, sub.team) AS turn FROM sub
)
UPDATE jobs j SET queue = %(queue)s, turn = taken.turn
FROM taken WHERE j.submission_id = %(id)s AND j.state = 'queued'
RETURNING j.id, j.queue;
