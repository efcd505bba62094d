"""Folds anyone can reproduce: the README's lines, run for real on a dataset datarun
prepared (a test set split off its train file), give the fold scores datarun reported,
from results/<dataset>/folds.json, the train file as dropped and pandas and
scikit-learn alone."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from spool import db
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.integration.test_executor import drain
from watcher.results import Results
from watcher.sweeper import Sweeper

README = Path(__file__).parents[2] / "README.md"
ESTIMATOR = """\
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def get_estimator():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000))
"""


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- folds-example -->\n```python\n(.*?)```\n<!-- /folds-example -->",
                      text, re.S)  # fmt: skip
    assert block is not None, "README.md has no folds-example block"
    return block[1]


def test_the_readme_recomputes_every_fold_score_from_folds_json(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    watcher = make_watcher()
    bundle = B.dataset(tmp_path / "d", workflow="estimator",
                       scores=json.dumps(["neg_log_loss", "accuracy"]))  # fmt: skip
    with open(bundle / "dataset.toml", "a") as handle:
        handle.write("shuffle = true\nseed = 7\n")
    frame = pd.read_csv(bundle / "train.csv")
    frame.insert(0, "id", range(1000, 1000 + len(frame)))  # a column that is not a feature
    frame.to_csv(bundle / "train.csv", index=False)
    toml = (bundle / "dataset.toml").read_text()
    toml = toml.replace("[data]\n", "[data]\ndrop_columns = ['id']\n")
    (bundle / "dataset.toml").write_text(toml)
    train_file = tmp_path / "participant" / "train.csv"
    train_file.parent.mkdir()
    shutil.copyfile(bundle / "train.csv", train_file)  # what the participant holds
    drop(bundle, spool.incoming_datasets)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    submission = tmp_path / "s" / "scaled"
    submission.mkdir(parents=True)
    (submission / "estimator.py").write_text(ESTIMATOR)
    drop(submission, spool.incoming_submissions / "iris")
    assert [o.result for o in watcher.run_once()] == ["registered"]
    drain(make_executor())
    database = db.Database(database_url).open()
    sweeper = Sweeper(spool, database)
    assert sweeper.sweep_once().scored == 3
    Results(spool, database, sweeper).refresh_once()
    sweeper.close()
    database.close()

    published = json.loads((spool.results / "iris" / "folds.json").read_text())
    assert published["rows_of"] == "train.csv" and published["n_rows"] == 150
    assert published["target"] == "target" and "id" not in published["columns"]
    assert len(published["test_rows"]) == 30
    valid_rows = sorted(r for f in published["folds"] for r in f["valid"])
    assert valid_rows == sorted(set(range(150)) - set(published["test_rows"]))  # k-fold
    assert valid_rows != [r for f in published["folds"] for r in f["valid"]]  # shuffled
    with db.connect(database_url) as conn:
        view = conn.execute("select * from folds where dataset = 'iris' order by fold").fetchall()
    assert [(r["fold"], r["train"], r["valid"]) for r in view] == [
        (f["fold"], f["train"], f["valid"]) for f in published["folds"]]  # fmt: skip
    assert [r["n_valid"] for r in view] == [len(f["valid"]) for f in published["folds"]]

    work = train_file.parent
    shutil.copyfile(spool.results / "iris" / "folds.json", work / "folds.json")
    (work / "estimator.py").write_text(ESTIMATOR)
    (work / "example.py").write_text(readme_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATARUN")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    ran = subprocess.run([sys.executable, "example.py"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    printed = {int(k): v for k, v in (line.split() for line in ran.stdout.splitlines())}
    with open(spool.results / "iris" / "scaled.v1" / "scores.csv") as handle:
        reported = {int(r["fold"]): r["value"] for r in csv.DictReader(handle)
                    if r["split"] == "valid" and r["metric"] == "neg_log_loss"}  # fmt: skip
    assert len(reported) == 3
    assert printed == reported  # to the last digit
