-- Bookkeeping of the schema: the migrations table and its advisory lock,
-- and the statements that create and drop whole databases.

-- name: migrations_lock
-- Held for the whole migrate run, so two masters never migrate at once.
SELECT pg_advisory_lock(hashtext('datarun.migrate'));

-- name: migrations_unlock
SELECT pg_advisory_unlock(hashtext('datarun.migrate'));

-- name: migrations_table
CREATE TABLE IF NOT EXISTS datarun_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
SELECT version, name, checksum, applied_at
FROM datarun_migrations
ORDER BY version;

-- name: migrations_record
INSERT INTO datarun_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: migrations_table_exists
SELECT to_regclass('datarun_migrations') IS NOT NULL AS present;

-- name: database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s) AS present;

-- name: database_create
-- {name} and {template} are identifiers, composed by spool.db (they cannot be bound).
CREATE DATABASE {name} TEMPLATE {template};

-- name: database_drop
DROP DATABASE IF EXISTS {name} WITH (FORCE);

-- name: server_info
SELECT current_setting('server_version') AS version,
       current_database() AS database,
       current_user AS user,
       pg_postmaster_start_time() AS started_at,
       pg_database_size(current_database()) AS size_bytes;

-- name: role_password
-- Lets TCP clients (runners on other machines) log in to the embedded server.
ALTER ROLE {role} PASSWORD {password};
