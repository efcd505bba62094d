"""The executor with a real database, real forks of a real zygote, real submissions."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from executor.daemon import Executor
from spool import db
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.helpers.waiting import running, wait_for

HOSTILE = {
    "raises": "raise ValueError('the model refuses this data')",
    "loops": "while True:\n            pass",
    "eats": "hog = bytearray(8 * 2**30)",
    "exits": "import os; os._exit(3)",
    "segfaults": "import ctypes; ctypes.string_at(0)",
    "shouts": "import sys\n        for _ in range(100):\n"
              "            sys.stdout.write('x' * 2**20)\n"
              "        raise RuntimeError('said a lot')",
    "snoops": "import os\n        found = sorted(k for k in os.environ if 'DATABASE' in k or "
              "k.startswith('PG'))\n        for pid in os.listdir('/proc'):\n"
              "            try:\n                text = open(f'/proc/{pid}/environ').read()\n"
              "            except OSError:\n                continue\n"
              "            found += ['/proc'] if 'hunter2' in text else []\n"
              "        raise RuntimeError(f'credentials seen: {found}')",
}  # fmt: skip
REASONS = {
    "raises": "ValueError: the model refuses this data",
    "loops": "timeout after 3 s",
    "eats": "memory limit of 300 MB exceeded",
    "exits": "exited with code 3 before writing its predictions",
    "segfaults": "killed by signal 11 (SIGSEGV)",
    "shouts": "RuntimeError: said a lot",
    "snoops": "RuntimeError: credentials seen: []",
}


def hostile(body: str) -> str:
    return f"""
class Classifier:
    def fit(self, X, y):
        {body}

    def predict_proba(self, X):
        return None
"""


def register(spool, make_watcher, tmp_path: Path, submissions: dict[str, str],
             workflow: str = "classifier", task: str = "classification",
             scores: str | None = None) -> None:  # fmt: skip
    watcher = make_watcher()
    scores = scores or ('["accuracy"]' if task == "classification" else '["r2"]')
    drop(B.dataset(tmp_path / "d", workflow=workflow, task=task, scores=scores,
                   scheme="kfold" if task == "regression" else "stratified_kfold"),
         spool.incoming_datasets)  # fmt: skip
    assert [o.result for o in watcher.run_once()] == ["registered"]
    for name, files in submissions.items():
        root = tmp_path / "subs" / name
        root.mkdir(parents=True)
        for filename, text in (
            json.loads(files).items()
            if files.startswith("{")
            else [
                (
                    f"{workflow.rsplit('+', maxsplit=1)[-1] if '+' in workflow else workflow}.py",
                    files,
                )
            ]
        ):
            (root / filename).write_text(text)
        drop(root, spool.incoming_submissions / "iris")
    outcomes = watcher.run_once()
    assert all(o.result == "registered" for o in outcomes), outcomes


def job_rows(url: str) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(
            "select j.id, j.fold, j.state, j.attempts, j.error, j.error_detail, j.exit_status,"
            " j.prediction_path, j.log_path, s.name from jobs j join submissions s"
            " on s.id = j.submission_id order by j.id"
        ).fetchall()


def drain(executor: Executor) -> int:
    total = 0
    while ran := executor.run_once():
        total += ran
    return total


def test_predictions_match_a_plain_scikit_learn_fit_on_the_same_fold(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path, {"logreg": B.CLASSIFIER})
    assert drain(make_executor()) == 3
    rows = job_rows(database_url)
    assert [(r["state"], r["attempts"], r["exit_status"]) for r in rows] == [
        ("predicted", 1, "ok")
    ] * 3  # fmt: skip
    store = next((spool.store / "datasets").iterdir()) / "prepared"
    train = pd.read_parquet(store / "train.parquet")
    test = pd.read_parquet(store / "test.parquet")
    folds = np.load(store / "folds.npz")
    X, y = train.drop(columns=["target"]), train["target"]
    for row in rows:
        got = np.load(spool.root / row["prediction_path"])
        model = LogisticRegression(max_iter=500).fit(
            X.iloc[folds[f"train_{row['fold']}"]].to_numpy(), y.iloc[folds[f"train_{row['fold']}"]]
        )
        np.testing.assert_allclose(got["train"], model.predict_proba(X.to_numpy()), rtol=0,
                                   atol=1e-12)  # fmt: skip
        assert "target" not in test.columns  # the test labels are kept apart
        np.testing.assert_allclose(got["test"], model.predict_proba(test.to_numpy()), rtol=0,
                                   atol=1e-12)  # fmt: skip
        meta = json.loads((spool.root / row["prediction_path"]).with_suffix(".json").read_text())
        assert meta["attempt"] == 1 and meta["error"] is None and meta["train_seconds"] > 0
        assert meta["peak_rss_bytes"] > 0 and meta["versions"]["scikit-learn"]


FE = """
class FeatureExtractor:
    def fit(self, X, y):
        self.columns = list(X.columns)[:3]
        return self

    def transform(self, X):
        return X[self.columns].to_numpy() * 2.0
"""
CALIBRATOR = """
import numpy as np


class Calibrator:
    def fit(self, y_proba, y):
        self.seen = len(y)
        return self

    def predict_proba(self, y_proba):
        p = np.clip(y_proba, 0.05, 0.95)
        return p / p.sum(axis=1, keepdims=True)
"""


@pytest.mark.parametrize(
    ("workflow", "task", "files"),
    [
        ("estimator", "classification", {"estimator.py": B.ESTIMATOR.format(n=5)}),
        ("regressor", "regression", {"regressor.py": B.REGRESSOR}),
        ("feature_extractor+classifier", "classification",
         {"feature_extractor.py": FE, "classifier.py": B.CLASSIFIER}),
        ("feature_extractor+regressor", "regression",
         {"feature_extractor.py": FE, "regressor.py": B.REGRESSOR}),
        ("feature_extractor+classifier+calibrator", "classification",
         {"feature_extractor.py": FE, "classifier.py": B.CLASSIFIER, "calibrator.py": CALIBRATOR}),
    ],
)  # fmt: skip
def test_every_workflow_predicts_train_and_test(
    spool, make_watcher, make_executor, database_url, tmp_path, workflow, task, files
):
    register(spool, make_watcher, tmp_path, {"sub": json.dumps(files)}, workflow, task)
    assert drain(make_executor()) == 3
    for row in job_rows(database_url):
        assert row["state"] == "predicted", row
        got = np.load(spool.root / row["prediction_path"])
        rows_train = 120 if task == "classification" else 353
        expected = (rows_train, 3) if task == "classification" else (rows_train,)
        assert got["train"].shape == expected and np.isfinite(got["train"]).all()
        assert got["test"].shape[0] > 0
        if workflow.endswith("calibrator"):
            assert got["train"].min() >= 0.05 / 1.1  # the calibrator's clipping shows


@pytest.mark.chaos
def test_hostile_submissions_fail_with_their_reason_and_the_executor_carries_on(
    spool, make_watcher, make_executor, database_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("DATARUN_DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("PGPASSWORD", "hunter2")
    subs = {name: hostile(body) for name, body in HOSTILE.items()}
    subs["good"] = B.CLASSIFIER
    register(spool, make_watcher, tmp_path, subs)
    executor = make_executor(timeout_seconds=3, log_mb=1)
    assert drain(executor) == 3 * len(subs)
    by_name: dict[str, set[str]] = {}
    for row in job_rows(database_url):
        by_name.setdefault(row["name"], set()).add(row["error"] or row["state"])
        assert row["log_path"] and (spool.root / row["log_path"]).is_file()
    assert by_name.pop("good") == {"predicted"}
    for name, reasons in by_name.items():
        assert reasons == {REASONS[name]}, (name, reasons)
    shout_logs = [
        spool.root / r["log_path"] for r in job_rows(database_url) if r["name"] == "shouts"
    ]
    for log in shout_logs:
        size = log.stat().st_size
        assert 2**20 <= size < 2**20 + 500, size
        assert "output capped" in log.read_text()[-200:]


def test_a_failure_keeps_the_submission_traceback(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path, {"raises": hostile(HOSTILE["raises"])})
    drain(make_executor())
    detail = job_rows(database_url)[0]["error_detail"]
    assert detail.startswith("Traceback")
    assert "classifier.py" in detail and "executor/" not in detail


def test_four_executors_run_each_of_200_jobs_exactly_once(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path,
             {f"s{i:02d}": B.CLASSIFIER + f"# {i}\n" for i in range(67)})  # fmt: skip
    with db.connect(database_url) as conn:  # 201 jobs: leave exactly 200 to run
        conn.execute("update jobs set state = 'cancelled' where id = (select max(id) from jobs)")
    executors = [make_executor() for _ in range(4)]
    counts: list[int] = []
    threads = [threading.Thread(target=lambda e=e: counts.append(drain(e))) for e in executors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 200 and all(c > 0 for c in counts), counts
    rows = [r for r in job_rows(database_url) if r["state"] != "cancelled"]
    assert len(rows) == 200
    odd = [r for r in rows if r["state"] != "predicted" or r["attempts"] != 1]
    assert odd == [], odd
    assert len(list(spool.predictions.glob("*.npz"))) == 200


def test_a_job_running_in_the_database_but_not_here_is_handed_back(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    from spool import jobs

    register(spool, make_watcher, tmp_path, {"logreg": B.CLASSIFIER})
    executor = make_executor()
    executor.start()
    with db.connect(database_url) as conn:  # a claim whose completion the server lost
        assert len(jobs.claim(conn, executor.id, ["high", "low"], 1)) == 1
    executor.beat_once()
    assert job_rows(database_url)[0]["state"] == "running"  # once could be a race
    executor.beat_once()
    row = job_rows(database_url)[0]
    assert (row["state"], row["attempts"]) == ("queued", 1)  # the attempt counts


def test_a_completion_waiting_for_the_next_claim_is_not_taken_for_an_orphan(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    import time

    slow = hostile("import time; time.sleep(5)")
    register(spool, make_watcher, tmp_path, {"fast": B.CLASSIFIER, "slow": slow})
    with db.connect(database_url) as conn:  # one fold of each, claimed together
        conn.execute("update jobs set state = 'cancelled' where fold <> 0")
    executor = make_executor(workers=2)
    ran = threading.Thread(target=executor.run_once)
    ran.start()
    try:  # the fast fold is published; its completion waits for the slow one's
        deadline = time.monotonic() + 30
        while not list(spool.predictions.glob("*.npz")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(spool.predictions.glob("*.npz"))
        executor.beat_once()
        executor.beat_once()  # twice in a row: an orphan would be handed back now
    finally:
        ran.join()
    states = {r["name"]: (r["state"], r["attempts"]) for r in job_rows(database_url)
              if r["state"] != "cancelled"}  # fmt: skip
    assert states == {"fast": ("predicted", 1), "slow": ("failed", 1)}
    with db.connect(database_url) as conn:
        outcomes = [r["outcome"] for r in conn.execute("select outcome from attempts")]
    assert sorted(outcomes) == ["failed", "predicted"]


def test_cancelling_a_running_submission_stops_its_folds(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    from spool import jobs

    slow = hostile("import time; time.sleep(30)")
    register(spool, make_watcher, tmp_path, {"slow": slow})
    executor = make_executor(workers=2)
    with running(executor):
        wait_for(lambda: sum(r["state"] == "running" for r in job_rows(database_url)) == 2,
                 30, "two folds running")  # fmt: skip
        with db.connect(database_url) as conn:
            assert jobs.cancel(conn, 1) == {"running": 2, "queued": 1}
        # stopped at the next heartbeat, not after 30 s
        wait_for(lambda: not executor.zygote.running(), 15, "the cancelled folds to stop")
    assert {r["state"] for r in job_rows(database_url)} == {"cancelled"}
    assert list(spool.predictions.glob("*.npz")) == []
