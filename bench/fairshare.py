"""Fair share: how long another team's first fold waits behind one team's flood.

Team A's `--flood` submissions are registered (5 folds each, their jobs made by
`spool.registry.create_jobs` as at registration), then team B's one. Workers claim
one fold at a time with the real claim statement until B's first fold is claimed.
B's wait, in fold durations, is the number of claims before it divided by
`--workers` (each worker claims again when its fold ends). First in, first out on
the same queue would claim every job registered before B's first: that count, from
the same rows, is the baseline. Target: at most 2 fold durations, whatever the flood.
"""

from __future__ import annotations

import argparse

from bench.common import testbed
from spool import db
from spool import jobs as jobs_sql
from spool.registry import create_jobs

SEED = """
insert into datasets (name, kind, workflow, metrics, n_folds, content_hash, store_path)
values ('iris', 'native', 'classifier', '{accuracy}', %(folds)s, 'h', 'x')
returning id
"""
SUBMISSION = """
insert into submissions (dataset_id, name, team, content_hash, store_path)
values (%(dataset)s, %(name)s, %(team)s, %(name)s, 'x') returning id
"""
FIFO_AHEAD = """
select count(*) as n from jobs
where state = 'queued' and (priority, id) < (select priority, min(id) from jobs
                                             where submission_id = %(b)s group by priority)
"""


def register(conn: db.Conn, dataset: int, team: str, name: str, folds: int) -> int:
    row = conn.execute(SUBMISSION, {"dataset": dataset, "name": name, "team": team}).fetchone()
    assert row is not None
    create_jobs(conn, row["id"], team=team, queue="low", max_attempts=3, n_folds=folds)
    return int(row["id"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench fairshare", description=__doc__)
    parser.add_argument("--flood", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    with testbed() as bed, db.connect(bed.url) as conn:
        row = conn.execute(SEED, {"folds": args.folds}).fetchone()
        assert row is not None
        for i in range(args.flood):
            register(conn, row["id"], "a", f"a{i:04d}", args.folds)
        b = register(conn, row["id"], "b", "b0", args.folds)
        fifo = int(conn.execute(FIFO_AHEAD, {"b": b}).fetchone()["n"])  # type: ignore[index]
        executor = jobs_sql.register_executor(conn, host="bench", pid=0, queues=["low"],
                                              workers=args.workers, version="bench",
                                              limits={})  # fmt: skip
        ahead, known = 0, {}
        while True:
            [job] = jobs_sql.claim(conn, executor, ["low"], 1, known)
            if job.submission_id == b:
                break
            ahead += 1
    fair_wait, fifo_wait = ahead / args.workers, fifo / args.workers
    print(f"fairshare  team b's first fold claimed after {ahead} claims: {fair_wait:.1f} fold "
          f"durations with {args.workers} workers (target <= 2) | first in, first out: "
          f"{fifo} claims, {fifo_wait:.1f} fold durations | {args.flood} submissions of "
          f"{args.folds} folds ahead")  # fmt: skip
    return {"fair_wait": fair_wait, "fifo_wait": fifo_wait}
