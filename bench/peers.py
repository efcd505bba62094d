"""datarun's claims against PGQueuer's (issue 10): no-op jobs, 8 claimers, the same
PostgreSQL server, the same job count, in the same run.

datarun: 8 threads, each with its own connection, claim and complete jobs as
executors do (`spool.jobs.settle`: the jobs that ended are completed by the statement
that claims the next), `--batch` jobs per claim statement.
PGQueuer: its own dequeue loop (`QueueManager.run`, drain mode), 8 queue managers in
one asyncio process, each with its own connection, `--batch` jobs per dequeue, into a
database of their own on the same server. PGQueuer runs in a virtual environment of
its own that this benchmark makes on first use (pinned versions below), so nothing of
it is installed beside datarun. Targets (issue 18): datarun >= 3x PGQueuer at 1 job
per claim, >= 1.2x at more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from bench.common import testbed
from bench.executor import claims_rate
from spool import db

PINS = ["pgqueuer==1.6.0", "asyncpg==0.32.0"]
RUNNER = Path(__file__).parent / "pgqueuer" / "run.py"


def pgqueuer_python() -> Path:
    """The Python of PGQueuer's own environment, made on first use."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = cache / "datarun-bench" / "pgqueuer"
    python = home / "bin" / "python"
    if not (home / ".pins").is_file() or (home / ".pins").read_text() != " ".join(PINS):
        print(f"(making PGQueuer's virtual environment in {home})", file=sys.stderr)
        venv.create(home, clear=True, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
        (home / ".pins").write_text(" ".join(PINS))
    return python


def pgqueuer_rate(url: str, jobs: int, consumers: int, batch: int) -> float:
    out = subprocess.run([str(pgqueuer_python()), str(RUNNER), url, str(jobs), str(consumers),
                          str(batch)], check=True, capture_output=True, text=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ran"] == jobs, result
    return jobs / float(result["seconds"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--claimers", type=int, default=8)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    with testbed() as bed:
        for batch in args.batch:
            ours = claims_rate(bed, args.jobs, args.claimers, batch)
            name = f"pgqueuer_{batch}"
            db.ensure_database(bed.url, name)
            theirs = pgqueuer_rate(bed.server.url(name), args.jobs, args.claimers, batch)
            db.drop_database(bed.url, name)
            target = 3.0 if batch == 1 else 1.2
            print(f"peers     {args.jobs:,} no-op jobs, {args.claimers} claimers, {batch} per "
                  f"claim: datarun {ours:,.0f} jobs/s, PGQueuer {theirs:,.0f} jobs/s; ratio "
                  f"{ours / theirs:.2f} (target >= {target:g}: "
                  f"{'met' if ours >= target * theirs else 'MISSED'})")  # fmt: skip
            figures[f"datarun_{batch}"], figures[f"pgqueuer_{batch}"] = ours, theirs
    return figures


if __name__ == "__main__":
    main()
