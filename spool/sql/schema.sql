-- The schema the migrations (spool/sql/migrations) produce, as pg_dump writes it:
-- read here what the tables, views and functions are now. Generated, never edited:
-- tests/integration/test_migrate.py checks it, and rewrites it when run with
-- DATARUN_WRITE_SCHEMA=1.

CREATE FUNCTION public.datarun_touch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE FUNCTION public.take_turn(p_priority smallint, p_team text) RETURNS bigint
    LANGUAGE sql
    AS $$
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

CREATE FUNCTION public.test_scores_public(revealed_at timestamp with time zone, closes_at timestamp with time zone) RETURNS boolean
    LANGUAGE sql STABLE
    RETURN COALESCE((LEAST(revealed_at, closes_at) <= now()), false);

CREATE TABLE public.attempts (
    id bigint NOT NULL,
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    executor_id bigint,
    claimed_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    outcome text DEFAULT 'running'::text NOT NULL,
    reason text,
    exit_status text,
    cpu_seconds double precision,
    peak_rss_bytes bigint,
    CONSTRAINT attempts_attempt_check CHECK ((attempt >= 1)),
    CONSTRAINT attempts_outcome_check CHECK ((outcome = ANY (ARRAY['running'::text, 'predicted'::text, 'scored'::text, 'failed'::text, 'requeued'::text, 'handed back'::text, 'cancelled'::text])))
);

ALTER TABLE public.attempts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.bagged_scores (
    submission_id bigint NOT NULL,
    split text NOT NULL,
    metric text NOT NULL,
    value double precision NOT NULL,
    n_folds integer NOT NULL,
    CONSTRAINT bagged_scores_split_check CHECK ((split = ANY (ARRAY['valid'::text, 'test'::text])))
);

CREATE TABLE public.datarun_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.dataset_changes (
    id bigint NOT NULL,
    dataset_id bigint NOT NULL,
    setting text NOT NULL,
    old_value text,
    new_value text,
    changed_by text NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE public.dataset_changes ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.dataset_changes_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.dataset_folds (
    dataset_id bigint NOT NULL,
    fold integer NOT NULL,
    train bigint[] NOT NULL,
    valid bigint[] NOT NULL
);

CREATE TABLE public.datasets (
    id bigint NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    task text,
    workflow text NOT NULL,
    metrics text[] NOT NULL,
    n_folds integer NOT NULL,
    content_hash text NOT NULL,
    store_path text NOT NULL,
    manifest jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    summary jsonb DEFAULT '{}'::jsonb NOT NULL,
    drop_name text DEFAULT ''::text NOT NULL,
    intake_token text,
    lower_is_better boolean DEFAULT false NOT NULL,
    opens_at timestamp with time zone,
    closes_at timestamp with time zone,
    submissions_per_day integer,
    min_minutes_between integer,
    revealed_at timestamp with time zone,
    leaderboard_revealed boolean,
    CONSTRAINT datasets_kind_check CHECK ((kind = ANY (ARRAY['native'::text, 'ramp'::text]))),
    CONSTRAINT datasets_metrics_check CHECK ((cardinality(metrics) >= 1)),
    CONSTRAINT datasets_min_minutes_between_check CHECK ((min_minutes_between >= 0)),
    CONSTRAINT datasets_n_folds_check CHECK ((n_folds >= 1)),
    CONSTRAINT datasets_name_check CHECK ((name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'::text)),
    CONSTRAINT datasets_submissions_per_day_check CHECK ((submissions_per_day >= 0)),
    CONSTRAINT datasets_task_check CHECK ((task = ANY (ARRAY['classification'::text, 'regression'::text])))
);

ALTER TABLE public.datasets ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.datasets_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.events (
    id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    kind text NOT NULL,
    dataset_id bigint,
    submission_id bigint,
    job_id bigint,
    executor_id bigint,
    message text DEFAULT ''::text NOT NULL,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL
);

ALTER TABLE public.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE VIEW public.executor_load AS
SELECT
    NULL::bigint AS id,
    NULL::text AS host,
    NULL::integer AS pid,
    NULL::text AS state,
    NULL::text[] AS queues,
    NULL::integer AS workers,
    NULL::bigint AS running,
    NULL::numeric AS heartbeat_age_s,
    NULL::timestamp with time zone AS started_at,
    NULL::text AS version;

CREATE TABLE public.executors (
    id bigint NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL,
    workers integer NOT NULL,
    version text DEFAULT ''::text NOT NULL,
    state text DEFAULT 'running'::text NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    heartbeat_at timestamp with time zone DEFAULT now() NOT NULL,
    stopped_at timestamp with time zone,
    limits jsonb DEFAULT '{}'::jsonb NOT NULL,
    CONSTRAINT executors_state_check CHECK ((state = ANY (ARRAY['running'::text, 'stopping'::text, 'stopped'::text, 'lost'::text]))),
    CONSTRAINT executors_workers_check CHECK ((workers >= 0))
);

ALTER TABLE public.executors ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.executors_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE VIEW public.folds AS
 SELECT d.name AS dataset,
    f.fold,
    cardinality(f.train) AS n_train,
    cardinality(f.valid) AS n_valid,
    f.train,
    f.valid
   FROM (public.dataset_folds f
     JOIN public.datasets d ON ((d.id = f.dataset_id)));

CREATE TABLE public.jobs (
    id bigint NOT NULL,
    submission_id bigint NOT NULL,
    fold integer NOT NULL,
    state text DEFAULT 'queued'::text NOT NULL,
    queue text NOT NULL,
    priority smallint GENERATED ALWAYS AS (
CASE queue
    WHEN 'high'::text THEN 0
    ELSE 1
END) STORED,
    attempts integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    executor_id bigint,
    queued_at timestamp with time zone DEFAULT now() NOT NULL,
    claimed_at timestamp with time zone,
    finished_at timestamp with time zone,
    scored_at timestamp with time zone,
    train_seconds double precision,
    valid_seconds double precision,
    test_seconds double precision,
    cpu_seconds double precision,
    peak_rss_bytes bigint,
    prediction_path text,
    log_path text,
    error text,
    error_detail text,
    exit_status text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    turn bigint DEFAULT 0 NOT NULL,
    CONSTRAINT jobs_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT jobs_check CHECK (((state <> ALL (ARRAY['running'::text, 'predicted'::text])) OR ((executor_id IS NOT NULL) AND (attempts >= 1)))),
    CONSTRAINT jobs_fold_check CHECK ((fold >= 0)),
    CONSTRAINT jobs_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT jobs_queue_check CHECK ((queue = ANY (ARRAY['high'::text, 'low'::text]))),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['queued'::text, 'running'::text, 'predicted'::text, 'scored'::text, 'failed'::text, 'cancelled'::text])))
);

CREATE TABLE public.submissions (
    id bigint NOT NULL,
    dataset_id bigint NOT NULL,
    name text NOT NULL,
    team text DEFAULT ''::text NOT NULL,
    queue text DEFAULT 'low'::text NOT NULL,
    content_hash text NOT NULL,
    store_path text NOT NULL,
    manifest jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    cancelled_at timestamp with time zone,
    version integer DEFAULT 1 NOT NULL,
    drop_name text DEFAULT ''::text NOT NULL,
    intake_token text,
    results_at timestamp with time zone,
    owner_uid bigint,
    owner text,
    notes text[] DEFAULT '{}'::text[] NOT NULL,
    CONSTRAINT submissions_name_check CHECK (((name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'::text) AND (team ~ '^([A-Za-z0-9][A-Za-z0-9_-]{0,63})?$'::text))),
    CONSTRAINT submissions_queue_check CHECK ((queue = ANY (ARRAY['high'::text, 'low'::text]))),
    CONSTRAINT submissions_version_check CHECK ((version >= 1))
);

CREATE VIEW public.submission_labels AS
 SELECT s.id AS submission_id,
    d.name AS dataset,
    s.team,
    s.name,
    s.version,
    concat_ws('.'::text, NULLIF(s.team, ''::text), s.name, ('v'::text || s.version)) AS label,
    s.queue,
    s.created_at,
    s.cancelled_at
   FROM (public.submissions s
     JOIN public.datasets d ON ((d.id = s.dataset_id)));

CREATE VIEW public.job_attempts AS
 SELECT l.dataset,
    l.label,
    j.fold,
    j.id AS job,
    row_number() OVER (PARTITION BY a.job_id ORDER BY a.id) AS try,
    a.attempt,
    a.outcome,
    a.reason,
    a.exit_status,
    a.claimed_at,
    a.finished_at,
    round(EXTRACT(epoch FROM (a.finished_at - a.claimed_at)), 3) AS seconds,
    a.cpu_seconds,
    a.peak_rss_bytes,
    e.host,
    e.pid
   FROM (((public.attempts a
     JOIN public.jobs j ON ((j.id = a.job_id)))
     JOIN public.submission_labels l ON ((l.submission_id = j.submission_id)))
     LEFT JOIN public.executors e ON ((e.id = a.executor_id)));

ALTER TABLE public.jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.score_summaries (
    submission_id bigint NOT NULL,
    split text NOT NULL,
    metric text NOT NULL,
    n_folds integer NOT NULL,
    mean double precision NOT NULL,
    std double precision NOT NULL,
    CONSTRAINT score_summaries_split_check CHECK ((split = ANY (ARRAY['train'::text, 'valid'::text, 'test'::text])))
);

CREATE VIEW public.submission_progress AS
 SELECT l.submission_id,
    l.dataset,
    l.label,
    l.team,
    l.queue,
    count(*) AS folds,
    count(*) FILTER (WHERE (j.state = 'queued'::text)) AS queued,
    count(*) FILTER (WHERE (j.state = 'running'::text)) AS running,
    count(*) FILTER (WHERE (j.state = 'predicted'::text)) AS predicted,
    count(*) FILTER (WHERE (j.state = 'scored'::text)) AS scored,
    count(*) FILTER (WHERE (j.state = 'failed'::text)) AS failed,
        CASE
            WHEN (l.cancelled_at IS NOT NULL) THEN 'cancelled'::text
            WHEN (count(*) FILTER (WHERE (j.state = ANY (ARRAY['queued'::text, 'running'::text, 'predicted'::text]))) > 0) THEN
            CASE
                WHEN (count(*) FILTER (WHERE (j.state <> 'queued'::text)) > 0) THEN 'running'::text
                ELSE 'queued'::text
            END
            WHEN (count(*) FILTER (WHERE (j.state = 'failed'::text)) > 0) THEN 'failed'::text
            ELSE 'scored'::text
        END AS state,
    max(j.updated_at) AS updated_at
   FROM (public.submission_labels l
     JOIN public.jobs j ON ((j.submission_id = l.submission_id)))
  GROUP BY l.submission_id, l.dataset, l.label, l.team, l.queue, l.cancelled_at;

CREATE VIEW public.submission_scores AS
 SELECT l.submission_id,
    l.dataset,
    l.label,
    s.split,
    s.metric,
    (s.n_folds)::bigint AS folds,
    s.mean,
    s.std
   FROM (public.score_summaries s
     JOIN public.submission_labels l ON ((l.submission_id = s.submission_id)));

CREATE VIEW public.leaderboard AS
 SELECT
        CASE
            WHEN ranked THEN rank() OVER (PARTITION BY dataset, ranked ORDER BY sort_key)
            ELSE NULL::bigint
        END AS rank,
    dataset,
    label,
    team,
    state,
    scored,
    folds,
    metric,
    valid_mean,
    valid_std,
    test_mean,
    bagged_valid,
    bagged_test,
    lower_is_better,
    submission_id,
    created_at
   FROM ( SELECT p.dataset,
            p.label,
            p.team,
            p.state,
            p.scored,
            p.folds,
            d.metrics[1] AS metric,
            v.mean AS valid_mean,
            v.std AS valid_std,
            t.mean AS test_mean,
            bv.value AS bagged_valid,
            bt.value AS bagged_test,
            d.lower_is_better,
            ((p.state = 'scored'::text) AND (v.mean IS NOT NULL)) AS ranked,
                CASE
                    WHEN d.lower_is_better THEN v.mean
                    ELSE (- v.mean)
                END AS sort_key,
            p.submission_id,
            s.created_at
           FROM ((((((public.submission_progress p
             JOIN public.datasets d ON ((d.name = p.dataset)))
             JOIN public.submissions s ON ((s.id = p.submission_id)))
             LEFT JOIN public.submission_scores v ON (((v.submission_id = p.submission_id) AND (v.split = 'valid'::text) AND (v.metric = d.metrics[1]))))
             LEFT JOIN public.submission_scores t ON (((t.submission_id = p.submission_id) AND (t.split = 'test'::text) AND (t.metric = d.metrics[1]))))
             LEFT JOIN public.bagged_scores bv ON (((bv.submission_id = p.submission_id) AND (bv.split = 'valid'::text) AND (bv.metric = d.metrics[1]))))
             LEFT JOIN public.bagged_scores bt ON (((bt.submission_id = p.submission_id) AND (bt.split = 'test'::text) AND (bt.metric = d.metrics[1]))))
          WHERE (p.state <> 'cancelled'::text)) b;

CREATE VIEW public.private_leaderboard AS
 SELECT rank,
    dataset,
    label,
    team,
    state,
    scored,
    folds,
    metric,
    valid_mean,
    valid_std,
    test_mean,
    bagged_valid,
    bagged_test,
    lower_is_better,
    pick,
        CASE
            WHEN pick THEN rank() OVER (PARTITION BY dataset, pick ORDER BY test_key, rank)
            ELSE NULL::bigint
        END AS final_rank,
    (team_row = 1) AS public_row,
    submission_id,
    created_at
   FROM ( SELECT t.rank,
            t.dataset,
            t.label,
            t.team,
            t.state,
            t.scored,
            t.folds,
            t.metric,
            t.valid_mean,
            t.valid_std,
            t.test_mean,
            t.bagged_valid,
            t.bagged_test,
            t.lower_is_better,
            t.submission_id,
            t.created_at,
            t.test_key,
            t.team_row,
            ((t.team_row = 1) AND (t.rank IS NOT NULL)) AS pick
           FROM ( SELECT l.rank,
                    l.dataset,
                    l.label,
                    l.team,
                    l.state,
                    l.scored,
                    l.folds,
                    l.metric,
                    l.valid_mean,
                    l.valid_std,
                    l.test_mean,
                    l.bagged_valid,
                    l.bagged_test,
                    l.lower_is_better,
                    l.submission_id,
                    l.created_at,
                        CASE
                            WHEN l.lower_is_better THEN l.test_mean
                            ELSE (- l.test_mean)
                        END AS test_key,
                    row_number() OVER (PARTITION BY l.dataset, l.team ORDER BY l.rank,
                        CASE
                            WHEN (l.rank IS NULL) THEN (- EXTRACT(epoch FROM l.created_at))
                            ELSE EXTRACT(epoch FROM l.created_at)
                        END, l.submission_id) AS team_row
                   FROM public.leaderboard l) t) c;

CREATE TABLE public.teams (
    name text NOT NULL,
    organizer boolean DEFAULT false NOT NULL,
    queue text DEFAULT 'low'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT teams_name_check CHECK ((name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'::text)),
    CONSTRAINT teams_queue_check CHECK ((queue = ANY (ARRAY['high'::text, 'low'::text])))
);

CREATE VIEW public.public_leaderboard AS
 SELECT
        CASE
            WHEN (NOT challenge) THEN rank
            WHEN (pick AND revealed) THEN final_rank
            WHEN pick THEN rank() OVER (PARTITION BY dataset, pick ORDER BY x.rank)
            ELSE NULL::bigint
        END AS rank,
    dataset,
    label,
    team,
    state,
    scored,
    folds,
    metric,
    valid_mean,
    valid_std,
        CASE
            WHEN (revealed OR (NOT challenge)) THEN test_mean
            ELSE NULL::double precision
        END AS test_mean,
    bagged_valid,
        CASE
            WHEN (revealed OR (NOT challenge)) THEN bagged_test
            ELSE NULL::double precision
        END AS bagged_test,
    lower_is_better
   FROM ( SELECT p.rank,
            p.dataset,
            p.label,
            p.team,
            p.state,
            p.scored,
            p.folds,
            p.metric,
            p.valid_mean,
            p.valid_std,
            p.test_mean,
            p.bagged_valid,
            p.bagged_test,
            p.lower_is_better,
            p.pick,
            p.final_rank,
            p.public_row,
            p.submission_id,
            p.created_at,
            (EXISTS ( SELECT 1
                   FROM public.teams)) AS challenge,
            public.test_scores_public(d.revealed_at, d.closes_at) AS revealed
           FROM (public.private_leaderboard p
             JOIN public.datasets d ON ((d.name = p.dataset)))) x
  WHERE (public_row OR (NOT challenge));

CREATE VIEW public.queue AS
 SELECT d.name AS dataset,
    j.queue,
    count(*) FILTER (WHERE (j.state = 'queued'::text)) AS queued,
    count(*) FILTER (WHERE (j.state = 'running'::text)) AS running,
    count(*) FILTER (WHERE (j.state = 'predicted'::text)) AS predicted,
    count(*) FILTER (WHERE (j.state = 'scored'::text)) AS scored,
    count(*) FILTER (WHERE (j.state = 'failed'::text)) AS failed,
    count(*) FILTER (WHERE (j.state = 'cancelled'::text)) AS cancelled
   FROM ((public.jobs j
     JOIN public.submissions s ON ((s.id = j.submission_id)))
     JOIN public.datasets d ON ((d.id = s.dataset_id)))
  GROUP BY d.name, j.queue;

CREATE VIEW public.recent_failures AS
 SELECT j.finished_at AS at,
    l.dataset,
    l.label,
    j.fold,
    j.attempts,
    j.id AS job,
    j.error,
    j.exit_status,
    j.log_path
   FROM (public.jobs j
     JOIN public.submission_labels l ON ((l.submission_id = j.submission_id)))
  WHERE (j.state = 'failed'::text)
  ORDER BY j.finished_at DESC NULLS LAST;

CREATE TABLE public.scores (
    job_id bigint NOT NULL,
    split text NOT NULL,
    metric text NOT NULL,
    value double precision NOT NULL,
    CONSTRAINT scores_split_check CHECK ((split = ANY (ARRAY['train'::text, 'valid'::text, 'test'::text])))
);

ALTER TABLE public.submissions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.submissions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.team_members (
    uid bigint NOT NULL,
    user_name text NOT NULL,
    team text NOT NULL,
    added_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT team_members_uid_check CHECK ((uid >= 0))
);

CREATE TABLE public.team_turns (
    priority smallint NOT NULL,
    team text NOT NULL,
    last_turn bigint NOT NULL
);

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.bagged_scores
    ADD CONSTRAINT bagged_scores_pkey PRIMARY KEY (submission_id, split, metric);

ALTER TABLE ONLY public.datarun_migrations
    ADD CONSTRAINT datarun_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY public.dataset_changes
    ADD CONSTRAINT dataset_changes_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.dataset_folds
    ADD CONSTRAINT dataset_folds_pkey PRIMARY KEY (dataset_id, fold);

ALTER TABLE ONLY public.datasets
    ADD CONSTRAINT datasets_content_hash_key UNIQUE (content_hash);

ALTER TABLE ONLY public.datasets
    ADD CONSTRAINT datasets_name_key UNIQUE (name);

ALTER TABLE ONLY public.datasets
    ADD CONSTRAINT datasets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.executors
    ADD CONSTRAINT executors_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_submission_id_fold_key UNIQUE (submission_id, fold);

ALTER TABLE ONLY public.score_summaries
    ADD CONSTRAINT score_summaries_pkey PRIMARY KEY (submission_id, split, metric);

ALTER TABLE ONLY public.scores
    ADD CONSTRAINT scores_pkey PRIMARY KEY (job_id, split, metric);

ALTER TABLE ONLY public.submissions
    ADD CONSTRAINT submissions_content_key UNIQUE (dataset_id, team, content_hash);

ALTER TABLE ONLY public.submissions
    ADD CONSTRAINT submissions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.submissions
    ADD CONSTRAINT submissions_version_key UNIQUE (dataset_id, team, name, version);

ALTER TABLE ONLY public.team_members
    ADD CONSTRAINT team_members_pkey PRIMARY KEY (uid);

ALTER TABLE ONLY public.team_turns
    ADD CONSTRAINT team_turns_pkey PRIMARY KEY (priority, team);

ALTER TABLE ONLY public.teams
    ADD CONSTRAINT teams_pkey PRIMARY KEY (name);

CREATE INDEX attempts_job ON public.attempts USING btree (job_id, id);

CREATE INDEX attempts_open ON public.attempts USING btree (job_id) WHERE (finished_at IS NULL);

CREATE INDEX events_at_idx ON public.events USING btree (at);

CREATE INDEX events_job_idx ON public.events USING btree (job_id) WHERE (job_id IS NOT NULL);

CREATE INDEX executors_live_idx ON public.executors USING btree (heartbeat_at) WHERE (state = ANY (ARRAY['running'::text, 'stopping'::text]));

CREATE INDEX jobs_claim_idx ON public.jobs USING btree (priority, turn, id) WHERE (state = 'queued'::text);

CREATE INDEX jobs_predicted_idx ON public.jobs USING btree (id) WHERE (state = 'predicted'::text);

CREATE INDEX jobs_running_idx ON public.jobs USING btree (executor_id, id) WHERE (state = 'running'::text);

CREATE INDEX jobs_submission_idx ON public.jobs USING btree (submission_id, state);

CREATE INDEX jobs_updated_idx ON public.jobs USING btree (submission_id, updated_at);

CREATE INDEX submissions_content_hash_idx ON public.submissions USING btree (content_hash);

CREATE INDEX submissions_team_created_idx ON public.submissions USING btree (dataset_id, team, created_at);

CREATE INDEX team_members_team_idx ON public.team_members USING btree (team);

CREATE OR REPLACE VIEW public.executor_load AS
 SELECT e.id,
    e.host,
    e.pid,
    e.state,
    e.queues,
    e.workers,
    count(j.id) AS running,
    round(EXTRACT(epoch FROM (now() - e.heartbeat_at)), 1) AS heartbeat_age_s,
    e.started_at,
    e.version
   FROM (public.executors e
     LEFT JOIN public.jobs j ON (((j.executor_id = e.id) AND (j.state = 'running'::text))))
  GROUP BY e.id;

CREATE TRIGGER jobs_touch BEFORE UPDATE ON public.jobs FOR EACH ROW EXECUTE FUNCTION public.datarun_touch();

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_executor_id_fkey FOREIGN KEY (executor_id) REFERENCES public.executors(id);

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.jobs(id);

ALTER TABLE ONLY public.bagged_scores
    ADD CONSTRAINT bagged_scores_submission_id_fkey FOREIGN KEY (submission_id) REFERENCES public.submissions(id);

ALTER TABLE ONLY public.dataset_changes
    ADD CONSTRAINT dataset_changes_dataset_id_fkey FOREIGN KEY (dataset_id) REFERENCES public.datasets(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.dataset_folds
    ADD CONSTRAINT dataset_folds_dataset_id_fkey FOREIGN KEY (dataset_id) REFERENCES public.datasets(id);

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_dataset_id_fkey FOREIGN KEY (dataset_id) REFERENCES public.datasets(id);

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_executor_id_fkey FOREIGN KEY (executor_id) REFERENCES public.executors(id);

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.jobs(id);

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_submission_id_fkey FOREIGN KEY (submission_id) REFERENCES public.submissions(id);

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_executor_id_fkey FOREIGN KEY (executor_id) REFERENCES public.executors(id);

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_submission_id_fkey FOREIGN KEY (submission_id) REFERENCES public.submissions(id);

ALTER TABLE ONLY public.score_summaries
    ADD CONSTRAINT score_summaries_submission_id_fkey FOREIGN KEY (submission_id) REFERENCES public.submissions(id);

ALTER TABLE ONLY public.scores
    ADD CONSTRAINT scores_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.jobs(id);

ALTER TABLE ONLY public.submissions
    ADD CONSTRAINT submissions_dataset_id_fkey FOREIGN KEY (dataset_id) REFERENCES public.datasets(id);

ALTER TABLE ONLY public.team_members
    ADD CONSTRAINT team_members_team_fkey FOREIGN KEY (team) REFERENCES public.teams(name) ON DELETE CASCADE;
