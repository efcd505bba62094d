"""One number, one value: a submission's mean and standard deviation read the same, to
the last digit, in status.json, leaderboard.csv, the HTML page, the views and
`datarun leaderboard --json`; and they are what ramp-test prints (ddof=0)."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import statistics
import subprocess
import sys
from html import unescape

import numpy as np

from spool import db
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.integration.test_executor import drain
from watcher.results import Results
from watcher.sweeper import Sweeper

METRICS = ["neg_mean_squared_error", "r2", "neg_mean_absolute_error"]


def ramp_mean_std(values: list[float]) -> tuple[float, float]:
    """As rampwf.utils.scoring.mean_score_matrix: a (folds x steps x scores) matrix,
    numpy's mean and std over axis 0."""
    matrix = np.array([[[v, 1.0], [0.5 * v, 2.0]] for v in values])
    return float(matrix.mean(axis=0)[0, 0]), float(matrix.std(axis=0)[0, 0])


def test_mean_and_std_are_ramp_tests_for_any_number_of_folds():
    from watcher.summary import mean_std

    rng = random.Random(15)
    for _ in range(2000):
        values = [rng.uniform(0.5, 1.0) ** 3 for _ in range(rng.randint(1, 25))]
        assert mean_std(values) == ramp_mean_std(values)


def test_every_output_shows_the_same_mean_and_std(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d", name="diabetes", task="regression", workflow="regressor",
                   scores=json.dumps(METRICS), scheme="kfold", n_splits=10),
         spool.incoming_datasets)  # fmt: skip
    assert [o.result for o in watcher.run_once()] == ["registered"]
    drop(B.submission(tmp_path / "s", "ridge", workflow="regressor"),
         spool.incoming_submissions / "diabetes")  # fmt: skip
    assert [o.result for o in watcher.run_once()] == ["registered"]
    drain(make_executor())
    database = db.Database(database_url).open()
    sweeper = Sweeper(spool, database)
    assert sweeper.sweep_once().scored == 10
    Results(spool, database, sweeper).refresh_once()
    sweeper.close()
    database.close()

    with db.connect(database_url) as conn:
        folds = conn.execute(
            "select j.fold, s.split, s.metric, s.value from scores s join jobs j"
            " on j.id = s.job_id order by j.fold"
        ).fetchall()
        view = {(r["split"], r["metric"]): r for r in conn.execute(
            "select * from submission_scores where label = 'ridge.v1'").fetchall()}  # fmt: skip
        board = conn.execute("select * from leaderboard where dataset = 'diabetes'").fetchone()
    by_group: dict[tuple[str, str], list[float]] = {}
    for r in folds:
        by_group.setdefault((r["split"], r["metric"]), []).append(r["value"])
    assert len(view) == 9 and all(len(v) == 10 for v in by_group.values())
    # These scores are ones where the way of summing shows in the last digits.
    assert any((statistics.fmean(v), statistics.pstdev(v)) != ramp_mean_std(v)
               for v in by_group.values())  # fmt: skip

    results = spool.results / "diabetes"
    status = json.loads((results / "ridge.v1" / "status.json").read_text())
    for (split, metric), values in by_group.items():
        mean, std = ramp_mean_std(values)
        assert repr(view[(split, metric)]["mean"]) == repr(mean)
        assert repr(view[(split, metric)]["std"]) == repr(std)
        assert repr(status["mean"][split][metric]) == repr(mean)
        assert repr(status["std"][split][metric]) == repr(std)
        assert view[(split, metric)]["folds"] == 10

    valid_mean, valid_std = ramp_mean_std(by_group[("valid", METRICS[0])])
    test_mean, _ = ramp_mean_std(by_group[("test", METRICS[0])])
    assert (board["valid_mean"], board["valid_std"], board["test_mean"]) == (
        valid_mean, valid_std, test_mean)  # fmt: skip
    with open(results / "leaderboard.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["valid_mean"], row["valid_std"], row["test_mean"]) == (
        repr(valid_mean), repr(valid_std), repr(test_mean))  # fmt: skip
    page = (results / "leaderboard.html").read_text()
    cell = re.search(r'data-mean="([^"]*)" data-std="([^"]*)"', page)
    assert cell is not None
    assert (unescape(cell[1]), unescape(cell[2])) == (repr(valid_mean), repr(valid_std))
    assert f"{valid_mean:.4f} ± {valid_std:.4f}" in page

    env = {**os.environ, "DATARUN_DATABASE_URL": database_url,
           "DATARUN_HOME": str(tmp_path / "home"), "DATARUN_SPOOL": str(spool.root)}  # fmt: skip
    cli = subprocess.run([sys.executable, "-m", "datarun", "leaderboard", "diabetes", "--json"],
                         env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    (shown,) = json.loads(cli.stdout)
    assert (repr(shown["valid_mean"]), repr(shown["valid_std"])) == (
        repr(valid_mean), repr(valid_std))  # fmt: skip
    text = subprocess.run([sys.executable, "-m", "datarun", "leaderboard", "diabetes"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert f"{valid_mean:.4f} ± {valid_std:.4f}" in text.stdout
