-- Public and private leaderboards (issue 17). Challenge mode is `EXISTS (SELECT 1 FROM
-- teams)`. There, the public board shows each team once: its pick, the best submission
-- by the public (validation) score, the earlier one on a tie; and no test score until the
-- dataset's closes_at has passed or an organizer revealed it. From then on the public
-- board ranks the picks by their test score: a team cannot gain by probing the test
-- set, because what counts is the submission it would have chosen on validation alone.
-- With no team registered (open mode) the public board is `leaderboard`, as before.

-- The leaderboard's submissions, with what a pick needs: id and time of registration.
CREATE OR REPLACE VIEW leaderboard AS
SELECT CASE WHEN b.ranked
            THEN rank() OVER (PARTITION BY b.dataset, b.ranked ORDER BY b.sort_key) END
       AS rank,
       b.dataset, b.label, b.team, b.state, b.scored, b.folds, b.metric, b.valid_mean,
       b.valid_std, b.test_mean, b.bagged_valid, b.bagged_test, b.lower_is_better,
       b.submission_id, b.created_at
FROM (
    SELECT p.dataset, p.label, p.team, p.state, p.scored, p.folds,
           d.metrics[1] AS metric, v.mean AS valid_mean, v.std AS valid_std,
           t.mean AS test_mean, bv.value AS bagged_valid, bt.value AS bagged_test,
           d.lower_is_better,
           (p.state = 'scored' AND v.mean IS NOT NULL) AS ranked,
           CASE WHEN d.lower_is_better THEN v.mean ELSE -v.mean END AS sort_key,
           p.submission_id, s.created_at
    FROM submission_progress p
    JOIN datasets d ON d.name = p.dataset
    JOIN submissions s ON s.id = p.submission_id
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

-- For organizers: every submission with every score. `pick`: the team's best ranked
-- submission by validation (the earlier on a tie); `final_rank`: the picks ranked by
-- their test score (then by validation), the ranking published at close or reveal;
-- `public_row`: what the public board shows of the team in challenge mode, its pick,
-- or its latest submission while none is ranked.
CREATE VIEW private_leaderboard AS
SELECT c.rank, c.dataset, c.label, c.team, c.state, c.scored, c.folds, c.metric,
       c.valid_mean, c.valid_std, c.test_mean, c.bagged_valid, c.bagged_test,
       c.lower_is_better, c.pick,
       CASE WHEN c.pick
            THEN rank() OVER (PARTITION BY c.dataset, c.pick
                              ORDER BY c.test_key NULLS LAST, c.rank) END AS final_rank,
       c.team_row = 1 AS public_row, c.submission_id, c.created_at
FROM (
    SELECT t.*, (t.team_row = 1 AND t.rank IS NOT NULL) AS pick
    FROM (
        SELECT l.*,
               CASE WHEN l.lower_is_better THEN l.test_mean ELSE -l.test_mean END
               AS test_key,
               row_number() OVER (
                   PARTITION BY l.dataset, l.team
                   ORDER BY l.rank NULLS LAST,
                            CASE WHEN l.rank IS NULL THEN -extract(epoch FROM l.created_at)
                                 ELSE extract(epoch FROM l.created_at) END,
                            l.submission_id
               ) AS team_row
        FROM leaderboard l
    ) t
) c;

-- What anyone may see; the columns of `leaderboard` (test_mean and bagged_test NULL
-- while the test scores are private). Open mode: every submission, as `leaderboard`.
CREATE VIEW public_leaderboard AS
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
           coalesce(least(d.revealed_at, d.closes_at) <= now(), false) AS revealed
    FROM private_leaderboard p JOIN datasets d ON d.name = p.dataset
) x
WHERE x.public_row OR NOT x.challenge;

-- Whether a dataset's results files were last written with its test scores shown: a
-- results pass finds the datasets whose test scores became public since (closed,
-- revealed) or private again (the first team registered, a close moved later). NULL:
-- never written. The table holds a row per dataset: a scan is cheap.
ALTER TABLE datasets ADD COLUMN leaderboard_revealed boolean;
-- No team exists yet: every file written so far shows the test scores, and still may.
UPDATE datasets SET leaderboard_revealed = true;
