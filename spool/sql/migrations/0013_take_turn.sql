-- Fair share's turn-taking in one place: a new submission's folds, and a submission an
-- organizer moves to another queue, take their turn the same way (0010_fair_share.sql):
-- one past the team's last turn at that priority, never before the earliest turn still
-- queued there (nothing queued: the latest turn given).
CREATE FUNCTION take_turn(p_priority smallint, p_team text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    WITH served AS (
        SELECT COALESCE(
            (SELECT min(turn) FROM jobs WHERE state = 'queued' AND priority = p_priority),
            (SELECT max(last_turn) FROM team_turns WHERE priority = p_priority),
            1) AS turn
    )
    INSERT INTO team_turns AS t (priority, team, last_turn)
    SELECT p_priority, p_team, GREATEST(served.turn, 1) FROM served
    ON CONFLICT (priority, team) DO UPDATE
    SET last_turn = GREATEST(EXCLUDED.last_turn, t.last_turn + 1)
    RETURNING last_turn;
$$;
