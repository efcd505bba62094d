-- Fair share within a priority: claims go by turn, then id. A submission's folds share
-- one turn: one past its team's last turn at that priority, and never before the
-- earliest turn still queued there. One team's flood of submissions takes turns 1, 2,
-- 3, ...; another team's new submission joins at the turn being served, so it starts
-- after about one submission's folds, not after the flood. A job given back keeps its
-- turn, and so stays at the head of the queue.
ALTER TABLE jobs ADD COLUMN turn bigint NOT NULL DEFAULT 0;

-- Each team's last turn at each priority: what its next submission comes after.
CREATE TABLE team_turns (
    priority   smallint NOT NULL,
    team       text NOT NULL,
    last_turn  bigint NOT NULL,
    PRIMARY KEY (priority, team)
);

-- What waits already: each team's queued submissions in turn, oldest first.
WITH ranked AS (
    SELECT j.id, dense_rank() OVER (PARTITION BY j.priority, s.team
                                    ORDER BY j.submission_id) AS turn
    FROM jobs j JOIN submissions s ON s.id = j.submission_id
    WHERE j.state = 'queued'
)
UPDATE jobs j SET turn = ranked.turn FROM ranked WHERE j.id = ranked.id;

INSERT INTO team_turns (priority, team, last_turn)
SELECT j.priority, s.team, max(j.turn)
FROM jobs j JOIN submissions s ON s.id = j.submission_id
WHERE j.state = 'queued'
GROUP BY j.priority, s.team;

DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobs (priority, turn, id) WHERE state = 'queued';
