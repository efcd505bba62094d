"""Each score is computed from the response scikit-learn's own scorer would take from
the submission's estimator (`decision_function` before `predict_proba` for ROC AUC,
`predict` for accuracy), so it equals `cross_validate`'s to the bit; an estimator
without `predict_proba` scores what needs no probabilities and fails, in one line,
what does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.metrics import get_scorer
from sklearn.model_selection import cross_validate
from threadpoolctl import threadpool_limits

from spool import db
from tests.conftest import drop
from tests.integration.test_executor import drain, job_rows
from watcher.sweeper import Sweeper

CONFIDENT = """\
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def get_estimator():
    return make_pipeline(StandardScaler(), LogisticRegression(C=1e4, max_iter=10000))
"""
MARGIN = """\
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC


def get_estimator():
    return make_pipeline(StandardScaler(), LinearSVC(C=0.5))
"""
PLATT = """\
from sklearn.svm import SVC


def get_estimator():
    return SVC(probability=True, random_state=0)
"""

TOML = """\
name = "{name}"
target = "target"
task = "classification"
workflow = "estimator"
scores = {scores}

[data]
train = "train.csv"
test_fraction = 0.25

[cv]
scheme = "stratified_kfold"
n_splits = 3
"""


def dataset(spool, tmp_path: Path, name: str, frame: pd.DataFrame, scores: list[str]) -> None:
    root = tmp_path / "datasets" / name
    root.mkdir(parents=True)
    frame.to_csv(root / "train.csv", index=False)
    (root / "dataset.toml").write_text(TOML.format(name=name, scores=json.dumps(scores)))
    drop(root, spool.incoming_datasets)


def submit(spool, tmp_path: Path, dataset: str, name: str, code: str) -> None:
    root = tmp_path / "subs" / dataset / name
    root.mkdir(parents=True)
    (root / "estimator.py").write_text(code)
    drop(root, spool.incoming_submissions / dataset)


def scores_of(url: str, submission: str) -> dict[tuple[int, str, str], float]:
    with db.connect(url) as conn:
        rows = conn.execute(
            "select j.fold, s.split, s.metric, s.value from scores s join jobs j"
            " on j.id = s.job_id join submissions u on u.id = j.submission_id"
            " where u.name = %s", (submission,)).fetchall()  # fmt: skip
    return {(r["fold"], r["split"], r["metric"]): r["value"] for r in rows}


def expected_scores(store: Path, estimator, metrics: list[str]) -> dict:
    """What cross_validate gives on datarun's folds, and each fold's model on the
    held-out test rows, scored by the same scorers."""
    prepared = store / "prepared"
    train = pd.read_parquet(prepared / "train.parquet")
    test = pd.read_parquet(prepared / "test.parquet")
    labels = pd.read_parquet(prepared / "test_labels.parquet")["target"].to_numpy()
    folds = np.load(prepared / "folds.npz")
    cv = [(folds[f"train_{k}"], folds[f"valid_{k}"]) for k in range(3)]
    X, y = train.drop(columns=["target"]), train["target"].to_numpy()
    out = {}
    with threadpool_limits(1):  # as in the fold's child: same arithmetic, same bits
        got = cross_validate(estimator, X, y, cv=cv, scoring=metrics, return_train_score=True,
                             return_estimator=True)  # fmt: skip
        for k in range(3):
            for metric in metrics:
                out[k, "train", metric] = got[f"train_{metric}"][k]
                out[k, "valid", metric] = got[f"test_{metric}"][k]
                model = got["estimator"][k]
                out[k, "test", metric] = get_scorer(metric)(model, test, labels)
    return out


def store_of(spool, url: str, name: str) -> Path:
    with db.connect(url) as conn:
        row = conn.execute("select store_path from datasets where name = %s", (name,)).fetchone()
    return spool.absolute(row["store_path"])


@pytest.fixture
def sweeper(spool, database_url):
    database = db.Database(database_url, name="test responses").open()
    sweeper = Sweeper(spool, database)
    yield sweeper
    sweeper.close()
    database.close()


def test_each_score_takes_the_response_scikit_learns_scorer_takes(
    spool, make_watcher, make_executor, database_url, tmp_path, sweeper
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    binary = ["roc_auc", "average_precision", "accuracy", "neg_log_loss"]
    no_proba = ["roc_auc", "average_precision", "accuracy", "f1"]
    multi = ["accuracy", "roc_auc_ovr", "neg_log_loss", "top_k_accuracy"]
    cancer = load_breast_cancer(as_frame=True).frame
    watcher = make_watcher()
    dataset(spool, tmp_path, "cancer", cancer, binary)
    dataset(spool, tmp_path, "margins", cancer, no_proba)
    dataset(spool, tmp_path, "flowers", load_iris(as_frame=True).frame, multi)
    assert [o.result for o in watcher.run_once()] == ["registered"] * 3
    submit(spool, tmp_path, "cancer", "confident", CONFIDENT)
    submit(spool, tmp_path, "cancer", "svc_no_proba", MARGIN)
    submit(spool, tmp_path, "margins", "svc", MARGIN)
    submit(spool, tmp_path, "flowers", "platt", PLATT)
    assert all(o.result == "registered" for o in watcher.run_once())
    drain(make_executor(threads=1))
    while sweeper.sweep_once().scored:
        pass

    cases = {
        "confident": ("cancer", make_pipeline(StandardScaler(),
                                              LogisticRegression(C=1e4, max_iter=10000)),
                      binary),
        "svc": ("margins", make_pipeline(StandardScaler(), LinearSVC(C=0.5)), no_proba),
        "platt": ("flowers", SVC(probability=True, random_state=0), multi),
    }  # fmt: skip
    for submission, (name, estimator, metrics) in cases.items():
        want = expected_scores(store_of(spool, database_url, name), clone(estimator), metrics)
        got = scores_of(database_url, submission)
        assert got.keys() == want.keys(), submission
        differ = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        assert not differ, (submission, differ)  # exactly, not approximately

    failed = [r for r in job_rows(database_url) if r["name"] == "svc_no_proba"]
    assert [r["state"] for r in failed] == ["failed"] * 3
    for row in failed:
        assert row["error"] == (
            "MissingResponse: the score neg_log_loss needs predict_proba, which the estimator "
            "Pipeline does not have (it has predict, decision_function)"
        ), row["error"]
