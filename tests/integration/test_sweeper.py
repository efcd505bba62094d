"""The sweeper and the results files, with real predictions from a real executor."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import tracemalloc
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.lib import format as npformat
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from threadpoolctl import threadpool_limits

from spool import db, jobs
from tests.helpers import bundles as B
from tests.integration.test_executor import drain, hostile, job_rows, register
from watcher import scorers
from watcher.results import Results
from watcher.sweeper import Sweeper, SweepResult

METRICS = ["accuracy", "neg_log_loss", "balanced_accuracy"]


@pytest.fixture
def back_half(spool, database_url):
    database = db.Database(database_url, name="test sweeper").open()
    sweeper = Sweeper(spool, database)
    yield sweeper, Results(spool, database, sweeper)
    sweeper.close()
    database.close()


def registered(spool, make_watcher, tmp_path, **subs: str) -> None:
    register(spool, make_watcher, tmp_path, subs, scores=json.dumps(METRICS))


def query(url: str, sql: str, *params) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.mark.parametrize("twins", [False, True], ids=["scorers", "fast twins"])
def test_scores_equal_cross_validate_on_the_same_folds(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half, monkeypatch, twins
):
    from watcher import fastscore, scoring

    monkeypatch.setattr(fastscore, "CHECKS", 0 if twins else 10**9)  # twins alone, or never
    scoring._guarded.cache_clear()
    sweeper, _ = back_half
    registered(spool, make_watcher, tmp_path, logreg=B.CLASSIFIER)
    drain(make_executor())
    assert sweeper.sweep_once().scored == 3
    prepared = next((spool.store / "datasets").iterdir()) / "prepared"
    train = pd.read_parquet(prepared / "train.parquet")
    folds = np.load(prepared / "folds.npz")
    cv = [(folds[f"train_{k}"], folds[f"valid_{k}"]) for k in range(3)]
    X, y = train.drop(columns=["target"]).to_numpy(), train["target"].to_numpy()
    with threadpool_limits(1):  # as in the fold's child: same arithmetic, same bits
        expected = cross_validate(LogisticRegression(max_iter=500), X, y, cv=cv,
                                  scoring=METRICS, return_train_score=True)  # fmt: skip
    got = query(database_url, "select j.fold, s.split, s.metric, s.value from scores s"
                " join jobs j on j.id = s.job_id")  # fmt: skip
    assert len(got) == 3 * 3 * 3
    for row in got:
        if row["split"] == "test":
            continue
        key = ("test_" if row["split"] == "valid" else "train_") + row["metric"]
        assert row["value"] == expected[key][row["fold"]], row  # exactly, not approximately


def test_sweeping_twice_changes_nothing(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half
):
    sweeper, _ = back_half
    registered(spool, make_watcher, tmp_path, logreg=B.CLASSIFIER)
    drain(make_executor())
    assert sweeper.sweep_once().scored == 3
    before = query(database_url, "select * from scores order by job_id, split, metric")
    with db.connect(database_url) as conn:  # the same files offered again
        conn.execute("update jobs set state = 'predicted'")
    assert sweeper.sweep_once().scored == 3
    assert query(database_url, "select * from scores order by job_id, split, metric") == before
    assert {r["state"] for r in job_rows(database_url)} == {"scored"}


def test_scores_are_computed_in_a_confined_child_not_in_the_master(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half
):
    """A native dataset's scoring child: the master's own process parses no prediction
    file; a root master's child reads the test labels, then sees only predictions/,
    read-only, as the kits' user, with no network."""
    from executor.isolation import probe
    from spool.kitsandbox import kit_ids

    sweeper, _ = back_half
    registered(spool, make_watcher, tmp_path, logreg=B.CLASSIFIER)
    drain(make_executor())
    assert sweeper.sweep_once().scored == 3
    [child] = sweeper.scorers._children.values()
    assert child.pid is not None and child.pid != os.getpid()
    if os.geteuid() != 0 or not probe(loud=False).namespaces:
        pytest.skip("a confined scoring child needs a root master with namespaces")
    ids = kit_ids()
    assert ids is not None
    uids = Path(f"/proc/{child.pid}/status").read_text().split("Uid:")[1].split()[:4]
    assert {int(u) for u in uids} == {ids[0]}
    seen = Path(f"/proc/{child.pid}/root")
    store = next((spool.store / "datasets").iterdir())
    assert (seen / str(spool.predictions).lstrip("/")).is_dir()
    assert not (seen / str(store).lstrip("/")).exists()  # nor the test labels
    assert not (seen / str(spool.results).lstrip("/")).exists()
    net = Path(f"/proc/{child.pid}/ns/net").readlink()
    assert net != Path("/proc/self/ns/net").readlink()
    with db.connect(database_url) as conn:  # it still scores, confined
        conn.execute("update jobs set state = 'predicted'")
    assert sweeper.sweep_once().scored == 3


def test_an_idle_scoring_child_is_stopped_and_the_next_work_starts_one(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half, monkeypatch
):
    sweeper, _ = back_half
    registered(spool, make_watcher, tmp_path, logreg=B.CLASSIFIER)
    drain(make_executor())
    assert sweeper.sweep_once().scored == 3
    [child] = sweeper.scorers._children.values()
    pid = child.pid
    assert pid is not None
    monkeypatch.setattr(scorers, "IDLE", 0.0)
    assert sweeper.sweep_once() == SweepResult(0, 0)  # no work: it is stopped
    assert not Path(f"/proc/{pid}").exists() and not sweeper.scorers._children
    monkeypatch.setattr(scorers, "IDLE", 300.0)
    with db.connect(database_url) as conn:
        conn.execute("update jobs set state = 'predicted'")
    assert sweeper.sweep_once().scored == 3  # a new child
    [child] = sweeper.scorers._children.values()
    assert child.pid not in (None, pid)


DAMAGES = {
    "shape": "'train' has shape (120, 2), expected (120, 3)",
    "nan": "'train' holds 1 NaN or infinite values",
    "text": "'train' has type <U1, expected bool, integers or floats",
    "garbage": "not a .npz file",
    "attempt": "its metadata names another job or attempt",
    "ones": "'train' predictions are not probabilities: 120 rows do not sum to 1 (row 0 sums to 3)",
    "above": "'test' predictions are not probabilities: 1 values above 1",
    "negative": "'train' predictions are not probabilities: 1 values below 0",
    "scaled": "'train' predictions are not probabilities: 1 rows do not sum to 1",
}


def damage(path: Path, how: str) -> None:
    """Spoil one real prediction file (and its metadata) the way `how` says."""
    arrays = dict(np.load(path))
    if how == "shape":
        arrays["train"] = arrays["train"][:, :2]
    elif how == "nan":
        arrays["train"][0, 0] = np.nan
    elif how == "text":
        arrays["train"] = np.full(arrays["train"].shape, "x")
    elif how == "ones":  # the predict_proba: a perfect log loss, once
        arrays["train"] = np.ones_like(arrays["train"])
    elif how == "above":
        arrays["test"][3, 1] = 1.0000001
    elif how == "negative":
        arrays["train"][5, 2] = -1e-12
    elif how == "scaled":  # beyond scikit-learn's tolerance, sqrt(eps) + 1e-8
        arrays["train"][7] *= 1 + 1e-7
    if how == "garbage":
        path.write_bytes(b"not an npz")
    elif how == "attempt":
        meta = json.loads(path.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**meta, "attempt": 7}))
    else:
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)


def test_a_bad_prediction_file_fails_its_job_with_the_reason(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half
):
    sweeper, _ = back_half
    # four submissions of three folds: a job per kind of damage, and three left whole,
    # swept in one pass
    registered(spool, make_watcher, tmp_path,
               **{f"s{i}": B.CLASSIFIER + f"\n# {i}\n" for i in range(4)})  # fmt: skip
    drain(make_executor())
    rows = job_rows(database_url)
    assert len(rows) == len(DAMAGES) + 3
    spoiled = {}
    for row, how in zip(rows, DAMAGES, strict=False):
        damage(spool.root / row["prediction_path"], how)
        spoiled[row["id"]] = how
    result = sweeper.sweep_once()
    assert (result.scored, result.failed) == (3, len(DAMAGES))
    for row in job_rows(database_url):
        if row["id"] not in spoiled:
            assert row["state"] == "scored", row
            continue
        reason = DAMAGES[spoiled[row["id"]]]
        assert row["state"] == "failed" and reason in row["error"], (spoiled[row["id"]], row)


ONES = """\
import numpy as np


class Classifier:
    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return np.ones((len(X), 3))  # 'certain' of every class: log loss -2.2e-16
"""


def test_a_predict_proba_of_ones_fails_with_the_reason_and_does_not_rank(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half
):
    """Issue 14, item 3: scikit-learn's log loss only warns about these rows, and the
    fast twin (trusted after its checks) scored them about 0: ranked first. Now the file
    is refused, its jobs fail with the reason, and the good submission ranks first."""
    sweeper, results = back_half
    register(spool, make_watcher, tmp_path, {"good": B.CLASSIFIER, "ones": ONES},
             scores=json.dumps(["neg_log_loss", "accuracy"]))  # fmt: skip
    drain(make_executor())
    result = sweeper.sweep_once()
    assert (result.scored, result.failed) == (3, 3)
    rows = job_rows(database_url)
    hostile = [r for r in rows if r["name"] == "ones"]
    assert {r["state"] for r in hostile} == {"failed"}
    for row in hostile:
        assert row["error"] == (
            "predictions refused: 'train' predictions are not "
            "probabilities: 120 rows do not sum to 1 (row 0 sums to 3)"
        )
    assert {r["state"] for r in rows if r["name"] == "good"} == {"scored"}
    assert query(database_url, "select count(*) as n from scores s join jobs j on j.id = "
                 "s.job_id join submissions u on u.id = j.submission_id where u.name = 'ones'"
                 )[0]["n"] == 0  # fmt: skip
    results.refresh_once()
    board = {r["label"]: r for r in query(database_url, "select * from leaderboard")}
    assert board["good.v1"]["rank"] == 1 and board["good.v1"]["valid_mean"] < -0.01
    assert board["ones.v1"]["state"] == "failed" and board["ones.v1"]["valid_mean"] is None
    assert board["ones.v1"]["rank"] is None  # failed: no rank
    with open(spool.results / "iris" / "leaderboard.csv") as handle:
        assert [r["submission"] for r in csv.DictReader(handle)] == ["good.v1", "ones.v1"]


def crafted_npz(path: Path, members: dict[str, tuple[tuple[int, ...], bytes | None]]) -> None:
    """A .npz written by hand: each member a real .npy header declaring `shape` (float64),
    then `body` (by default the zeros the shape needs)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, (shape, body) in members.items():
            out = io.BytesIO()
            npformat.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False,
                                                  "shape": shape})  # fmt: skip
            archive.writestr(f"{name}.npy", out.getvalue() + (
                body if body is not None else bytes(8 * int(np.prod(shape)))))  # fmt: skip


def test_a_small_file_declaring_a_2_gb_array_is_refused_before_any_allocation(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half
):
    """Issue 14, item 4: the master loaded such a file before refusing it (233 MB to
    2.33 GB). Now its header is read first and the array never allocated."""
    sweeper, _ = back_half
    registered(spool, make_watcher, tmp_path, logreg=B.CLASSIFIER)
    drain(make_executor())
    row = job_rows(database_url)[0]
    path = spool.root / row["prediction_path"]
    declared = (89_478_486, 3)  # 2 GiB of float64
    crafted_npz(path, {"train": (declared, b"\0" * 64), "test": ((30, 3), None)})
    assert path.stat().st_size < 4096
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        result = sweeper.sweep_once()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert peak < 64 << 20, peak  # the whole pass, two good files scored included
    assert rss_growth < 256 << 20, rss_growth
    assert (result.scored, result.failed) == (2, 1)
    failed = job_rows(database_url)[0]
    assert failed["state"] == "failed"
    assert failed["error"] == ("predictions refused: 'train' has shape (89478486, 3), "
                               "expected (120, 3)")  # fmt: skip


def test_a_sparse_prediction_file_is_refused_by_its_size_without_being_read(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half
):
    sweeper, _ = back_half
    registered(spool, make_watcher, tmp_path, logreg=B.CLASSIFIER)
    drain(make_executor())
    row = job_rows(database_url)[0]
    path = spool.root / row["prediction_path"]
    with open(path, "r+b") as handle:
        handle.truncate(1 << 30)  # 1 GB, nothing on disk
    before = _rchar()
    result = sweeper.sweep_once()
    read = _rchar() - before
    assert (result.scored, result.failed) == (2, 1)
    failed = job_rows(database_url)[0]
    assert failed["error"].startswith("predictions refused: the file is 1073741824 bytes, "
                                      "more than the "), failed["error"]  # fmt: skip
    assert failed["error"].endswith("bytes that train (120, 3), train_decision_function "
                                    "(120, 3), train_predict (120,), test (30, 3), "
                                    "test_decision_function (30, 3), test_predict (30,) can "
                                    "take")  # fmt: skip
    assert read < 16 << 20, read  # two good files, the truth, the database: not 1 GB


def _rchar() -> int:
    """Bytes this process has read (read(2) and the like), as the kernel counts them."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_results_files_and_views_agree(
    spool, make_watcher, make_executor, database_url, tmp_path, back_half
):
    sweeper, results = back_half
    registered(spool, make_watcher, tmp_path, good=B.CLASSIFIER,
               other=B.CLASSIFIER + "\n# another\n",
               broken=hostile("raise ValueError('no way')"))  # fmt: skip
    drain(make_executor())
    sweeper.sweep_once()
    assert results.refresh_once() == 3
    folder = spool.results / "iris"
    status = json.loads((folder / "good.v1" / "status.json").read_text())
    assert status["state"] == "scored" and len(status["folds"]) == 3
    assert (folder / "good.v1" / "fold_0.log").is_file()
    view = {(r["split"], r["metric"]): r for r in query(
        database_url, "select * from submission_scores where label = 'good.v1'")}  # fmt: skip
    for split in ("train", "valid", "test"):
        for metric in METRICS:
            assert status["mean"][split][metric] == pytest.approx(view[(split, metric)]["mean"],
                                                                  rel=1e-12)  # fmt: skip
    assert set(status["bagged"]["valid"]) == set(METRICS)
    broken = json.loads((folder / "broken.v1" / "status.json").read_text())
    assert broken["state"] == "failed"
    assert broken["folds"][0]["error"] == "ValueError: no way"
    assert "classifier.py" in broken["folds"][0]["traceback"]
    with open(folder / "good.v1" / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 27 and {r["split"] for r in rows} == {"train", "valid", "test"}
    with open(folder / "leaderboard.csv") as handle:
        board = list(csv.DictReader(handle))
    assert [r["submission"] for r in board][:2] in (["good.v1", "other.v1"],
                                                     ["other.v1", "good.v1"])  # fmt: skip
    assert board[-1]["submission"] == "broken.v1" and board[-1]["state"] == "failed"
    view_board = query(
        database_url, "select * from leaderboard where dataset = 'iris' order by rank, label"
    )
    assert {r["label"]: r["rank"] for r in view_board} == {
        r["submission"]: int(r["rank"]) if r["rank"] else None for r in board}  # fmt: skip
    assert board[-1]["rank"] == "" and view_board[-1]["rank"] is None  # failed: no rank
    assert results.refresh_once() == 0  # nothing changed since
    # Written again: the files that would not change are left as they are.
    good = folder / "good.v1"
    before = {p.name: p.stat().st_ino for p in good.iterdir()}
    results.write_submission(status["id"], datetime.now(UTC))
    after = {p.name: p.stat().st_ino for p in good.iterdir()}
    assert {n for n in before if after[n] != before[n]} == {"status.json"}
    failures = query(database_url, "select * from recent_failures")
    assert {r["error"] for r in failures} == {"ValueError: no way"}
    queue = query(database_url, "select * from queue")
    assert sum(r["scored"] for r in queue) == 6 and sum(r["failed"] for r in queue) == 3


def test_retry_and_cancel(spool, make_watcher, make_executor, database_url, tmp_path):
    registered(spool, make_watcher, tmp_path, broken=hostile("raise ValueError('no')"),
               waiting=B.CLASSIFIER)  # fmt: skip
    with db.connect(database_url) as conn:
        conn.execute("update jobs set state = 'failed', error = 'x' where id in (1, 2, 3)")
        assert jobs.find_submission(conn, "iris/broken.v1") == 1
        assert jobs.find_submission(conn, "iris/nope.v1") is None
        assert jobs.retry(conn, job=1) == [1]
        assert sorted(jobs.retry(conn, submission=1)) == [2, 3]
        assert jobs.retry(conn, dataset="iris") == []
        assert jobs.cancel(conn, 2) == {"queued": 3}
        assert jobs.cancel(conn, 2) == {}
    states = {(r["name"], r["state"]) for r in job_rows(database_url)}
    assert states == {("broken", "queued"), ("waiting", "cancelled")}
    shutil.rmtree(tmp_path / "subs", ignore_errors=True)


def test_the_reaper_gives_back_or_fails_the_jobs_of_a_silent_executor(
    spool, make_watcher, database_url, tmp_path, back_half
):
    from watcher.sweeper import reap_once

    registered(spool, make_watcher, tmp_path, logreg=B.CLASSIFIER)
    with db.connect(database_url) as conn:
        silent = jobs.register_executor(conn, host="h", pid=1, queues=["low"], workers=2,
                                        version="x", limits={})  # fmt: skip
        claimed = jobs.claim(conn, silent, ["low"], 2)
        conn.execute("update jobs set max_attempts = 1 where id = %s", [claimed[1].id])
        conn.execute("update executors set heartbeat_at = now() - interval '1 hour'")
    sweeper, _ = back_half
    assert reap_once(sweeper.database, lease_seconds=30) == 2
    rows = {r["id"]: r for r in job_rows(database_url)}
    assert (rows[claimed[0].id]["state"], rows[claimed[0].id]["attempts"]) == ("queued", 1)
    assert rows[claimed[1].id]["state"] == "failed"
    assert "stopped answering on attempt 1 of 1" in rows[claimed[1].id]["error"]
    assert query(database_url, "select state from executors") == [{"state": "lost"}]
    assert reap_once(sweeper.database, lease_seconds=30) == 0  # the row stays, holds nothing
