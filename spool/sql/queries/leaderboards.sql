-- Public and private leaderboards, and the reveal of a dataset's test scores
-- (migration 0012 says what each view holds).

-- name: leaderboard_phase
-- Challenge mode: a team is registered. Revealed: closes_at has passed, or an organizer
-- revealed the test scores; until then the public board holds no test score.
SELECT EXISTS (SELECT 1 FROM teams) AS challenge,
       test_scores_public(revealed_at, closes_at) AS revealed
FROM datasets WHERE name = %(dataset)s;

-- name: public_leaderboard_of
SELECT * FROM public_leaderboard WHERE dataset = %(dataset)s ORDER BY rank, label;

-- name: private_leaderboard_of
SELECT * FROM private_leaderboard WHERE dataset = %(dataset)s ORDER BY rank, label;

-- name: leaderboards_revealed_due
-- Datasets whose test scores became public, or private again, since their results files
-- were last written: closed, revealed, the first team registered, a close moved later.
-- Never written (NULL): its submissions' files are written as they change, with the
-- test scores as they are now; only the leaderboard is owed.
WITH mode AS (SELECT EXISTS (SELECT 1 FROM teams) AS challenge)
SELECT d.name, d.leaderboard_revealed IS NOT NULL AS written FROM datasets d, mode
WHERE d.leaderboard_revealed IS DISTINCT FROM
      (NOT mode.challenge OR test_scores_public(d.revealed_at, d.closes_at));

-- name: leaderboard_written
-- Whether the files just written showed the test scores.
UPDATE datasets SET leaderboard_revealed = %(revealed)s
WHERE name = %(dataset)s AND leaderboard_revealed IS DISTINCT FROM %(revealed)s;

-- name: dataset_submissions
-- Every submission of a dataset, for its files to be written again when its test scores
-- become public or private.
SELECT s.id, coalesce(max(j.updated_at), s.created_at) AS changed_at
FROM submissions s JOIN datasets d ON d.id = s.dataset_id
LEFT JOIN jobs j ON j.submission_id = s.id
WHERE d.name = %(dataset)s GROUP BY s.id ORDER BY s.id;

-- name: dataset_reveal
-- Publish a dataset's test scores now, and log who did; a dataset already revealed
-- keeps its first reveal (no row changes). Returns nothing for an unknown dataset.
WITH target AS (
    SELECT id, revealed_at FROM datasets WHERE name = %(dataset)s FOR UPDATE
), done AS (
    UPDATE datasets d SET revealed_at = now()
    FROM target WHERE d.id = target.id AND target.revealed_at IS NULL
    RETURNING d.id, d.revealed_at
), logged AS (
    INSERT INTO dataset_changes (dataset_id, setting, old_value, new_value, changed_by)
    SELECT id, 'revealed_at', NULL, revealed_at::text, %(changed_by)s FROM done
)
SELECT target.id, coalesce(done.revealed_at, target.revealed_at) AS revealed_at,
       done.id IS NOT NULL AS changed
FROM target LEFT JOIN done ON done.id = target.id;
