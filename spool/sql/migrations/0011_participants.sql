-- Participants of a challenge. A team is a set of Unix users: the owner of a drop, as
-- the operating system records it, decides its team (no logins, no tokens). Members of
-- an organizers' team drop datasets, submit for any team, set priorities and read
-- everything. With no team registered datarun is open, as before: anyone who can write
-- incoming/ drops anything, under the team its manifest names.
CREATE TABLE teams (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    organizer   boolean NOT NULL DEFAULT false,
    queue       text NOT NULL DEFAULT 'low' CHECK (queue IN ('high', 'low')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A user belongs to one team at most; numeric ids, because that is what a file's owner
-- is, on every machine that mounts the spool.
CREATE TABLE team_members (
    uid        bigint PRIMARY KEY CHECK (uid >= 0),
    user_name  text NOT NULL,
    team       text NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
    added_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX team_members_team_idx ON team_members (team);

-- Who dropped each submission (NULL before this migration), and what the intake told
-- them on accepting it (a priority it did not take, for one).
ALTER TABLE submissions ADD COLUMN owner_uid bigint, ADD COLUMN owner text,
    ADD COLUMN notes text[] NOT NULL DEFAULT '{}';
CREATE INDEX submissions_team_created_idx ON submissions (dataset_id, team, created_at);

-- A dataset's phase and quotas, from dataset.toml or `datarun dataset set`; NULL: none.
-- The test scores stay private until closes_at has passed or an organizer reveals them.
ALTER TABLE datasets
    ADD COLUMN opens_at timestamptz,
    ADD COLUMN closes_at timestamptz,
    ADD COLUMN submissions_per_day integer CHECK (submissions_per_day >= 0),
    ADD COLUMN min_minutes_between integer CHECK (min_minutes_between >= 0),
    ADD COLUMN revealed_at timestamptz;

-- Every change an organizer makes to a registered dataset's settings: who, when, what.
CREATE TABLE dataset_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_id  bigint NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    setting     text NOT NULL,
    old_value   text,
    new_value   text,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
