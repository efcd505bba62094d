"""python -m bench deadline: the last hour of a course's challenge (issue 18).

Submissions from many teams dropped within a few seconds on two datasets: iris (tiny
folds) and a larger one whose folds take about a second (random forests); 5 folds
each, a few broken on purpose. A master and one executor (as many workers as cores)
run in this process, as `datarun master` and `datarun executor` would.

Figures: the time from the first drop to the last submission's complete results
(`status.json` in its final state), against the same fits run by
`joblib.Parallel(n_jobs=cores)` in one process in the same run (its workers started
beforehand, as datarun's zygote is); target ratio <= 1.15. And, per submission, the
time from its drop to its complete `status.json`: p50 and p99, what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    DATASET,
    MachineCpu,
    attempts_cpu,
    connected,
    percentile,
    settle,
    testbed,
    wait,
)
from executor.daemon import Executor, ExecutorConfig
from spool import db
from watcher.daemon import Watcher, WatcherConfig
from watcher.master import Master, MasterConfig

FOLDS = 5
POLL_SECONDS = 0.1  # the figures' resolution: 0.1 s of nights that last minutes
MODEL = {
    "tiny": "LogisticRegression(max_iter=500)",
    "forest": "RandomForestClassifier(n_estimators={trees}, random_state={variant})",
}
CLASSIFIER = """\
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression


class Classifier:
    def __init__(self):
        self.model = {model}

    def fit(self, X, y):
        {broken}self.model.fit(X, y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)
# variant {variant}
"""


@dataclass(frozen=True)
class Drop:
    dataset: str
    team: str
    name: str
    variant: int
    broken: bool

    @property
    def label(self) -> str:
        return f"{self.team}.{self.name}.v1"


def plan(submissions: int, teams: int, broken_every: int) -> list[Drop]:
    """Half the submissions on each dataset, teams in turn, every `broken_every`-th broken."""
    drops = []
    for i in range(submissions):
        dataset = "tiny" if i % 2 == 0 else "forest"
        drops.append(Drop(dataset, f"t{i % teams:02d}", f"s{i:03d}", i,
                          broken_every > 0 and i % broken_every == broken_every - 1))  # fmt: skip
    return drops


def frames(rows: int) -> dict[str, Any]:
    from sklearn.datasets import load_iris, make_classification

    iris = load_iris(as_frame=True).frame
    X, y = make_classification(n_samples=rows, n_features=20, n_informative=8,
                               random_state=0)  # fmt: skip
    import pandas as pd

    forest = pd.DataFrame(X, columns=[f"x{k}" for k in range(X.shape[1])])
    forest["target"] = y
    return {"tiny": iris, "forest": forest}


def write_bundles(where: Path, drops: list[Drop], data: dict[str, Any], trees: int) -> None:
    for name, frame in data.items():
        root = where / "datasets" / name
        root.mkdir(parents=True)
        frame.to_csv(root / "train.csv", index=False)
        (root / "dataset.toml").write_text(DATASET.format(name=name, folds=FOLDS))
    for drop in drops:
        root = where / "submissions" / drop.dataset / drop.name
        root.mkdir(parents=True)
        model = MODEL[drop.dataset].format(trees=trees, variant=drop.variant)
        broken = "raise ValueError('broken on purpose')\n        " if drop.broken else ""
        (root / "classifier.py").write_text(
            CLASSIFIER.format(model=model, broken=broken, variant=drop.variant)
        )
        (root / "submission.toml").write_text(f'team = "{drop.team}"\n')


@dataclass(frozen=True)
class Night:
    wall: float  # the first drop to the last complete status.json
    waits: list[float]  # each submission's drop to its complete status.json
    cpu: MachineCpu  # the machine's, over the night
    folds_cpu: float  # the folds' children's (their attempts' cpu_seconds)

    @property
    def rest_cpu(self) -> float:
        """The machine's busy CPU that was not the folds': datarun's own, and the rest."""
        return self.cpu.busy - self.folds_cpu


def run_datarun(where: Path, drops: list[Drop], workers: int) -> Night:
    with testbed() as bed:
        watcher = Watcher(bed.spool, bed.url, WatcherConfig(rescan_seconds=3600))
        master = Master(bed.spool, bed.url, watcher, MasterConfig())
        executor = Executor(bed.url, bed.spool, ExecutorConfig(workers=workers))
        stop = threading.Event()
        threads = [threading.Thread(target=master.run, args=(stop,)),
                   threading.Thread(target=executor.run, args=(stop,))]  # fmt: skip
        for thread in threads:
            thread.start()
        try:
            wait(lambda: executor.id is not None
                 and {"datarun watcher", "datarun sweeper"} <= connected(bed),
                 120, "the daemons")  # fmt: skip
            for name in ("tiny", "forest"):  # registered before the night begins
                source = settle(where / "datasets" / name)
                source.rename(bed.spool.incoming_datasets / name)
            for name in ("tiny", "forest"):
                wait((bed.spool.incoming_submissions / name).is_dir, 120, f"dataset {name}")
            before = MachineCpu.now()
            wall, waits = _night(bed.spool.root, drops, where)
            cpu = MachineCpu.now() - before
            with db.connect(bed.url) as conn:
                return Night(wall, waits, cpu, attempts_cpu(conn))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            executor.close()
            watcher.close()


def _night(spool_root: Path, drops: list[Drop], where: Path) -> tuple[float, list[float]]:
    sources = [settle(where / "submissions" / d.dataset / d.name) for d in drops]
    statuses = {d.label: str(spool_root / "results" / d.dataset / d.label / "status.json")
                for d in drops}  # fmt: skip
    dropped: dict[str, float] = {}
    start = time.perf_counter()
    for drop, source in zip(drops, sources, strict=True):
        source.rename(spool_root / "incoming" / "submissions" / drop.dataset / drop.name)
        dropped[drop.label] = time.perf_counter()
    done: dict[str, float] = {}
    seen: dict[str, tuple[tuple[int, int, int], float]] = {}  # label: (file's look, read at)
    deadline = time.monotonic() + 3600
    while len(done) < len(drops):
        for label, path in statuses.items():
            if label not in done and _complete(path, label, seen):
                done[label] = time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(drops) - len(done)} submissions never completed")
        time.sleep(POLL_SECONDS)
    return max(done.values()) - start, [done[k] - dropped[k] for k in dropped]


def _complete(path: str, label: str, seen: dict[str, tuple[tuple[int, int, int], float]]) -> bool:
    """Whether the status.json at `path` is final. Read when it looks changed (inode,
    mtime, size), and at least once a second in case a change kept that look: this
    loop shares the daemons' process (reading every file 50 times a second held the GIL
    for 3.6 s of a 75 s night; stat-ing them through pathlib, 1.7 s of a 128 s one)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    look, now = (info.st_ino, info.st_mtime_ns, info.st_size), time.monotonic()
    last = seen.get(label)
    if last is not None and last[0] == look and now - last[1] < 1:
        return False
    seen[label] = (look, now)
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
    except (OSError, ValueError):
        seen.pop(label, None)
        return False
    if status.get("state") not in ("scored", "failed"):
        return False
    return all(f.get("state") in ("scored", "failed") for f in status.get("folds", []))


def run_joblib(
    data: dict[str, Any], drops: list[Drop], trees: int, workers: int
) -> tuple[float, MachineCpu]:
    """The same fits (train on the fold's rows, predict the whole training set and the
    test set) of every submission that is not broken, by joblib.Parallel, one process:
    its wall time, and the machine's CPU meanwhile."""
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold, train_test_split

    prepared = {}
    for name, frame in data.items():
        X, y = frame.drop(columns="target").to_numpy(), frame["target"].to_numpy()
        X, X_test, y, _ = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
        folds = [rows for rows, _ in StratifiedKFold(FOLDS, shuffle=True,
                                                     random_state=0).split(X, y)]  # fmt: skip
        prepared[name] = (X, y, X_test, folds)
    parallel = Parallel(n_jobs=workers)
    parallel(
        delayed(_fit)("tiny", 0, trees, prepared["tiny"], prepared["tiny"][3][0])
        for _ in range(workers)
    )  # untimed: workers started, scikit-learn imported
    start, before = time.perf_counter(), MachineCpu.now()
    parallel(delayed(_fit)(d.dataset, d.variant, trees, prepared[d.dataset], rows)
             for d in drops if not d.broken for rows in prepared[d.dataset][3])  # fmt: skip
    return time.perf_counter() - start, MachineCpu.now() - before


def _fit(dataset: str, variant: int, trees: int, data: Any, rows: Any) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X, y, X_test, _ = data
    model = LogisticRegression(max_iter=500) if dataset == "tiny" else \
        RandomForestClassifier(n_estimators=trees, random_state=variant)  # fmt: skip
    model.fit(X[rows], y[rows])
    model.predict_proba(X)
    model.predict_proba(X_test)


def _print_cpu(night: Night, joblib: MachineCpu) -> None:
    """Where the ratio comes from, in core-seconds of the same run: the folds' own CPU
    against joblib's (both on a machine whose speed moves), and datarun's around them."""
    cpu = night.cpu
    print(f"          the machine's CPU in core-seconds: the night busy {cpu.busy:.1f} "
          f"(the folds' children {night.folds_cpu:.1f}, the rest "
          f"{night.rest_cpu:.1f}), idle {cpu.idle:.1f}, stolen "
          f"{cpu.stolen:.1f}; joblib's run busy {joblib.busy:.1f}, idle {joblib.idle:.1f}, "
          f"stolen {joblib.stolen:.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench deadline", description=__doc__)
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--broken-every", type=int, default=20, help="every Nth is broken")
    parser.add_argument("--rows", type=int, default=20000, help="rows of the forest dataset")
    parser.add_argument("--trees", type=int, default=40, help="trees of its forests")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    drops = plan(args.submissions, args.teams, args.broken_every)
    data = frames(args.rows)
    where = Path(os.environ.get("TMPDIR", "/tmp")) / f"datarun-bench-deadline-{os.getpid()}"
    try:
        write_bundles(where, drops, data, args.trees)
        baseline, joblib_cpu = run_joblib(data, drops, args.trees, args.workers)
        night = run_datarun(where, drops, args.workers)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    wall = night.wall
    ratio = wall / baseline
    p50, p99 = percentile(night.waits, 50), percentile(night.waits, 99)
    broken = sum(d.broken for d in drops)
    print(f"deadline  {len(drops)} submissions of {args.teams} teams ({broken} broken) x "
          f"{FOLDS} folds on 2 datasets, {args.workers} workers: first drop to last "
          f"complete status.json {wall:.1f} s; joblib.Parallel the same fits {baseline:.1f} s;"
          f" ratio {ratio:.2f} (target <= 1.15: {'met' if ratio <= 1.15 else 'MISSED'}); "
          f"drop to complete status.json p50 {p50:.1f} s, p99 {p99:.1f} s")  # fmt: skip
    _print_cpu(night, joblib_cpu)
    return {"datarun_s": wall, "joblib_s": baseline, "ratio": ratio, "wait_p50_s": p50,
            "wait_p99_s": p99, "folds_cpu_s": night.folds_cpu,
            "rest_cpu_s": night.rest_cpu, "joblib_cpu_s": joblib_cpu.busy}  # fmt: skip


if __name__ == "__main__":
    main()
