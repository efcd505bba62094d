-- A dataset's phase and quotas (0011_participants.sql; spool/rules.py).

-- name: team_recent
-- How many submissions the team made to the dataset on the UTC day %(day)s, and its latest.
SELECT count(*) FILTER (WHERE created_at >= (%(day)s::date)::timestamp AT TIME ZONE 'UTC')
           AS today,
       max(created_at) AS last_at
FROM submissions
WHERE dataset_id = %(dataset_id)s AND team = %(team)s;

-- name: dataset_rules_for_update
SELECT id, opens_at, closes_at, submissions_per_day, min_minutes_between
FROM datasets WHERE name = %(name)s FOR UPDATE;

-- name: dataset_rules_update
UPDATE datasets SET opens_at = %(opens_at)s, closes_at = %(closes_at)s,
       submissions_per_day = %(submissions_per_day)s,
       min_minutes_between = %(min_minutes_between)s
WHERE id = %(id)s;

-- name: dataset_change_insert
INSERT INTO dataset_changes (dataset_id, setting, old_value, new_value, changed_by)
VALUES (%(dataset_id)s, %(setting)s, %(old_value)s, %(new_value)s, %(changed_by)s);
