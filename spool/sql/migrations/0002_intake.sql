-- Intake: submissions get versions (same team and name, new content), a duplicate
-- drop is recognised by (dataset, team, content hash), and datasets keep the summary
-- of their prepared data.

ALTER TABLE submissions ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE submissions ADD COLUMN drop_name text NOT NULL DEFAULT '';
ALTER TABLE submissions DROP CONSTRAINT submissions_dataset_id_team_name_key;
ALTER TABLE submissions ADD CONSTRAINT submissions_version_key UNIQUE (dataset_id, team, name, version);
ALTER TABLE submissions ADD CONSTRAINT submissions_content_key UNIQUE (dataset_id, team, content_hash);
ALTER TABLE submissions ADD CONSTRAINT submissions_name_check
    CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$' AND team ~ '^([A-Za-z0-9][A-Za-z0-9_-]{0,63})?$');

ALTER TABLE datasets ADD COLUMN summary jsonb NOT NULL DEFAULT '{}';
ALTER TABLE datasets ADD COLUMN drop_name text NOT NULL DEFAULT '';
