"""Executor speed (issue 4).

folds: N folds of a tiny model (logistic regression on iris) run by one executor with
2 workers, against the same fits by joblib.Parallel(n_jobs=2) in one process, in the
same run. Overhead per fold = (datarun wall - joblib wall) x workers / folds: the
worker time datarun adds around each fit (claim, scratch, fork, files, completion).
The dataset says its folds are short (`[cv] short_folds`), so each submission's folds
share one warm child (`--no-short-folds`: from its second claim on, once a fold was
seen short; `--shared-folds 1`: a child per fold, as before issue 18). Target: <= 5 ms.
A second line splits the machine's CPU over datarun's run (core-seconds from /proc):
the folds' own (their attempts), their children's start, sandbox and exit around them,
the zygote, the executor's process, and the rest.

claims: no-op jobs claimed and completed by 8 threads, each with its own connection
(each batch's completions sent with the next claim, one statement), against 8 threads
doing the same number of bare round trips (SELECT 1, twice per job) on the same
server. Target: >= 3,000 jobs/s on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression

from bench import forks
from bench.common import (
    Bed,
    MachineCpu,
    ProcessCpu,
    attempts_cpu,
    settle,
    testbed,
    write_dataset,
    write_submission,
)
from executor.daemon import Executor, ExecutorConfig
from spool import db
from spool import jobs as jobs_sql
from watcher.daemon import Watcher, WatcherConfig


def _register(bed: Bed, submissions: int, folds: int, short_folds: bool = False) -> None:
    watcher = Watcher(bed.spool, bed.url, WatcherConfig())
    dataset = write_dataset(bed.spool.root / "src", "iris", folds, short_folds=short_folds)
    settle(dataset).rename(bed.spool.incoming_datasets / "iris")
    watcher.run_once()
    into = bed.spool.incoming_submissions / "iris"
    for i in range(submissions):
        settle(write_submission(bed.spool.root / "subs", f"s{i}", i)).rename(into / f"s{i}")
    watcher.run_once()
    watcher.close()


def _count(conn: db.Conn, state: str) -> int:
    row = conn.execute("select count(*) as n from jobs where state = %s", [state]).fetchone()
    return int(row["n"]) if row else 0


def _joblib(prepared: Path, n_folds: int, total: int) -> float:
    train = pd.read_parquet(prepared / "train.parquet")
    test = pd.read_parquet(prepared / "test.parquet")
    folds = np.load(prepared / "folds.npz")
    X, y = train.drop(columns=["target"]).to_numpy(), train["target"].to_numpy()
    X_test = test.drop(columns=["target"], errors="ignore").to_numpy()

    start = time.perf_counter()
    Parallel(n_jobs=2)(
        delayed(_fit)(X, y, X_test, folds[f"train_{i % n_folds}"]) for i in range(total)
    )
    return time.perf_counter() - start


def _fit(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    model = LogisticRegression(max_iter=500).fit(X[rows], y[rows])
    return model.predict_proba(X), model.predict_proba(X_test)


@dataclass(frozen=True)
class _Cpu:
    """Where the folds' run spent the machine's CPU, in core-seconds."""

    machine: MachineCpu
    zygote: ProcessCpu  # its own, and its children's: the folds' children, reaped
    here: ProcessCpu  # the executor's threads and the benchmark's wait
    attempts: float  # the folds' own (their attempts' cpu_seconds)

    def print(self, folds: int, joblib: MachineCpu) -> None:
        around = self.zygote.children - self.attempts
        rest = self.machine.busy - self.zygote.own - self.zygote.children - self.here.own

        def each(seconds: float) -> str:
            return f"{seconds:.2f} ({seconds / folds * 1000:.1f} ms a fold)"

        print(f"          CPU in core-seconds: the machine busy {self.machine.busy:.2f}, idle "
              f"{self.machine.idle:.2f}; the folds' attempts {each(self.attempts)}, their "
              f"children around them {each(around)}, the zygote {each(self.zygote.own)}, "
              f"the executor's process {each(self.here.own)}, the rest (PostgreSQL, the kernel, "
              f"anything else running) {each(rest)}; joblib's run busy {joblib.busy:.2f}, idle "
              f"{joblib.idle:.2f}")  # fmt: skip


def bench_folds(
    total: int, workers: int = 2, shared_folds: int = 8, short_folds: bool = True
) -> dict[str, float]:
    n_folds = 5
    with testbed() as bed, contextlib.ExitStack() as stack:
        _register(bed, max(1, total // n_folds), n_folds, short_folds)
        # One connection for the wait: a new one per poll forked a server process 50
        # times a second, CPU taken from the folds measured.
        poll = stack.enter_context(db.connect(bed.url))
        total = _count(poll, "queued")
        config = ExecutorConfig(workers=workers, poll_seconds=0.2, shared_folds=shared_folds)
        executor = Executor(bed.url, bed.spool, config)
        executor.start()  # registration and the zygote's warm-up are not timed
        stop = threading.Event()
        zygote = executor.zygote.pid
        assert zygote is not None
        before = (MachineCpu.now(), ProcessCpu.of(zygote), ProcessCpu.of(os.getpid()))
        start = time.perf_counter()
        thread = threading.Thread(target=executor.run, args=(stop,))
        thread.start()
        while _count(poll, "predicted") < total:
            time.sleep(0.02)
        datarun = time.perf_counter() - start
        cpu = _Cpu(MachineCpu.now() - before[0], ProcessCpu.of(zygote) - before[1],
                   ProcessCpu.of(os.getpid()) - before[2], attempts_cpu(poll))  # fmt: skip
        stop.set()
        thread.join()
        prepared = next((bed.spool.store / "datasets").iterdir()) / "prepared"
        machine = MachineCpu.now()
        baseline = _joblib(prepared, n_folds, total)
        joblib_cpu = MachineCpu.now() - machine
    overhead = (datarun - baseline) * workers / total
    said = "says" if short_folds else "does not say"
    print(f"folds     {total} folds, {workers} workers, up to {shared_folds} per child, the "
          f"dataset {said} its folds are short: "
          f"datarun {datarun:.2f} s, joblib.Parallel(n_jobs=2) {baseline:.2f} s, ratio "
          f"{datarun / baseline:.2f}, overhead {overhead * 1000:.1f} ms per fold (target "
          f"<= 5 ms: {'met' if overhead <= 0.005 else 'MISSED'})")  # fmt: skip
    cpu.print(total, joblib_cpu)
    floor = forks.run()
    per_child = min(max(1, shared_folds), n_folds)
    print(floor.line(per_child))
    return {
        "datarun_s": datarun,
        "joblib_s": baseline,
        "overhead_ms": overhead * 1000,
        "child_floor_ms": (floor.warm_fork + floor.warm_exit) / per_child * 1000,
    }


def claims_rate(bed: Bed, total: int, claimers: int = 8, batch: int = 1) -> float:
    """Jobs per second: `claimers` threads claim and complete `total` no-op jobs."""
    with db.connect(bed.url) as conn:
        conn.execute("truncate jobs, submissions, datasets, executors restart identity cascade")
        conn.execute(
            "insert into datasets (name, kind, workflow, metrics, n_folds, content_hash,"
            " store_path) values ('noop', 'native', 'classifier', '{accuracy}', 1, 'h', 'x');"
            "insert into submissions (dataset_id, name, content_hash, store_path)"
            " values (1, 'noop', 'h', 'x');"
        )
        conn.execute(
            "insert into jobs (submission_id, fold, queue)"
            " select 1, g, case when g %% 2 = 0 then 'high' else 'low' end"
            " from generate_series(0, %s - 1) g", [total],
        )  # fmt: skip
        executor = jobs_sql.register_executor(
            conn, host="bench", pid=0, queues=["high", "low"], workers=claimers,
            version="bench", limits={},
        )  # fmt: skip

    def claimer(done: list[int]) -> None:
        # As executor workers do: what ended goes with the next claim, one statement
        # (no-op jobs all end at once: a batch's completions go together).
        with db.connect(bed.url, durable=False) as conn:  # as executors connect
            n, known = 0, {}  # type: ignore[var-annotated]
            outcome = jobs_sql.Outcome(prediction_path="x")
            claimed = jobs_sql.claim(conn, executor, ["high", "low"], batch, known)
            while claimed:
                ended = [(job, outcome) for job in claimed]
                settled = jobs_sql.settle(
                    conn, executor, ended, ["high", "low"], batch, known=known
                )
                assert not settled.refused
                n += len(ended)
                claimed = settled.claimed
            done.append(n)

    done: list[int] = []
    seconds = _timed([threading.Thread(target=claimer, args=(done,)) for _ in range(claimers)])
    assert sum(done) == total, done
    return total / seconds


def bench_claims(total: int, claimers: int = 8, batch: int = 1) -> dict[str, float]:
    with testbed() as bed:
        rate = claims_rate(bed, total, claimers, batch)

        def bare(count: int) -> None:
            with psycopg.connect(bed.url, autocommit=True) as conn:
                for _ in range(count):
                    conn.execute("select 1")
                    conn.execute("select 1")

        baseline = _timed([threading.Thread(target=bare, args=(total // claimers,))
                           for _ in range(claimers)])  # fmt: skip
    floor = total / baseline
    print(f"claims    {total} no-op jobs, {claimers} claimers, {batch} per claim: "
          f"{rate:,.0f} jobs/s; bare round "
          f"trips (2 per job): {floor:,.0f} jobs/s; ratio {rate / floor:.2f} "
          f"(target >= 3,000 jobs/s: {'met' if rate >= 3000 else 'MISSED'})")  # fmt: skip
    return {"jobs_per_s": rate, "bare_per_s": floor}


def _timed(threads: list[threading.Thread]) -> float:
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench executor", description=__doc__)
    parser.add_argument("--folds", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--only", choices=["folds", "claims"])
    parser.add_argument("--batch", type=int, default=1, help="jobs per claim statement")
    parser.add_argument(
        "--shared-folds",
        type=int,
        default=8,
        help="a short submission's folds per warm child (1: a child each)",
    )
    parser.add_argument("--short-folds", action=argparse.BooleanOptionalAction, default=True,
                        help="the dataset says its folds are short ([cv] short_folds): a "
                        "submission's folds share a child from its first")  # fmt: skip
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    if args.only in (None, "folds"):
        figures.update(bench_folds(args.folds, shared_folds=args.shared_folds,
                                   short_folds=args.short_folds))  # fmt: skip
    if args.only in (None, "claims"):
        figures.update(bench_claims(args.jobs, batch=args.batch))
    return figures


if __name__ == "__main__":
    main()
