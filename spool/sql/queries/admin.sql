-- What the admin commands read: status, leaderboards, logs.

-- name: status_mode
-- Open (no team: anyone who can write incoming/ drops anything, under any team) or a
-- challenge (a drop's owner decides its team; 0011_participants.sql).
SELECT CASE WHEN EXISTS (SELECT 1 FROM teams) THEN 'challenge' ELSE 'open' END AS mode,
       (SELECT count(*) FROM teams WHERE NOT organizer) AS teams,
       (SELECT count(*) FROM team_members m JOIN teams t ON t.name = m.team
        WHERE NOT t.organizer) AS participants,
       (SELECT count(*) FROM team_members m JOIN teams t ON t.name = m.team
        WHERE t.organizer) AS organizers,
       CASE WHEN EXISTS (SELECT 1 FROM teams)
            THEN 'a drop''s owner decides its team; organizers drop datasets'
            ELSE 'anyone who can write incoming/ drops anything, as any team' END AS meaning;

-- name: status_datasets
SELECT d.name, d.task, d.workflow, d.metrics, d.n_folds,
       count(s.id) AS submissions, d.created_at, d.opens_at, d.closes_at,
       d.submissions_per_day, d.min_minutes_between,
       test_scores_public(d.revealed_at, d.closes_at) AS revealed
FROM datasets d LEFT JOIN submissions s ON s.dataset_id = d.id
GROUP BY d.id ORDER BY d.name;

-- name: status_progress
SELECT * FROM submission_progress ORDER BY dataset, label;

-- name: status_queue
SELECT * FROM queue ORDER BY dataset, queue;

-- name: status_executors
SELECT * FROM executor_load
WHERE state IN ('running', 'stopping') OR heartbeat_age_s < 3600
ORDER BY id;

-- name: job_logs
SELECT j.id, j.fold, j.attempts, j.state, j.error, j.log_path, l.dataset, l.label
FROM jobs j JOIN submission_labels l ON l.submission_id = j.submission_id
WHERE (%(job)s::bigint IS NULL OR j.id = %(job)s)
  AND (%(submission)s::bigint IS NULL OR j.submission_id = %(submission)s)
ORDER BY j.fold;

-- name: demo_failures
-- The first failed fold of each failed submission, with its traceback.
SELECT DISTINCT ON (l.submission_id) l.dataset, l.label, j.error, j.error_detail
FROM jobs j JOIN submission_labels l ON l.submission_id = j.submission_id
WHERE j.state = 'failed'
ORDER BY l.submission_id, j.fold;

-- name: demo_results_pending
-- Submissions whose results files are older than their last change.
SELECT count(*) AS pending FROM (
    SELECT s.id FROM submissions s JOIN jobs j ON j.submission_id = s.id
    GROUP BY s.id, s.results_at
    HAVING s.results_at IS NULL OR max(j.updated_at) > s.results_at
) AS stale;

-- name: executors_named
-- The executors a provisioned runner started (they carry its name as their host).
SELECT id, state, pid, version, workers, running, heartbeat_age_s, started_at
FROM executor_load WHERE host = %(name)s ORDER BY id DESC;

-- name: attempts_of_jobs
SELECT a.job_id, a.attempt, a.outcome, a.reason, a.exit_status, a.claimed_at,
       a.finished_at, e.host, e.pid
FROM attempts a LEFT JOIN executors e ON e.id = a.executor_id
WHERE a.job_id = ANY(%(jobs)s)
ORDER BY a.job_id, a.id;
