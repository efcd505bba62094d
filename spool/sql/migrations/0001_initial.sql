-- The first schema: datasets, submissions, one fold job per (submission, fold),
-- scores written once per (job, split, metric), executors and an event journal.
-- States and queues are text with CHECK constraints, not enums, so that later
-- migrations can widen them inside a transaction.

CREATE TABLE datasets (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    kind          text NOT NULL CHECK (kind IN ('native', 'ramp')),
    task          text CHECK (task IN ('classification', 'regression')),
    workflow      text NOT NULL,
    metrics       text[] NOT NULL CHECK (cardinality(metrics) >= 1),
    n_folds       integer NOT NULL CHECK (n_folds >= 1),
    content_hash  text NOT NULL UNIQUE,
    store_path    text NOT NULL,
    manifest      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE submissions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_id    bigint NOT NULL REFERENCES datasets (id),
    name          text NOT NULL,
    team          text NOT NULL DEFAULT '',
    queue         text NOT NULL DEFAULT 'low' CHECK (queue IN ('high', 'low')),
    content_hash  text NOT NULL,
    store_path    text NOT NULL,
    manifest      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    cancelled_at  timestamptz,
    UNIQUE (dataset_id, team, name)
);
CREATE INDEX submissions_content_hash_idx ON submissions (content_hash);

CREATE TABLE executors (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    queues        text[] NOT NULL,
    workers       integer NOT NULL CHECK (workers >= 1),
    version       text NOT NULL DEFAULT '',
    state         text NOT NULL DEFAULT 'running'
                  CHECK (state IN ('running', 'stopping', 'stopped', 'lost')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);
CREATE INDEX executors_live_idx ON executors (heartbeat_at) WHERE state IN ('running', 'stopping');

CREATE TABLE jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    submission_id   bigint NOT NULL REFERENCES submissions (id),
    fold            integer NOT NULL CHECK (fold >= 0),
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'predicted', 'scored', 'failed', 'cancelled')),
    queue           text NOT NULL CHECK (queue IN ('high', 'low')),
    -- 0 serves before 1; derived so that the claim index orders high before low.
    priority        smallint GENERATED ALWAYS AS (CASE queue WHEN 'high' THEN 0 ELSE 1 END) STORED,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    executor_id     bigint REFERENCES executors (id),
    queued_at       timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    finished_at     timestamptz,
    scored_at       timestamptz,
    train_seconds   double precision,
    valid_seconds   double precision,
    test_seconds    double precision,
    cpu_seconds     double precision,
    peak_rss_bytes  bigint,
    prediction_path text,
    log_path        text,
    error           text,
    error_detail    text,
    UNIQUE (submission_id, fold),
    -- a running or predicted job always names its executor and its attempt
    CHECK (state NOT IN ('running', 'predicted') OR (executor_id IS NOT NULL AND attempts >= 1))
);
-- The claim: state = 'queued', ORDER BY priority, id, FOR UPDATE SKIP LOCKED.
CREATE INDEX jobs_claim_idx ON jobs (priority, id) WHERE state = 'queued';
CREATE INDEX jobs_executor_idx ON jobs (executor_id) WHERE state = 'running';
CREATE INDEX jobs_submission_idx ON jobs (submission_id, state);

CREATE TABLE scores (
    job_id   bigint NOT NULL REFERENCES jobs (id),
    split    text NOT NULL CHECK (split IN ('train', 'valid', 'test')),
    metric   text NOT NULL,
    value    double precision NOT NULL,
    PRIMARY KEY (job_id, split, metric)
);

CREATE TABLE events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    kind           text NOT NULL,
    dataset_id     bigint REFERENCES datasets (id),
    submission_id  bigint REFERENCES submissions (id),
    job_id         bigint REFERENCES jobs (id),
    executor_id    bigint REFERENCES executors (id),
    message        text NOT NULL DEFAULT '',
    detail         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_at_idx ON events (at);
CREATE INDEX events_job_idx ON events (job_id) WHERE job_id IS NOT NULL;
