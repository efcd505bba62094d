"""Claims at scale (issue 10): claim latency with 100,000 queued jobs.

One claimer claims and completes `--claims` jobs, one per statement as workers claim,
timing each claim statement; first with `--queued` jobs waiting (and as many finished
ones in the table), then, in the same run on the same server, with 1,000 queued, and
against a bare round trip (SELECT 1). Prints p50/p99 of each and the ratios.
Target: p99 <= 10 ms with 100,000 queued. The plan is pinned by a test
(tests/integration/test_claim_plan.py): the claim reads its partial index.
"""

from __future__ import annotations

import argparse
import time

import psycopg

from bench.common import Bed, percentile, testbed
from spool import db
from spool import jobs as jobs_sql

SEED = """
truncate jobs, submissions, datasets, executors restart identity cascade;
insert into datasets (name, kind, workflow, metrics, n_folds, content_hash, store_path)
values ('big', 'native', 'classifier', '{accuracy}', 1, 'h', 'x');
insert into submissions (dataset_id, name, content_hash, store_path)
values (1, 'big', 'h', 'x');
insert into jobs (submission_id, fold, queue, state)
select 1, g, case when g % 2 = 0 then 'high' else 'low' end,
       case when g < %(queued)s then 'queued' else 'scored' end
from generate_series(0, 2 * %(queued)s - 1) g;
analyze jobs;
"""


def claim_latencies(bed: Bed, queued: int, claims: int) -> list[float]:
    with db.connect(bed.url) as conn:
        conn.execute(SEED.replace("%(queued)s", str(int(queued))))
        executor = jobs_sql.register_executor(
            conn, host="bench", pid=0, queues=["high", "low"], workers=1, version="bench",
            limits={},
        )  # fmt: skip
    out = []
    with db.connect(bed.url, durable=False) as conn:  # as executors connect
        known: dict = {}
        for _ in range(claims):
            start = time.perf_counter()
            claimed = jobs_sql.claim(conn, executor, ["high", "low"], 1, known)
            out.append(time.perf_counter() - start)
            assert claimed, "ran out of jobs"
            outcome = jobs_sql.Outcome(prediction_path="x")
            assert jobs_sql.complete(conn, claimed[0], executor, outcome)
    return out


def round_trips(bed: Bed, count: int) -> list[float]:
    out = []
    with psycopg.connect(bed.url, autocommit=True) as conn:
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("select 1")
            out.append(time.perf_counter() - start)
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=5_000)
    args = parser.parse_args(argv)
    with testbed() as bed:
        big = claim_latencies(bed, args.queued, args.claims)
        small = claim_latencies(bed, min(1_000, args.queued), min(args.claims, 900))
        bare = round_trips(bed, args.claims)
    p50, p99 = percentile(big, 50), percentile(big, 99)
    s50, s99 = percentile(small, 50), percentile(small, 99)
    b50 = percentile(bare, 50)
    print(f"scale     claim with {args.queued:,} queued: p50 {ms(p50)}, p99 {ms(p99)}; with "
          f"1,000 queued: p50 {ms(s50)}, p99 {ms(s99)}; bare round trip p50 {ms(b50)}; "
          f"ratios {args.queued:,}/1,000: p50 {p50 / s50:.2f}, p99 {p99 / s99:.2f}; "
          f"claim/round trip p50 {p50 / b50:.1f} (target p99 <= 10 ms: "
          f"{'met' if p99 <= 0.010 else 'MISSED'})")  # fmt: skip
    return {"claim_p50_ms": p50 * 1000, "claim_p99_ms": p99 * 1000,
            "small_p50_ms": s50 * 1000, "small_p99_ms": s99 * 1000}  # fmt: skip


if __name__ == "__main__":
    main()
