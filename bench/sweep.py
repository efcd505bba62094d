"""Sweeper speed (issue 5).

throughput: N prediction files (iris, 5 folds, accuracy + neg_log_loss + balanced
accuracy) swept and scored (in the dataset's scoring child, started beforehand), scores
inserted and jobs marked scored: files/s, against
the same files loaded and scored by scikit-learn's scorers in a plain loop (no
database, no checks) in the same run. Target: >= 500 files/s.

latency: the master's scheduler running with the default sweep interval (1 s); jobs
are marked predicted one at a time at random moments; time until each has its scores
in SQL, p50 and p99. Target: p50 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time

import numpy as np
from sklearn.metrics import get_scorer

from bench.common import Bed, ms, percentile, settle, testbed, write_dataset
from spool import db
from watcher.daemon import Watcher, WatcherConfig
from watcher.master import Master, MasterConfig
from watcher.scorers import Dataset
from watcher.scoring import _FrozenClassifier, load_truth
from watcher.sweeper import Sweeper

METRICS = ["accuracy", "neg_log_loss", "balanced_accuracy"]


def _prepare(bed: Bed, files: int) -> int:
    """A dataset, and `files` jobs already predicted, with their files."""
    watcher = Watcher(bed.spool, bed.url, WatcherConfig())
    root = write_dataset(bed.spool.root / "src", "iris", 5)
    text = (root / "dataset.toml").read_text().replace('["accuracy"]', json.dumps(METRICS))
    (root / "dataset.toml").write_text(text)
    settle(root).rename(bed.spool.incoming_datasets / "iris")
    watcher.run_once()
    watcher.close()
    submissions = -(-files // 5)
    with db.connect(bed.url) as conn:
        conn.execute(
            "insert into submissions (dataset_id, name, content_hash, store_path)"
            " select 1, 's' || g, 'h' || g, 'x' from generate_series(1, %s) g",
            [submissions],
        )
        executor = conn.execute(
            "insert into executors (host, pid, queues, workers) values ('b', 0, '{low}', 1)"
            " returning id"
        ).fetchone()["id"]
        rows = conn.execute(
            "insert into jobs (submission_id, fold, queue, state, attempts, executor_id,"
            " prediction_path) select s.id, f, 'low', 'queued', 1, %s, ''"
            " from submissions s, generate_series(0, 4) f order by s.id, f limit %s"
            " returning id, fold", [executor, files],
        ).fetchall()  # fmt: skip
    rng = np.random.default_rng(0)
    for row in rows:
        key = f"{row['id']}.1"
        np.savez(bed.spool.predictions / f"{key}.npz", train=rng.dirichlet(np.ones(3), 120),
                 test=rng.dirichlet(np.ones(3), 30))  # fmt: skip
        (bed.spool.predictions / f"{key}.json").write_text(json.dumps({"job": row["id"],
                                                                        "attempt": 1}))  # fmt: skip
    with db.connect(bed.url) as conn:
        conn.execute("update jobs set prediction_path = 'predictions/' || id || '.1.npz'")
    return executor


def _floor(bed: Bed, ids: list[int]) -> float:
    """Load and score the same files with plain scikit-learn calls."""
    store = next((bed.spool.store / "datasets").iterdir())
    truth = load_truth(store, "target", "classification")
    scorers = [get_scorer(m) for m in METRICS]
    start = time.perf_counter()
    for ident in ids:
        with np.load(bed.spool.predictions / f"{ident}.1.npz") as data:
            train, test = data["train"], data["test"]
        fold = 0
        fit_rows, valid_rows = truth.rows(fold)
        for scorer in scorers:
            for proba, rows, y in ((train, fit_rows, truth.y_train[fit_rows]),
                                   (train, valid_rows, truth.y_train[valid_rows]),
                                   (test, np.arange(30), truth.y_test)):  # fmt: skip
                scorer(_FrozenClassifier(proba, truth.classes), rows.reshape(-1, 1), y)
    return time.perf_counter() - start


def bench_throughput(files: int) -> dict[str, float]:
    with testbed() as bed:
        _prepare(bed, files)
        with db.connect(bed.url) as conn:
            ids = [r["id"] for r in conn.execute("select id from jobs order by id")]
            conn.execute("update jobs set state = 'predicted'")
        database = db.Database(bed.url).open()
        sweeper = Sweeper(bed.spool, database)
        # the dataset's scoring child started and ready, as after the first sweep
        sweeper.scorers.folds(Dataset(1, "store/datasets/1", "native", "target",
                                      "classification", tuple(METRICS)))  # fmt: skip
        start = time.perf_counter()
        done = 0
        while result := sweeper.sweep_once():
            if not result.scored and not result.failed:
                break
            done += result.scored
        wall = time.perf_counter() - start
        sweeper.close()
        database.close()
        floor = _floor(bed, ids)
    rate, floor_rate = done / wall, len(ids) / floor
    print(f"sweep     {done} files in {wall:.2f} s: {rate:,.0f} files/s; plain scikit-learn "
          f"scoring of the same files {floor_rate:,.0f} files/s; ratio {rate / floor_rate:.2f} "
          f"(target >= 500 files/s: {'met' if rate >= 500 else 'MISSED'})")  # fmt: skip
    return {"files_per_s": rate, "floor_per_s": floor_rate}


def bench_latency(samples: int) -> dict[str, float]:
    with testbed() as bed:
        _prepare(bed, samples)
        watcher = Watcher(bed.spool, bed.url, WatcherConfig(rescan_seconds=3600))
        master = Master(bed.spool, bed.url, watcher, MasterConfig())  # default intervals
        stop = threading.Event()
        thread = threading.Thread(target=master.run, args=(stop,))
        thread.start()
        latencies = []
        with db.connect(bed.url) as conn:
            ids = [r["id"] for r in conn.execute("select id from jobs order by id")]
            for ident in ids:
                time.sleep(random.uniform(0, 1))
                conn.execute("update jobs set state = 'predicted' where id = %s", [ident])
                start = time.perf_counter()
                while conn.execute("select state from jobs where id = %s",
                                   [ident]).fetchone()["state"] != "scored":  # fmt: skip
                    time.sleep(0.005)
                latencies.append(time.perf_counter() - start)
        stop.set()
        thread.join()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"latency   predicted -> scored, {len(latencies)} folds, sweep every 1 s: p50 {ms(p50)}"
          f", p99 {ms(p99)} (target p50 <= 1 s: {'met' if p50 <= 1 else 'MISSED'})")  # fmt: skip
    return {"latency_p50_s": p50, "latency_p99_s": p99}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args(argv)
    figures = bench_throughput(args.files)
    figures.update(bench_latency(args.samples))
    return figures


if __name__ == "__main__":
    main()
