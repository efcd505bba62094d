-- One number, one value: each submission's mean and standard deviation over folds is
-- computed once by the master (watcher.summary: population std, ddof=0, as ramp-test
-- prints it) and stored here; status.json, leaderboard.csv, the HTML page, the views
-- and `datarun leaderboard` all read this row. Until now each output computed its own
-- (Python's statistics, PostgreSQL's stddev_pop) and they differed in the last digits.
CREATE TABLE score_summaries (
    submission_id  bigint NOT NULL REFERENCES submissions (id),
    split          text NOT NULL CHECK (split IN ('train', 'valid', 'test')),
    metric         text NOT NULL,
    n_folds        integer NOT NULL,  -- scored folds whose score is defined (not NaN)
    mean           double precision NOT NULL,
    std            double precision NOT NULL,
    PRIMARY KEY (submission_id, split, metric)
);

-- Each dataset's folds as published in results/<dataset>/folds.json: row numbers of
-- the dataset's train file as dropped (0 = the first data row), or of a RAMP kit's
-- get_train_data.
CREATE TABLE dataset_folds (
    dataset_id  bigint NOT NULL REFERENCES datasets (id),
    fold        integer NOT NULL,
    train       bigint[] NOT NULL,
    valid       bigint[] NOT NULL,
    PRIMARY KEY (dataset_id, fold)
);

CREATE VIEW folds AS
SELECT d.name AS dataset, f.fold, cardinality(f.train) AS n_train,
       cardinality(f.valid) AS n_valid, f.train, f.valid
FROM dataset_folds f JOIN datasets d ON d.id = f.dataset_id;

-- Same columns as before (0005), now read from the stored summaries.
CREATE OR REPLACE VIEW submission_scores AS
SELECT l.submission_id, l.dataset, l.label, s.split, s.metric,
       s.n_folds::bigint AS folds, s.mean, s.std
FROM score_summaries s
JOIN submission_labels l ON l.submission_id = s.submission_id;

-- A submission has a rank only once every fold is scored and its mean is defined: a
-- failed, queued, running or unscored one has none (NULL) and comes after the ranked.
CREATE OR REPLACE VIEW leaderboard AS
SELECT CASE WHEN b.ranked
            THEN rank() OVER (PARTITION BY b.dataset, b.ranked ORDER BY b.sort_key) END
       AS rank,
       b.dataset, b.label, b.team, b.state, b.scored, b.folds, b.metric, b.valid_mean,
       b.valid_std, b.test_mean, b.bagged_valid, b.bagged_test, b.lower_is_better
FROM (
    SELECT p.dataset, p.label, p.team, p.state, p.scored, p.folds,
           d.metrics[1] AS metric, v.mean AS valid_mean, v.std AS valid_std,
           t.mean AS test_mean, bv.value AS bagged_valid, bt.value AS bagged_test,
           d.lower_is_better,
           (p.state = 'scored' AND v.mean IS NOT NULL) AS ranked,
           CASE WHEN d.lower_is_better THEN v.mean ELSE -v.mean END AS sort_key
    FROM submission_progress p
    JOIN datasets d ON d.name = p.dataset
    LEFT JOIN submission_scores v
           ON v.submission_id = p.submission_id AND v.split = 'valid'
          AND v.metric = d.metrics[1]
    LEFT JOIN submission_scores t
           ON t.submission_id = p.submission_id AND t.split = 'test'
          AND t.metric = d.metrics[1]
    LEFT JOIN bagged_scores bv
           ON bv.submission_id = p.submission_id AND bv.split = 'valid'
          AND bv.metric = d.metrics[1]
    LEFT JOIN bagged_scores bt
           ON bt.submission_id = p.submission_id AND bt.split = 'test'
          AND bt.metric = d.metrics[1]
    WHERE p.state <> 'cancelled'
) b;

-- Every submission's results are written once more, which stores its summary.
UPDATE submissions SET results_at = NULL;
