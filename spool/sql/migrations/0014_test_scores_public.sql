-- One definition of "a dataset's test scores are public": an organizer revealed them,
-- or the dataset closed, whichever came first. The public board, the results files'
-- phase, `datarun status` and the check for files to write again all ask it.
CREATE FUNCTION test_scores_public(revealed_at timestamptz, closes_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE
RETURN coalesce(least(revealed_at, closes_at) <= now(), false);

CREATE OR REPLACE VIEW public_leaderboard AS
SELECT CASE WHEN NOT x.challenge THEN x.rank
            WHEN x.pick AND x.revealed THEN x.final_rank
            WHEN x.pick THEN rank() OVER (PARTITION BY x.dataset, x.pick ORDER BY x.rank)
       END AS rank,
       x.dataset, x.label, x.team, x.state, x.scored, x.folds, x.metric, x.valid_mean,
       x.valid_std,
       CASE WHEN x.revealed OR NOT x.challenge THEN x.test_mean END AS test_mean,
       x.bagged_valid,
       CASE WHEN x.revealed OR NOT x.challenge THEN x.bagged_test END AS bagged_test,
       x.lower_is_better
FROM (
    SELECT p.*, EXISTS (SELECT 1 FROM teams) AS challenge,
           test_scores_public(d.revealed_at, d.closes_at) AS revealed
    FROM private_leaderboard p JOIN datasets d ON d.name = p.dataset
) x
WHERE x.public_row OR NOT x.challenge;
