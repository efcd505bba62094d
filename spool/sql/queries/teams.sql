-- Teams of Unix users (0011_participants.sql): who a drop's owner is, and the admin's
-- commands that make and change teams.

-- name: dropper
-- The owner's team, if any, and whether any team exists (no team: open mode).
SELECT EXISTS (SELECT 1 FROM teams) AS challenge, t.name AS team, t.organizer, t.queue
FROM (SELECT 1) AS one
LEFT JOIN team_members m ON m.uid = %(uid)s
LEFT JOIN teams t ON t.name = m.team;

-- name: team_upsert
-- A team is made once; naming it again changes only what is given.
INSERT INTO teams AS t (name, organizer, queue)
VALUES (%(name)s, COALESCE(%(organizer)s, false), COALESCE(%(queue)s, 'low'))
ON CONFLICT (name) DO UPDATE
SET organizer = COALESCE(%(organizer)s, t.organizer), queue = COALESCE(%(queue)s, t.queue)
RETURNING name, organizer, queue;

-- name: member_team
SELECT team FROM team_members WHERE uid = %(uid)s;

-- name: member_insert
INSERT INTO team_members (uid, user_name, team) VALUES (%(uid)s, %(user_name)s, %(team)s)
ON CONFLICT (uid) DO NOTHING;

-- name: member_delete
DELETE FROM team_members WHERE uid = %(uid)s AND team = %(team)s RETURNING user_name;

-- name: team_delete
DELETE FROM teams WHERE name = %(name)s RETURNING name;

-- name: team_list
SELECT t.name, t.organizer, t.queue, t.created_at,
       COALESCE(array_agg(m.user_name ORDER BY m.user_name)
                FILTER (WHERE m.uid IS NOT NULL), '{}') AS users,
       COALESCE(array_agg(m.uid ORDER BY m.user_name)
                FILTER (WHERE m.uid IS NOT NULL), '{}') AS uids
FROM teams t LEFT JOIN team_members m ON m.team = t.name
GROUP BY t.name ORDER BY t.organizer DESC, t.name;

-- name: organizer_uids
SELECT m.uid FROM team_members m JOIN teams t ON t.name = m.team WHERE t.organizer
ORDER BY m.uid;

-- name: team_readers
-- Who may read a team's results: its members and every organizer.
SELECT DISTINCT m.uid FROM team_members m JOIN teams t ON t.name = m.team
WHERE m.team = %(team)s OR t.organizer ORDER BY m.uid;

-- name: challenge
SELECT EXISTS (SELECT 1 FROM teams) AS challenge;
