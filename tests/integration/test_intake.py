"""The intake with a real database and real folders, driven by run_once()."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spool import db
from spool.layout import Spool
from tests.conftest import age, drop, staged
from tests.helpers import bundles as B
from tests.helpers.waiting import wait_for

SCHEMES = [
    ("kfold", "classification", 4),
    ("stratified_kfold", "classification", 3),
    ("shuffle_split", "regression", 5),
    ("stratified_shuffle_split", "classification", 2),
    ("time_series_split", "regression", 3),
]


def jobs(url: str) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(
            "select s.name, s.team, s.version, s.queue, j.fold, j.state, j.queue as job_queue"
            " from jobs j join submissions s on s.id = j.submission_id order by s.id, j.fold"
        ).fetchall()


def register_iris(spool: Spool, watcher, tmp_path: Path, **kw) -> None:
    drop(B.dataset(tmp_path / "src", **kw), spool.incoming_datasets)
    outcomes = watcher.run_once()
    assert [o.result for o in outcomes] == ["registered"], outcomes


def only_rejection(spool: Spool) -> str:
    entries = list(spool.rejected.iterdir())
    assert len(entries) == 1, entries
    return (entries[0] / "REJECTED.txt").read_text()


def test_dataset_and_submission_folders_register_with_one_job_per_fold(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    assert (spool.incoming_submissions / "iris").is_dir()  # where to drop for iris
    drop(B.submission(tmp_path / "src"), spool.incoming_submissions / "iris")
    [outcome] = watcher.run_once()
    assert outcome.result == "registered" and outcome.detail == "logreg.v1"
    assert [(j["name"], j["fold"], j["state"]) for j in jobs(database_url)] == [
        ("logreg", 0, "queued"), ("logreg", 1, "queued"), ("logreg", 2, "queued"),
    ]  # fmt: skip
    assert list(spool.incoming_submissions.glob("iris/*")) == []
    stored = spool.store / "submissions" / str(outcome.submission_id)
    assert (stored / "classifier.py").is_file()
    assert stored.stat().st_mode & 0o777 == 0o555  # immutable
    assert (stored / "classifier.py").stat().st_mode & 0o777 == 0o444
    status = json.loads((spool.results / "iris" / "logreg.v1" / "status.json").read_text())
    assert status["state"] == "queued" and status["folds"] == 3
    prepared = spool.store / "datasets" / str(outcome.dataset_id) / "prepared"
    assert (prepared / "train.parquet").is_file() and (prepared / "test.parquet").is_file()
    assert staged(spool) == []


@pytest.mark.parametrize("form", ["zip", "zip-flat", "tar.gz"])
def test_archives_are_bundles_too(spool, make_watcher, database_url, tmp_path, form):
    watcher = make_watcher()
    src = tmp_path / "src"
    data = B.dataset(src)
    sub = B.submission(src, manifest='dataset = "iris"\nteam = "ada"\npriority = "high"\n')
    if form == "tar.gz":
        archives = [B.tar_folder(data, src / "iris.tar.gz"), B.tar_folder(sub, src / "lr.tgz")]
    else:
        top = form == "zip"
        archives = [B.zip_folder(data, src / "iris.zip", top=top),
                    B.zip_folder(sub, src / "lr.zip", top=top)]  # fmt: skip
    drop(archives[0], spool.incoming_datasets)
    drop(archives[1], spool.incoming_submissions)
    results = [(o.kind, o.result) for o in watcher.run_once()]
    assert results == [("dataset", "registered"), ("submission", "registered")]
    rows = jobs(database_url)
    assert {(r["name"], r["team"], r["job_queue"]) for r in rows} == {("lr", "ada", "high")}
    assert len(rows) == 3
    assert list(spool.incoming_datasets.iterdir()) == []
    assert list(spool.incoming_submissions.glob("*.*")) == []


@pytest.mark.parametrize(("scheme", "task", "n_splits"), SCHEMES)
def test_every_cv_scheme_gives_its_folds(spool, make_watcher, database_url, tmp_path,
                                          scheme, task, n_splits):  # fmt: skip
    watcher = make_watcher()
    scores = '["accuracy"]' if task == "classification" else '["r2", "neg_mean_squared_error"]'
    workflow = "classifier" if task == "classification" else "regressor"
    drop(B.dataset(tmp_path / "src", name="ds", task=task, workflow=workflow, scores=scores,
                   scheme=scheme, n_splits=n_splits), spool.incoming_datasets)  # fmt: skip
    [outcome] = watcher.run_once()
    assert outcome.result == "registered", outcome
    folds = np.load(spool.store / "datasets" / str(outcome.dataset_id) / "prepared" / "folds.npz")
    assert sorted(folds.files) == sorted(
        [f"train_{k}" for k in range(n_splits)] + [f"valid_{k}" for k in range(n_splits)] + ["rows"]
    )  # the rows: each training row's row in the train file as dropped
    with db.connect(database_url) as conn:
        row = conn.execute("select n_folds, task, workflow, metrics from datasets").fetchone()
    assert row["n_folds"] == n_splits and row["task"] == task and row["workflow"] == workflow


def test_group_kfold_explicit_folds_parquet_and_a_test_file(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher()
    root = B.dataset(
        tmp_path / "src", name="grouped", scheme="group_kfold", test='test = "t.parquet"'
    )
    frame = pd.read_csv(root / "train.csv").sample(frac=1, random_state=0)
    frame["site"] = np.arange(len(frame)) % 5
    frame.iloc[:120].to_parquet(root / "train.parquet")
    frame.iloc[120:].to_parquet(root / "t.parquet")
    (root / "train.csv").unlink()
    text = (root / "dataset.toml").read_text().replace('"train.csv"', '"train.parquet"')
    (root / "dataset.toml").write_text(text + 'group_column = "site"\n')
    drop(root, spool.incoming_datasets)

    explicit = B.dataset(tmp_path / "src2", name="explicit", scheme="explicit")
    folds = [{"train": list(range(0, 60)), "valid": list(range(60, 120))},
             {"train": list(range(60, 120)), "valid": list(range(0, 60))}]  # fmt: skip
    (explicit / "folds.json").write_text(json.dumps(folds))
    with open(explicit / "dataset.toml", "a") as handle:
        handle.write('folds_file = "folds.json"\n')
    drop(explicit, spool.incoming_datasets)

    outcomes = {o.detail: o for o in watcher.run_once()}
    assert {k: o.result for k, o in outcomes.items()} == {
        "grouped": "registered", "explicit": "registered"
    }  # fmt: skip
    grouped = spool.store / "datasets" / str(outcomes["grouped"].dataset_id) / "prepared"
    assert len(pd.read_parquet(grouped / "test.parquet")) == 30
    got = np.load(spool.store / "datasets" / str(outcomes["explicit"].dataset_id) / "prepared"
                  / "folds.npz")  # fmt: skip
    assert got["valid_0"].tolist() == list(range(60, 120))


def test_same_content_again_is_not_run_twice_and_new_content_is_a_new_version(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    into = spool.incoming_submissions / "iris"
    drop(B.submission(tmp_path / "a"), into)
    assert watcher.run_once()[0].result == "registered"
    drop(B.submission(tmp_path / "b"), into)  # identical content
    [dup] = watcher.run_once()
    assert dup.result == "duplicate"
    note = only_rejection(spool)
    assert "NOT RUN AGAIN" in note and "logreg.v1" in note and "results/iris/logreg.v1/" in note
    drop(B.submission(tmp_path / "c", variant=1), into)  # same name, new content
    [v2] = watcher.run_once()
    assert v2.result == "registered" and v2.detail == "logreg.v2"
    versions = sorted({(r["name"], r["version"]) for r in jobs(database_url)})
    assert versions == [("logreg", 1), ("logreg", 2)]
    drop(B.submission(tmp_path / "d", manifest='team = "bob"\n'), into)  # another team
    assert watcher.run_once()[0].detail == "bob.logreg.v1"


def test_a_submission_waits_for_its_dataset(spool, make_watcher, database_url, tmp_path):
    watcher = make_watcher()
    drop(B.submission(tmp_path / "s"), spool.incoming_submissions / "iris")
    assert watcher.run_once() == []  # a new folder of an unknown name: settling first
    age(spool.incoming_submissions / "iris")
    [waiting] = watcher.run_once()
    assert waiting.result == "waiting"
    [entry] = spool.waiting.glob("iris/*")
    assert "not registered yet" in (entry / "WAITING.txt").read_text()
    assert jobs(database_url) == []
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    watcher.run_once()
    assert [j["name"] for j in jobs(database_url)] == ["logreg"] * 3
    assert list(spool.waiting.glob("iris/*")) == []


def test_a_submission_whose_dataset_never_comes_is_rejected(spool, make_watcher, tmp_path):
    watcher = make_watcher(wait_for_dataset=0.5)
    drop(B.submission(tmp_path / "s", manifest='dataset = "nope"\n'), spool.incoming_submissions)
    assert watcher.run_once()[0].result == "waiting"
    time.sleep(1.1)
    [rejected] = watcher.run_once()
    assert rejected.result == "rejected"
    text = only_rejection(spool)
    assert "dataset 'nope' never arrived" in text
    assert next(spool.rejected.iterdir()).joinpath("logreg", "classifier.py").is_file()


def test_an_unsettled_drop_is_not_taken_until_it_stops_changing(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    into = spool.incoming_submissions / "iris"
    half = into / "slow"
    half.mkdir()
    (half / "classifier.py").write_text("# being copied")
    assert watcher.run_once() == []  # fresh mtimes: still being written
    assert half.is_dir()
    (half / "classifier.py").write_text(B.CLASSIFIER)
    age(half)
    assert [o.result for o in watcher.run_once()] == ["registered"]


def test_a_marker_file_makes_a_fresh_drop_complete(spool, make_watcher, tmp_path):
    watcher = make_watcher(settle_seconds=3600)
    data = B.dataset(spool.incoming_datasets)
    assert watcher.run_once() == []
    (data / ".ready").touch()
    assert [o.result for o in watcher.run_once()] == ["registered"]
    into = spool.incoming_submissions / "iris"
    sub = B.submission(into)
    assert watcher.run_once() == []
    (sub / ".ready").touch()
    [outcome] = watcher.run_once()
    assert outcome.result == "registered"
    stored = spool.store / "submissions" / str(outcome.submission_id)
    assert (stored / "classifier.py").is_file()
    assert not (stored / ".ready").exists()  # the marker is not part of the bundle


def test_hidden_and_partial_names_are_ignored(spool, make_watcher, tmp_path):
    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    into = spool.incoming_submissions / "iris"
    for name in (".hidden", "copying.partial"):
        age(B.submission(tmp_path / name, name="x")).rename(into / name)
    assert watcher.run_once() == []
    assert sorted(p.name for p in into.iterdir()) == [".hidden", "copying.partial"]


def test_a_second_watcher_stands_by(spool, make_watcher, tmp_path):
    first, second = make_watcher(), make_watcher()
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    assert [o.result for o in second.run_once()] == ["registered"]
    assert first.run_once() == []  # the lock is held by the one that ran first
    second.close()
    # its lock goes with its session, which the server may end a moment after the close
    wait_for(lambda: first._intake() is not None, 10, "the first watcher to take the lead")
    drop(B.submission(tmp_path / "s"), spool.incoming_submissions / "iris")
    assert [o.result for o in first.run_once()] == ["registered"]


def test_a_folder_of_bundles_is_never_taken_as_a_bundle(spool, make_watcher, tmp_path):
    watcher = make_watcher()
    container = spool.incoming_submissions / "newds"
    drop(B.submission(tmp_path / "s"), container)
    seen = [c.path for c in watcher.candidates()]
    assert container not in seen  # unsettled: neither a bundle nor, yet, a container
    age(container)
    assert [c.path for c in watcher.candidates()] == [container / "logreg"]
    assert [o.result for o in watcher.run_once()] == ["waiting"]


def test_a_stray_file_in_a_dataset_folder_never_takes_the_folder(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    into = spool.incoming_submissions / "iris"
    drop(B.submission(tmp_path / "a", name="alice"), into)
    (into / "Thumbs.db").write_bytes(b"windows was here")
    age(into / "Thumbs.db")
    outcomes = {o.name: o.result for o in watcher.run_once()}
    assert outcomes == {"alice": "registered", "Thumbs.db": "rejected"}
    assert into.is_dir() and list(into.iterdir()) == []
    [note] = spool.rejected.iterdir()
    assert "not a bundle" in (note / "REJECTED.txt").read_text()


def test_a_full_disk_is_not_blamed_on_the_drop(spool, make_watcher, tmp_path, monkeypatch):
    import errno

    from spool import bundles

    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    drop(B.submission(tmp_path / "s"), spool.incoming_submissions / "iris")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(bundles, "copy_folder", full)
        for _ in range(5):  # more than max_failures: still not rejected
            assert watcher.run_once() == []
    assert list(spool.rejected.iterdir()) == []
    [outcome] = watcher.run_once()  # the disk has room again
    assert outcome.result == "registered"
