-- The watcher's statements: register datasets and submissions, create fold jobs.

-- name: watcher_try_lock
-- One active watcher per database: a second master stands by instead of racing.
SELECT pg_try_advisory_lock(hashtext('datarun.watcher')) AS locked;

-- name: dataset_by_name
SELECT id, name, kind, task, workflow, metrics, n_folds, content_hash, store_path,
       intake_token, summary, opens_at, closes_at, submissions_per_day, min_minutes_between
FROM datasets WHERE name = %(name)s;

-- name: next_id
-- Ids are taken before the files are stored under them, then the row commits last.
SELECT nextval(pg_get_serial_sequence(%(table)s, 'id')) AS id;

-- name: dataset_insert
INSERT INTO datasets (id, name, kind, task, workflow, metrics, n_folds, content_hash,
                      store_path, manifest, summary, drop_name, intake_token, lower_is_better,
                      opens_at, closes_at, submissions_per_day, min_minutes_between)
OVERRIDING SYSTEM VALUE
VALUES (%(id)s, %(name)s, %(kind)s, %(task)s, %(workflow)s, %(metrics)s, %(n_folds)s,
        %(content_hash)s, %(store_path)s, %(manifest)s, %(summary)s, %(drop_name)s,
        %(intake_token)s, %(lower_is_better)s, %(opens_at)s, %(closes_at)s,
        %(submissions_per_day)s, %(min_minutes_between)s);

-- name: submission_by_content
SELECT s.id, s.name, s.team, s.version, s.store_path, s.intake_token
FROM submissions s
WHERE s.dataset_id = %(dataset_id)s AND s.team = %(team)s AND s.content_hash = %(content_hash)s;

-- name: submission_insert
-- The version is the next one for (dataset, team, name); the unique key guards races.
INSERT INTO submissions (id, dataset_id, name, team, queue, content_hash, store_path,
                         manifest, drop_name, version, intake_token, owner_uid, owner, notes)
OVERRIDING SYSTEM VALUE
SELECT %(id)s, %(dataset_id)s, %(name)s, %(team)s, %(queue)s, %(content_hash)s,
       %(store_path)s, %(manifest)s, %(drop_name)s, coalesce(max(version), 0) + 1,
       %(intake_token)s, %(owner_uid)s, %(owner)s, %(notes)s
FROM submissions
WHERE dataset_id = %(dataset_id)s AND team = %(team)s AND name = %(name)s
RETURNING id, version;

-- name: jobs_create
-- Fair share: the submission's folds share one turn among its team's (take_turn, 0013).
WITH taken AS (SELECT take_turn(%(priority)s::smallint, %(team)s) AS turn)
INSERT INTO jobs (submission_id, fold, queue, max_attempts, turn)
SELECT %(submission_id)s, fold, %(queue)s, %(max_attempts)s, taken.turn
FROM generate_series(0, %(n_folds)s - 1) AS fold, taken;

-- name: jobs_notify
-- Delivered at commit: idle executors serving this queue wake up.
SELECT pg_notify('datarun_jobs', %(queue)s);

-- name: event_insert
INSERT INTO events (kind, dataset_id, submission_id, message, detail)
VALUES (%(kind)s, %(dataset_id)s, %(submission_id)s, %(message)s, %(detail)s);

-- name: event_notify
-- For anyone who follows registrations live (the demo, benchmarks).
SELECT pg_notify('datarun_events', %(payload)s);

-- name: dataset_names
SELECT name FROM datasets;
