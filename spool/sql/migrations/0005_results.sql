-- Results: when each job last changed (so results files are refreshed only for what
-- changed), bagged scores per submission, and the status views admins query.

ALTER TABLE jobs ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE FUNCTION datarun_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION datarun_touch();
CREATE INDEX jobs_predicted_idx ON jobs (id) WHERE state = 'predicted';
CREATE INDEX jobs_updated_idx ON jobs (submission_id, updated_at);

ALTER TABLE submissions ADD COLUMN results_at timestamptz;

CREATE TABLE bagged_scores (
    submission_id  bigint NOT NULL REFERENCES submissions (id),
    split          text NOT NULL CHECK (split IN ('valid', 'test')),
    metric         text NOT NULL,
    value          double precision NOT NULL,
    n_folds        integer NOT NULL,
    PRIMARY KEY (submission_id, split, metric)
);

-- Each submission with its label, as in results/<dataset>/<label>/.
CREATE VIEW submission_labels AS
SELECT s.id AS submission_id, d.name AS dataset, s.team, s.name, s.version,
       concat_ws('.', nullif(s.team, ''), s.name, 'v' || s.version) AS label,
       s.queue, s.created_at, s.cancelled_at
FROM submissions s JOIN datasets d ON d.id = s.dataset_id;

-- The queue: jobs per dataset, priority and state.
CREATE VIEW queue AS
SELECT d.name AS dataset, j.queue,
       count(*) FILTER (WHERE j.state = 'queued') AS queued,
       count(*) FILTER (WHERE j.state = 'running') AS running,
       count(*) FILTER (WHERE j.state = 'predicted') AS predicted,
       count(*) FILTER (WHERE j.state = 'scored') AS scored,
       count(*) FILTER (WHERE j.state = 'failed') AS failed,
       count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled
FROM jobs j JOIN submissions s ON s.id = j.submission_id JOIN datasets d ON d.id = s.dataset_id
GROUP BY d.name, j.queue;

-- Per submission and split, mean and standard deviation over scored folds, per metric.
CREATE VIEW submission_scores AS
SELECT l.submission_id, l.dataset, l.label, sc.split, sc.metric,
       count(*) AS folds, avg(sc.value) AS mean, stddev_pop(sc.value) AS std
FROM scores sc
JOIN jobs j ON j.id = sc.job_id AND j.state = 'scored'
JOIN submission_labels l ON l.submission_id = j.submission_id
GROUP BY l.submission_id, l.dataset, l.label, sc.split, sc.metric;

-- Each submission's progress: folds by state, its state, and its ranking score.
CREATE VIEW submission_progress AS
SELECT l.submission_id, l.dataset, l.label, l.team, l.queue,
       count(*) AS folds,
       count(*) FILTER (WHERE j.state = 'queued') AS queued,
       count(*) FILTER (WHERE j.state = 'running') AS running,
       count(*) FILTER (WHERE j.state = 'predicted') AS predicted,
       count(*) FILTER (WHERE j.state = 'scored') AS scored,
       count(*) FILTER (WHERE j.state = 'failed') AS failed,
       CASE WHEN l.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN count(*) FILTER (WHERE j.state IN ('queued', 'running', 'predicted')) > 0
                 THEN CASE WHEN count(*) FILTER (WHERE j.state <> 'queued') > 0
                           THEN 'running' ELSE 'queued' END
            WHEN count(*) FILTER (WHERE j.state = 'failed') > 0 THEN 'failed'
            ELSE 'scored' END AS state,
       max(j.updated_at) AS updated_at
FROM submission_labels l JOIN jobs j ON j.submission_id = l.submission_id
GROUP BY l.submission_id, l.dataset, l.label, l.team, l.queue, l.cancelled_at;

-- The leaderboard: per dataset, submissions ranked by the mean validation score of the
-- dataset's first metric (scikit-learn scorers: greater is better).
CREATE VIEW leaderboard AS
SELECT rank() OVER (PARTITION BY p.dataset ORDER BY v.mean DESC NULLS LAST) AS rank,
       p.dataset, p.label, p.team, p.state, p.scored, p.folds,
       d.metrics[1] AS metric, v.mean AS valid_mean, v.std AS valid_std,
       t.mean AS test_mean, bv.value AS bagged_valid, bt.value AS bagged_test
FROM submission_progress p
JOIN datasets d ON d.name = p.dataset
LEFT JOIN submission_scores v
       ON v.submission_id = p.submission_id AND v.split = 'valid' AND v.metric = d.metrics[1]
LEFT JOIN submission_scores t
       ON t.submission_id = p.submission_id AND t.split = 'test' AND t.metric = d.metrics[1]
LEFT JOIN bagged_scores bv
       ON bv.submission_id = p.submission_id AND bv.split = 'valid' AND bv.metric = d.metrics[1]
LEFT JOIN bagged_scores bt
       ON bt.submission_id = p.submission_id AND bt.split = 'test' AND bt.metric = d.metrics[1]
WHERE p.state <> 'cancelled';

-- Executors with their load and how long ago they last answered.
CREATE VIEW executor_load AS
SELECT e.id, e.host, e.pid, e.state, e.queues, e.workers,
       count(j.id) AS running,
       round(extract(epoch FROM now() - e.heartbeat_at)::numeric, 1) AS heartbeat_age_s,
       e.started_at, e.version
FROM executors e LEFT JOIN jobs j ON j.executor_id = e.id AND j.state = 'running'
GROUP BY e.id;

-- Failed folds, newest first, with their one-line reason and their log.
CREATE VIEW recent_failures AS
SELECT j.finished_at AS at, l.dataset, l.label, j.fold, j.attempts, j.id AS job,
       j.error, j.exit_status, j.log_path
FROM jobs j JOIN submission_labels l ON l.submission_id = j.submission_id
WHERE j.state = 'failed'
ORDER BY j.finished_at DESC NULLS LAST;
