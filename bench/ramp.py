"""RAMP kits (issue 8): datarun against `ramp-test` once per submission, one after the
other, on the same machine and the same kit.

The kit: binary classification on 2,000 generated rows, 20 features, 8 stratified
folds, scored with accuracy, ROC AUC and negative log likelihood; `--submissions`
random forests of slightly different sizes. ramp-test: `ramp-test --submission S`
for each, in a loop. datarun: a master (intake, sweeper, results) and one executor
with `--workers` workers, in this process; timed from the kit's drop to the last
submission's bagged scores. Target: datarun >= 1.8x faster with 2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import connected, idle_until, settle, testbed, wait
from executor.daemon import Executor, ExecutorConfig
from spool import db
from watcher.daemon import Watcher, WatcherConfig
from watcher.master import Master, MasterConfig

PROBLEM = """\
import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import StratifiedKFold

problem_title = "datarun benchmark"
Predictions = rw.prediction_types.make_multiclass(label_names=[0, 1])
workflow = rw.workflows.Classifier()
score_types = [
    rw.score_types.Accuracy(name="acc"),
    rw.score_types.ROCAUC(name="auc"),
    rw.score_types.NegativeLogLikelihood(name="nll"),
]


def get_cv(X, y):
    return StratifiedKFold(n_splits={folds}, shuffle=True, random_state=7).split(X, y)


def _read(path, name):
    data = pd.read_csv(os.path.join(path, "data", name))
    return data.drop(columns=["target"]).to_numpy(), data["target"].to_numpy()


def get_train_data(path="."):
    return _read(path, "train.csv")


def get_test_data(path="."):
    return _read(path, "test.csv")
"""

CLASSIFIER = """\
from sklearn.ensemble import RandomForestClassifier


class Classifier:
    def __init__(self):
        self.model = RandomForestClassifier(n_estimators={trees}, random_state=0, n_jobs=1)

    def fit(self, X, y):
        self.model.fit(X, y)

    def predict_proba(self, X):
        return self.model.predict_proba(X)
"""


IDLE_SECONDS = 3.0  # from the daemons' start to the drop, in a full-size run
IDLE_HELP = "seconds from the daemons' start to the drop (never before they are up)"


def write_kit(where: Path, folds: int, submissions: int, trees: int = 40) -> Path:
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2500, n_features=20, n_informative=8, random_state=3)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(20)]).assign(target=y)
    kit = where / "bench_kit"
    (kit / "data").mkdir(parents=True)
    frame.iloc[:2000].to_csv(kit / "data" / "train.csv", index=False)
    frame.iloc[2000:].to_csv(kit / "data" / "test.csv", index=False)
    (kit / "problem.py").write_text(PROBLEM.replace("{folds}", str(folds)))
    for i in range(submissions):
        sub = kit / "submissions" / f"forest_{i:02d}"
        sub.mkdir(parents=True)
        (sub / "classifier.py").write_text(CLASSIFIER.replace("{trees}", str(trees + i)))
    return kit


def run_ramp_test(kit: Path, names: list[str]) -> float:
    script = Path(sys.executable).parent / "ramp-test"
    start = time.perf_counter()
    for name in names:
        subprocess.run([str(script), "--submission", name], cwd=kit, check=True,
                       capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def run_datarun(
    kit: Path, submissions: int, folds: int, workers: int, *, score: bool = True,
    idle: float = IDLE_SECONDS,
) -> tuple[float, float, float]:  # fmt: skip
    """Wall time from the drop to the last bagged score; to the last fold scored; and
    from the first claim to the last fold's end (the executor's share). Without
    `score`, only the watcher runs beside the executor (no sweeper, no results), and
    the run ends at the last fold predicted. The kit is dropped `idle` seconds after
    the daemons start, and not before they are up."""
    with testbed() as bed:
        watcher = Watcher(bed.spool, bed.url, WatcherConfig(rescan_seconds=3600))
        master = Master(bed.spool, bed.url, watcher, MasterConfig())  # default intervals
        executor = Executor(bed.url, bed.spool, ExecutorConfig(workers=workers))
        stop = threading.Event()
        threads = [threading.Thread(target=master.run if score else watcher.run, args=(stop,)),
                   threading.Thread(target=executor.run, args=(stop,))]  # fmt: skip
        for thread in threads:
            thread.start()
        started = time.monotonic()
        # both up and idle: the zygote warm (it is before the executor registers), the
        # watcher watching (its observer starts before its first pass connects)
        up = {"datarun watcher", *(["datarun sweeper"] if score else [])}
        wait(lambda: executor.id is not None and up <= connected(bed), 120, "the daemons")
        idle_until(started, idle)
        copy = shutil.copytree(kit, bed.spool.root.parent / "src" / kit.name)
        start = time.perf_counter()
        settle(copy).rename(bed.spool.incoming_datasets / kit.name)
        scored_at = None
        with db.connect(bed.url) as conn:
            while True:
                row = conn.execute(
                    "select (select count(*) from jobs where state = %s) as scored,"
                    " (select count(distinct submission_id) from bagged_scores) as bagged,"
                    " (select count(*) from jobs where state = 'failed') as failed",
                    ["scored" if score else "predicted"],
                ).fetchone()
                assert row is not None and row["failed"] == 0, "a fold failed"
                if scored_at is None and row["scored"] == submissions * folds:
                    scored_at = time.perf_counter() - start
                if row["bagged"] == submissions or (not score and scored_at is not None):
                    break
                time.sleep(0.05)
            span = conn.execute(
                "select extract(epoch from max(finished_at) - min(claimed_at)) as s,"
                " avg(extract(epoch from finished_at - claimed_at)) as fold,"
                " avg(train_seconds + valid_seconds + coalesce(test_seconds, 0)) as work,"
                " avg(cpu_seconds) as cpu from jobs"
            ).fetchone()
            if span and not score:
                print(
                    f"          per fold: {span['fold'] * 1000:.0f} ms from claim to "
                    f"completion, of which the workflow's fit and predictions "
                    f"{span['work'] * 1000:.0f} ms; the child's CPU {span['cpu'] * 1000:.0f} ms"
                )
        wall = time.perf_counter() - start
        stop.set()
        for thread in threads:
            thread.join()
        executor.close()
        watcher.close()
    return wall, scored_at or wall, float(span["s"]) if span else wall


def run_joblib(kit: Path, names: list[str], workers: int) -> float:
    """The same fits as datarun's folds (train on the fold's rows, predict the whole
    training set and the test set), by joblib.Parallel(n_jobs=workers), one process."""
    import rampwf as rw
    from joblib import Parallel, delayed

    problem = rw.utils.assert_read_problem(str(kit))
    X, y = problem.get_train_data(str(kit))
    X_test, _ = problem.get_test_data(str(kit))
    folds = list(problem.get_cv(X, y))
    first = str(kit / "submissions" / names[0])
    parallel = Parallel(n_jobs=workers)
    # Untimed, as datarun's warm zygote: joblib's workers started, scikit-learn imported.
    parallel(delayed(_fit)(problem.workflow, first, (X, y, X_test), folds[0][0][:50])
             for _ in range(workers))  # fmt: skip
    start = time.perf_counter()
    parallel(
        delayed(_fit)(problem.workflow, str(kit / "submissions" / name), (X, y, X_test), rows)
        for name in names for rows, _ in folds
    )  # fmt: skip
    return time.perf_counter() - start


def _fit(workflow: Any, path: str, data: tuple[Any, Any, Any], rows: Any) -> None:
    X, y, X_test = data
    trained = workflow.train_submission(path, X, y, rows)
    workflow.test_submission(trained, X)
    workflow.test_submission(trained, X_test)


def load_main(argv: list[str] | None = None) -> dict[str, float]:
    """python -m bench load: random forests of 100 trees on a RAMP kit, 8 folds, 10
    submissions: datarun's executor (first claim to last fold, with only the watcher
    beside it) against joblib.Parallel(n_jobs=2) running the same 80 fits in one
    process (workers started beforehand, as datarun's zygote). Then the same with the
    master scoring meanwhile, from the drop. Target: ratio <= 1.05 (issue 18; 1.10 before)."""
    parser = argparse.ArgumentParser(prog="python -m bench load", description=load_main.__doc__)
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--submissions", type=int, default=10)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS, help=IDLE_HELP)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="datarun-bench-load-", dir="/tmp"))
    try:
        kit = write_kit(scratch / "kit", args.folds, args.submissions, args.trees)
        names = sorted(p.name for p in (kit / "submissions").iterdir())
        baseline = run_joblib(kit, names, args.workers)
        _, _, executing = run_datarun(kit, args.submissions, args.folds, args.workers,
                                      score=False, idle=args.idle_seconds)  # fmt: skip
        _, scored, _ = run_datarun(kit, args.submissions, args.folds, args.workers,
                                   idle=args.idle_seconds)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = executing / baseline
    n = args.submissions * args.folds
    print(f"load      {n} folds of {args.trees}-tree forests, {args.workers} workers: "
          f"joblib.Parallel {baseline:.1f} s; datarun's executor {executing:.1f} s (first claim "
          f"to last fold, the master's sweeper off); with the sweeper scoring meanwhile "
          f"{scored:.1f} s from the drop to the last fold scored; ratio "
          f"{ratio:.2f} (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")  # fmt: skip
    return {"joblib_s": baseline, "datarun_s": executing, "ratio": ratio}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench ramp", description=__doc__)
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--submissions", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS, help=IDLE_HELP)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="datarun-bench-ramp-", dir="/tmp"))
    try:
        kit = write_kit(scratch / "kit", args.folds, args.submissions)
        names = sorted(p.name for p in (kit / "submissions").iterdir())
        theirs = run_ramp_test(shutil.copytree(kit, scratch / "theirs"), names)
        ours, scored, _ = run_datarun(kit, args.submissions, args.folds, args.workers,
                                      idle=args.idle_seconds)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = theirs / ours
    print(f"ramp      {args.submissions} submissions x {args.folds} folds: ramp-test one after "
          f"the other {theirs:.1f} s; datarun ({args.workers} workers) {ours:.1f} s to the last "
          f"bagged score ({scored:.1f} s to the last fold scored); ratio {ratio:.2f}x "
          f"(target >= 1.8x: {'met' if ratio >= 1.8 else 'MISSED'})")  # fmt: skip
    return {"ramp_test_s": theirs, "datarun_s": ours, "ratio": ratio}


if __name__ == "__main__":
    main()
