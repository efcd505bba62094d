"""RAMP kits, dropped as datasets, give exactly ramp-test's fold and bagged scores.

Each kit of tests/ramp_kits/ is made twice from the same data: once for ramp-workflow's
own `ramp-test --save-output`, once dropped into the spool. datarun registers it,
drops its submissions, runs every fold in the executor's sandboxed children, scores
them in the kit's scoring child; every fold score and every bagged score must agree
with ramp-test's to 1e-9.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from spool import db
from tests.conftest import drop
from tests.helpers.ramp import KITS, RAMP_DATA, make_kit, start_ramp_test
from tests.integration.test_executor import drain
from watcher.results import Results
from watcher.scorers import Dataset
from watcher.sweeper import Sweeper, SweepResult

pytest.importorskip("rampwf", reason="RAMP kits need the ramp extra: pip install -e '.[ramp]'")

REL = ABS = 1e-9


@pytest.fixture
def back_half(spool, database_url):
    database = db.Database(database_url, name="test ramp").open()
    sweeper = Sweeper(spool, database)
    yield sweeper, Results(spool, database, sweeper)
    sweeper.close()
    database.close()


def run_kit(kit: Path, spool, make_watcher, make_executor) -> int:
    """Drop the kit, register it and its own submissions, run every fold: how many."""
    watcher = make_watcher()
    drop(kit, spool.incoming_datasets)
    watcher.run_once()
    watcher.run_once()
    return drain(make_executor())


def kit_dataset(url: str) -> Dataset:
    """The one dataset of the test's spool, as its scoring child is started from."""
    with db.connect(url) as conn:
        row = conn.execute(
            "select id as dataset_id, store_path as dataset_path, kind, task, metrics,"
            " manifest->>'target' as target from datasets"
        ).fetchone()
    assert row is not None
    return Dataset.of(row)


def submissions_of(kit: str) -> list[str]:
    return sorted(p.name for p in (KITS / kit / "submissions").iterdir() if p.is_dir())


def run_in_datarun(kit: Path, spool, make_watcher, make_executor, back_half) -> None:
    """Drop the kit; register it and its submissions; run, score and bag every fold."""
    watcher = make_watcher()
    drop(kit, spool.incoming_datasets)
    outcomes = watcher.run_once()
    assert [(o.result, o.kind) for o in outcomes] == [("registered", "dataset")], outcomes
    outcomes = watcher.run_once()  # the kit's submissions, dropped by the intake
    assert {o.result for o in outcomes} == {"registered"}, [o.detail for o in outcomes]
    drain(make_executor())
    sweeper, results = back_half
    while sweeper.sweep_once().scored:
        pass
    results.refresh_once()


def datarun_scores(url: str, submission: str) -> tuple[dict, dict]:
    with db.connect(url) as conn:
        rows = conn.execute(
            "select j.fold, sc.split, sc.metric, sc.value, j.state, j.error from jobs j"
            " join submissions s on s.id = j.submission_id"
            " left join scores sc on sc.job_id = j.id where s.name = %s",
            (submission,),
        ).fetchall()
        bagged = conn.execute(
            "select b.split, b.metric, b.value from bagged_scores b"
            " join submissions s on s.id = b.submission_id where s.name = %s",
            (submission,),
        ).fetchall()
    assert {r["state"] for r in rows} == {"scored"}, [r["error"] for r in rows]
    folds: dict = {}
    for r in rows:
        folds.setdefault(r["fold"], {}).setdefault(r["split"], {})[r["metric"]] = r["value"]
    bags: dict = {}
    for r in bagged:
        bags.setdefault(r["split"], {})[r["metric"]] = r["value"]
    return folds, bags


KIT_NAMES = ["iris", "wine", "wine_pipeline", "breast_cancer", "diabetes", "diabetes_fe",
             "notest", "external"]  # fmt: skip


@pytest.mark.parametrize("kit_name", KIT_NAMES)
def test_fold_and_bagged_scores_equal_ramp_tests(
    kit_name, spool, make_watcher, make_executor, back_half, database_url, tmp_path
):
    theirs_kit = make_kit(kit_name, tmp_path / "ramp")
    # ramp-test's runs, the reference, go on while datarun runs the same kit
    running = {s: start_ramp_test(theirs_kit, s) for s in submissions_of(kit_name)}
    run_in_datarun(make_kit(kit_name, tmp_path / "drop"), spool, make_watcher, make_executor,
                   back_half)  # fmt: skip
    expected = {s: scores() for s, scores in running.items()}
    for submission, theirs in expected.items():
        folds, bagged = datarun_scores(database_url, submission)
        assert folds.keys() == theirs["folds"].keys()
        for fold, steps in theirs["folds"].items():
            assert folds[fold].keys() == steps.keys(), (submission, fold)
            for step, values in steps.items():
                assert folds[fold][step] == pytest.approx(values, rel=REL, abs=ABS), (fold, step)
        assert bagged.keys() == theirs["bagged"].keys()
        for step, values in theirs["bagged"].items():
            assert bagged[step] == pytest.approx(values, rel=REL, abs=ABS), (submission, step)
        status = json.loads(
            (spool.results / kit_name / f"{submission}.v1" / "status.json").read_text()
        )
        assert status["state"] == "scored"
        for metric in next(iter(theirs["folds"].values()))["valid"]:
            valid = [theirs["folds"][f]["valid"][metric] for f in sorted(theirs["folds"])]
            mean, std = status["mean"]["valid"][metric], status["std"]["valid"][metric]
            assert mean == pytest.approx(np.mean(valid), rel=REL, abs=ABS)
            assert std == pytest.approx(np.std(valid), rel=REL, abs=ABS)


# A target column of class names (and string features): pandas 3 reads them as its `str`
# dtype, Arrow-backed where pyarrow is installed (datarun requires it), which
# SKLearnPipeline and Estimator cannot index; ramp-test in a plain environment (no
# pyarrow) stores them in Python and passes. One kit per workflow with a class target.
STRING_TARGET_KITS = ["iris_str", "wine_str", "wine_pipeline_str", "breast_cancer_str"]


@pytest.mark.parametrize("kit_name", STRING_TARGET_KITS)
def test_a_string_target_gives_ramp_tests_scores_in_a_plain_environment(
    kit_name, spool, make_watcher, make_executor, back_half, database_url, tmp_path
):
    test_fold_and_bagged_scores_equal_ramp_tests(
        kit_name, spool, make_watcher, make_executor, back_half, database_url, tmp_path
    )


@pytest.mark.parametrize("kit_name", ["titanic_real", "air_passengers_real"])
def test_the_real_ramp_data_gives_ramp_tests_scores(
    kit_name, spool, make_watcher, make_executor, back_half, database_url, tmp_path
):
    if not RAMP_DATA.is_dir():
        pytest.skip(f"the real RAMP data is not at {RAMP_DATA} (../shared/ramp-data)")
    test_fold_and_bagged_scores_equal_ramp_tests(
        kit_name, spool, make_watcher, make_executor, back_half, database_url, tmp_path
    )


def test_a_kit_whose_problem_py_raises_is_rejected_with_its_traceback(
    spool, make_watcher, tmp_path
):
    drop(make_kit("broken", tmp_path), spool.incoming_datasets)
    [outcome] = make_watcher().run_once()
    assert outcome.result == "rejected"
    [note] = spool.rejected.glob("*/REJECTED.txt")
    text = note.read_text()
    assert "problem.py: failed while importing problem.py: ValueError:" in text
    assert 'File "problem.py", line' in text  # the kit's own frame, by its own name
    assert "spool/rampkit.py" not in text  # not ours


def test_a_failing_ramp_submission_says_why_with_its_own_traceback(
    spool, make_watcher, make_executor, back_half, database_url, tmp_path
):
    kit = make_kit("iris", tmp_path)
    for extra in (kit / "submissions").iterdir():
        if extra.name != "starting_kit":
            shutil.rmtree(extra)
    code = kit / "submissions" / "starting_kit" / "classifier.py"
    code.write_text(code.read_text().replace("def fit(self, X, y):",
                                             "def fit(self, X, y):\n        1 / 0"))  # fmt: skip
    run_kit(kit, spool, make_watcher, make_executor)
    sweeper, results = back_half
    sweeper.sweep_once()
    results.refresh_once()
    status = json.loads((spool.results / "iris" / "starting_kit.v1" / "status.json").read_text())
    assert status["state"] == "failed"
    fold = status["folds"][0]
    assert fold["error"] == "ZeroDivisionError: division by zero"
    assert 'File "classifier.py", line' in fold["traceback"]
    assert "rampwf" not in fold["traceback"] and "executor/" not in fold["traceback"]
    log = (spool.results / "iris" / "starting_kit.v1" / "fold_0.log").read_text()
    assert log.startswith("ZeroDivisionError: division by zero\nTraceback")


def test_submissions_dropped_alone_and_the_leaderboard_follows_the_first_score(
    spool, make_watcher, make_executor, back_half, database_url, tmp_path
):
    kit = make_kit("diabetes", tmp_path / "kit")  # first score: RMSE, lower is better
    drop(kit, spool.incoming_datasets)
    watcher = make_watcher()
    watcher.run_once()
    watcher.run_once()
    into = spool.incoming_submissions / "diabetes"
    lacking = tmp_path / "alone" / "lacking"
    lacking.mkdir(parents=True)
    (lacking / "estimator.py").write_text("def get_estimator(): ...\n")
    drop(lacking, into)
    [rejected] = watcher.run_once()
    assert rejected.result == "rejected"
    assert rejected.detail.startswith("regressor.py: missing; the RAMP kit 'diabetes'")
    mean = tmp_path / "alone" / "mean"
    shutil.copytree(make_kit("diabetes", tmp_path / "copy") / "submissions" / "starting_kit", mean)
    (mean / "regressor.py").write_text(
        "import numpy as np\n\n\nclass Regressor:\n    def fit(self, X, y):\n"
        "        self.mean = float(np.mean(y))\n\n    def predict(self, X):\n"
        "        return np.full(len(X), self.mean)\n"
    )
    drop(mean, into)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    drain(make_executor())
    sweeper, results = back_half
    while sweeper.sweep_once().scored:
        pass
    results.refresh_once()
    with db.connect(database_url) as conn:
        board = conn.execute(
            "select rank, label, valid_mean from leaderboard where dataset = 'diabetes'"
            " order by rank"
        ).fetchall()
    assert [r["label"] for r in board][-1] == "mean.v1"  # the largest RMSE ranks last
    assert [r["valid_mean"] for r in board] == sorted(r["valid_mean"] for r in board)
    with open(spool.results / "diabetes" / "leaderboard.csv") as handle:
        assert [row["submission"] for row in csv.DictReader(handle)] == [r["label"] for r in board]


def test_a_dead_scoring_child_is_started_again_and_a_broken_kit_waits(
    spool, make_watcher, make_executor, back_half, database_url, tmp_path, caplog
):
    kit = make_kit("notest", tmp_path)
    run_kit(kit, spool, make_watcher, make_executor)
    sweeper, results = back_half
    store = next((spool.store / "datasets").iterdir())
    scorer = sweeper.scorers.child(kit_dataset(database_url))
    with db.connect(database_url) as conn:
        first = conn.execute("select id from jobs order by id limit 1").fetchone()["id"]
        conn.execute("update jobs set state = 'predicted' where id <> %s", (first,))
        conn.execute("update jobs set state = 'queued' where id = %s", (first,))
    assert sweeper.sweep_once().scored == 2
    assert scorer._proc is not None
    scorer._proc.kill()  # the child dies between two sweeps
    with db.connect(database_url) as conn:
        conn.execute("update jobs set state = 'predicted' where id = %s", (first,))
    assert sweeper.sweep_once().scored == 1  # a new child answered
    problem = store / "bundle" / "problem.py"
    problem.chmod(0o644)
    problem.write_text(problem.read_text() + "\nraise RuntimeError('broken after the fact')\n")
    scorer.close()
    with db.connect(database_url) as conn:
        conn.execute("update jobs set state = 'predicted'")
    with caplog.at_level(logging.ERROR, logger="watcher.scorers"):
        assert sweeper.sweep_once().scored == 0  # the kit cannot score now: the jobs wait
        results.refresh_once()  # nor publish its folds: not started again meanwhile
    with db.connect(database_url) as conn:
        states = {r["state"] for r in conn.execute("select state from jobs")}
    assert states == {"predicted"}
    assert sum("could not start" in r.getMessage() for r in caplog.records) == 1


def test_a_file_that_kills_the_scoring_child_fails_alone_and_the_others_are_scored(
    spool, make_watcher, make_executor, back_half, database_url, tmp_path
):
    """A kit's score type that crashes its process on some input (a C extension that
    segfaults, an os._exit): the batch is split until that fold fails alone, with the
    reason; the kit is not put aside and the other folds are scored."""
    kit = make_kit("notest", tmp_path)
    problem = kit / "problem.py"
    problem.write_text(problem.read_text() + (
        "\n\n_score = type(score_types[0]).score_function\n\n\n"
        "def _fragile(self, truth, predictions):\n"
        "    if (predictions.y_pred > 1e6).any():\n"
        "        os._exit(3)\n"
        "    return _score(self, truth, predictions)\n\n\n"
        "type(score_types[0]).score_function = _fragile\n"
    ))  # fmt: skip
    assert run_kit(kit, spool, make_watcher, make_executor) == 3
    with db.connect(database_url) as conn:
        jobs = conn.execute("select id, prediction_path from jobs order by id").fetchall()
    poisoned = spool.absolute(jobs[1]["prediction_path"])
    with np.load(poisoned) as data:
        arrays = {name: data[name] * 1e7 for name in data.files}
    np.savez(poisoned, **arrays)  # still the arrays expected: only the values crash it
    sweeper, _ = back_half
    assert sweeper.sweep_once() == SweepResult(scored=2, failed=1)
    with db.connect(database_url) as conn:
        rows = conn.execute("select id, state, error from jobs order by id").fetchall()
    assert [r["state"] for r in rows] == ["scored", "failed", "scored"]
    assert "stopped datarun's scoring child" in rows[1]["error"]
    assert not sweeper.scorers.waiting(kit_dataset(database_url))


def test_a_kit_that_scores_too_slowly_is_stopped_and_its_jobs_wait(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    kit = make_kit("notest", tmp_path)
    problem = kit / "problem.py"
    # A file beside problem.py, not a variable: scoring children get an allow-listed
    # environment, and see no folder of the machine but the kit's own
    problem.write_text(problem.read_text() + (
        "\n\nif os.path.exists(os.path.join(os.path.dirname(__file__), 'slow')):\n"
        "    import time\n\n    time.sleep(60)\n"
    ))  # fmt: skip
    run_kit(kit, spool, make_watcher, make_executor)
    bundle = next((spool.store / "datasets").iterdir()) / "bundle"
    bundle.chmod(0o755)  # frozen, and the test may not be root
    (bundle / "slow").touch()  # from now on, the scoring child's problem.py sleeps
    database = db.Database(database_url, name="test ramp").open()
    sweeper = Sweeper(spool, database, timeout=2)
    try:
        assert sweeper.sweep_once().scored == 0
        [scorer] = sweeper.scorers._children.values()
        assert scorer._proc is None  # killed at the timeout
    finally:
        sweeper.close()
        database.close()
    with db.connect(database_url) as conn:
        assert {r["state"] for r in conn.execute("select state from jobs")} == {"predicted"}


def test_a_kits_problem_py_runs_in_each_fold_as_the_folds_user_not_root(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    """problem.py is loaded inside the fold's sandbox (its own root and user) where the
    executor gives folds namespaces: a kit is the organizer's code, not root's."""
    from executor.isolation import probe

    if os.geteuid() != 0 or not probe(loud=False).namespaces:
        pytest.skip("folds get their own root only from a root executor with namespaces")
    kit = make_kit("notest", tmp_path)
    problem = kit / "problem.py"
    problem.write_text(problem.read_text() + (  # only a fold's environment has this HOME
        "\n\nif os.environ.get('HOME', '').endswith('/work') and os.geteuid() == 0:\n"
        "    raise RuntimeError('problem.py ran as root in a fold')\n"
    ))  # fmt: skip
    run_kit(kit, spool, make_watcher, make_executor)
    with db.connect(database_url) as conn:
        rows = conn.execute("select state, error from jobs").fetchall()
    assert rows and {(r["state"], r["error"]) for r in rows} == {("predicted", None)}, rows


def test_the_master_runs_a_kits_problem_py_as_a_user_of_its_own(
    spool, make_watcher, make_executor, back_half, database_url, tmp_path
):
    """Preparing and scoring a kit import its problem.py on the master: as datarun-kit,
    in a root that shows the kit (and, to score, its folds and the prediction files),
    never as root and never with a view of results/ or the database's home."""
    from executor.isolation import probe

    if os.geteuid() != 0 or not probe(loud=False).namespaces:
        pytest.skip("a kit's own user and root need a root master with namespaces")
    kit = make_kit("notest", tmp_path)
    problem = kit / "problem.py"
    problem.write_text(problem.read_text() + (
        "\n\nif os.geteuid() == 0:\n"
        "    raise RuntimeError('problem.py ran as root')\n"
        f"if os.path.exists({str(spool.results)!r}):\n"
        "    raise RuntimeError('problem.py sees results/')\n"
    ))  # fmt: skip
    watcher = make_watcher()
    drop(kit, spool.incoming_datasets)
    outcomes = watcher.run_once()  # prepared as the kit's user
    assert [o.result for o in outcomes] == ["registered"], outcomes
    watcher.run_once()
    drain(make_executor())
    sweeper, _ = back_half
    assert sweeper.sweep_once().scored > 0  # scored as the kit user
    with db.connect(database_url) as conn:
        states = {r["state"] for r in conn.execute("select state from jobs")}
    assert states == {"scored"}
    prepared = next((spool.store / "datasets").iterdir()) / "prepared"
    assert {p.stat().st_uid for p in [prepared, *prepared.iterdir()]} == {0}  # root's again
