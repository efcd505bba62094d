"""The claim query reads its partial index, however many jobs wait: with 100,000
queued jobs of many teams' turns (and as many finished) its plan must not scan the
table."""

from __future__ import annotations

import json

from spool import db, jobs
from spool.queries import query

SEED = """
insert into datasets (name, kind, workflow, metrics, n_folds, content_hash, store_path)
values ('big', 'native', 'classifier', '{accuracy}', 1, 'h', 'x');
insert into submissions (dataset_id, name, content_hash, store_path)
values (1, 'big', 'h', 'x');
insert into jobs (submission_id, fold, queue, state, turn)
select 1, g, case when g % 2 = 0 then 'high' else 'low' end,
       case when g < 100000 then 'queued' else 'cancelled' end,
       g % 997  -- the turns of many teams, interleaved
from generate_series(0, 199999) g;
analyze jobs;
"""


def plan(conn: db.Conn, queues: list[str], name: str = "jobs_settle_shared") -> str:
    params: dict[str, object] = {k: [] for k in jobs.SETTLE_ARRAYS}
    params.update(executor=1, priorities=jobs.priorities(queues), n=1, share=10,
                  short_seconds=1.0, short=[], long=[])  # fmt: skip
    rows = conn.execute("explain (format json) " + query(name), params).fetchall()
    return json.dumps(rows[0])


def test_the_claim_uses_its_index_with_100000_queued_jobs(conn):
    conn.execute(SEED)
    for queues in (["high", "low"], ["low"], ["high"]):
        for name in ("jobs_settle_shared", "jobs_settle"):
            text = plan(conn, queues, name)
            assert "jobs_claim_idx" in text, text
            assert "Seq Scan" not in text, text
