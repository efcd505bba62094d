"""Idle drop to first fold running (issue 10): `datarun master` and `datarun executor`
as real processes, idle, then `--drops` submissions dropped one at a time (each once
the previous one's folds are done). For each: drop (the rename) to registered (the
submission row's creation) and drop to its first fold claimed by the executor, both
read from the database's clock. Prints p50/p99 of each and the ratio; the
registration latency is the baseline (the executor adds its wake-up and claim).
"""

from __future__ import annotations

import argparse
import time

from bench.common import ms, percentile, settle, testbed, wait, write_dataset, write_submission
from bench.memory import count, start
from spool import db


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench firstfold", description=__doc__)
    parser.add_argument("--drops", type=int, default=30)
    args = parser.parse_args(argv)
    registered: list[float] = []
    claimed: list[float] = []
    with testbed() as bed:
        procs = [start(bed, "master"), start(bed, "executor", "--workers", "2")]
        try:
            settle(write_dataset(bed.spool.root / "src", "iris", 3)).rename(
                bed.spool.incoming_datasets / "iris"
            )
            wait(lambda: count(bed, "select count(*) as n from executors") == 1, 120, "executor")
            wait(lambda: count(bed, "select count(*) as n from datasets") == 1, 120, "dataset")
            into = bed.spool.incoming_submissions / "iris"
            for i in range(args.drops):
                sub = settle(write_submission(bed.spool.root / "subs", f"s{i}", i))
                time.sleep(1.0)  # idle: the executor waits on its LISTEN, the master too
                with db.connect(bed.url) as conn:
                    row = conn.execute("select extract(epoch from now()) as t").fetchone()
                    assert row is not None
                    dropped = float(row["t"])
                sub.rename(into / sub.name)
                sql = ("select count(*) as n from jobs j join submissions s on s.id ="
                       f" j.submission_id where s.name = 's{i}' and j.state in"
                       " ('predicted', 'scored', 'failed')")  # fmt: skip
                wait(lambda sql=sql: count(bed, sql) == 3, 120, "the folds")  # type: ignore[misc]
                with db.connect(bed.url) as conn:
                    row = conn.execute(
                        "select extract(epoch from s.created_at) as reg,"
                        " extract(epoch from min(j.claimed_at)) as claim from submissions s"
                        " join jobs j on j.submission_id = s.id where s.name = %s"
                        " group by s.id", [f"s{i}"],
                    ).fetchone()  # fmt: skip
                    assert row is not None
                registered.append(float(row["reg"]) - dropped)
                claimed.append(float(row["claim"]) - dropped)
        finally:
            for proc in procs:  # both at once: each takes a second or so to stop
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
    r50, c50 = percentile(registered, 50), percentile(claimed, 50)
    print(
        f"firstfold {args.drops} drops into an idle master and executor: drop to registered "
        f"p50 {ms(r50)}, p99 {ms(percentile(registered, 99))}; drop to first fold running "
        f"p50 {ms(c50)}, p99 {ms(percentile(claimed, 99))}; ratio p50 {c50 / r50:.2f} "
        f"(target p50 <= 15 ms: {'met' if c50 <= 0.015 else 'MISSED'})"
    )
    return {"registered_p50_ms": r50 * 1000, "first_fold_p50_ms": c50 * 1000}


if __name__ == "__main__":
    main()
