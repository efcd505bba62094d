-- RAMP kits: their score types say whether lower is better (RMSE, error rates), so the
-- leaderboard ranks each dataset in its first score's direction. scikit-learn scorers,
-- used by native datasets, are all greater-is-better.

ALTER TABLE datasets ADD COLUMN lower_is_better boolean NOT NULL DEFAULT false;

CREATE OR REPLACE VIEW leaderboard AS
SELECT rank() OVER (PARTITION BY p.dataset
                    ORDER BY CASE WHEN d.lower_is_better THEN v.mean ELSE -v.mean END
                    NULLS LAST) AS rank,
       p.dataset, p.label, p.team, p.state, p.scored, p.folds,
       d.metrics[1] AS metric, v.mean AS valid_mean, v.std AS valid_std,
       t.mean AS test_mean, bv.value AS bagged_valid, bt.value AS bagged_test,
       d.lower_is_better
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
