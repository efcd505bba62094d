"""A master SIGKILLed while writing results (issue 14, item 14): paused in its last
leaderboard write (leaderboard.csv written under its temporary name, not yet renamed),
killed, restarted. The restarted master removes the temporary it left, and every
results file ends equal to the SQL views, although nothing in the database changed."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import age, reachable_tmp
from tests.e2e.test_chaos_executors import Lab
from tests.helpers import bundles as B
from tests.helpers.cli import run
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.chaos

CHAOTIC = [sys.executable, "-m", "tests.helpers.chaos_results"]
SUBMISSIONS = {"good": B.CLASSIFIER, "other": B.CLASSIFIER + "# another\n"}


@pytest.fixture
def lab(env, tmp_path) -> Iterator[Lab]:
    import shutil

    scratch = reachable_tmp("datarun-test-scratch-")
    env.update(DATARUN_SWEEP_SECONDS="0.5", DATARUN_RESCAN_SECONDS="2",
               DATARUN_HEARTBEAT_SECONDS="0.5", DATARUN_POLL_SECONDS="0.5",
               DATARUN_STOP_GRACE_SECONDS="5", DATARUN_SCRATCH_DIR=str(scratch),
               CHAOS_DIR=str(tmp_path), PYTHONPATH=str(Path(__file__).parents[2]))  # fmt: skip
    assert run(env, "init").returncode == 0
    url = run(env, "db", "url").stdout.strip()
    lab = Lab(env, tmp_path, Path(env["DATARUN_HOME"]) / "spool", url, tmp_path, scratch)
    yield lab
    for proc in lab.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(scratch, ignore_errors=True)


def temporaries(results: Path) -> list[str]:
    return sorted(str(p.relative_to(results)) for p in results.rglob(".*.tmp"))


def board_of(results: Path) -> list[dict[str, str]] | None:
    path = results / "iris" / "leaderboard.csv"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def view_of(lab: Lab) -> list[dict[str, str]]:
    """The leaderboard view, as leaderboard.csv writes it."""

    def cell(value: float | None) -> str:
        return "" if value is None else repr(float(value))

    rows = lab.query("select * from leaderboard where dataset = 'iris' order by rank, label")
    return [{
        "rank": "" if r["rank"] is None else str(r["rank"]),  # failed: no rank
        "submission": r["label"], "team": r["team"],
        "state": r["state"], "folds_scored": str(r["scored"]), "folds": str(r["folds"]),
        "metric": r["metric"], "valid_mean": cell(r["valid_mean"]),
        "valid_std": cell(r["valid_std"]), "test_mean": cell(r["test_mean"]),
        "bagged_valid": cell(r["bagged_valid"]), "bagged_test": cell(r["bagged_test"]),
    } for r in rows]  # fmt: skip


def statuses_agree(lab: Lab) -> bool:
    """Each status.json says what the views say: state, folds, mean and bagged scores."""
    progress = lab.query("select * from submission_progress where dataset = 'iris'")
    for row in progress:
        path = lab.spool / "results" / "iris" / row["label"] / "status.json"
        status = json.loads(path.read_text(encoding="utf-8"))
        if status["state"] != row["state"]:
            return False
        if [f["state"] for f in status["folds"]].count("scored") != row["scored"]:
            return False
        mine = {"id": row["submission_id"]}
        means = lab.query("select split, metric, mean from submission_scores"
                          " where submission_id = %(id)s", mine)  # fmt: skip
        for m in means:
            if status["mean"][m["split"]][m["metric"]] != pytest.approx(m["mean"], rel=1e-12):
                return False
        bagged = lab.query("select split, metric, value from bagged_scores"
                           " where submission_id = %(id)s", mine)  # fmt: skip
        if not bagged or any(status["bagged"][b["split"]][b["metric"]] != pytest.approx(b["value"])
                             for b in bagged):  # fmt: skip
            return False
    return len(progress) == len(SUBMISSIONS)


def test_a_master_killed_in_its_last_leaderboard_write_repairs_results(lab: Lab):
    spool, results = lab.spool, lab.spool / "results"
    (lab.tmp / "want-leaderboard").touch()
    master = lab.start("master", log="master-0", command=CHAOTIC)
    age(B.dataset(lab.tmp / "d")).rename(spool / "incoming" / "datasets" / "iris")
    target = spool / "incoming" / "submissions" / "iris"
    wait_for(target.is_dir, 60, "the dataset")
    for name, code in SUBMISSIONS.items():
        root = B.submission(lab.tmp / "subs", name=name)
        (root / "classifier.py").write_text(code)
        age(root).rename(target / name)
    executor: subprocess.Popen = lab.start("executor", "--workers", "2", log="executor")
    wait_for(lambda: any(lab.tmp.glob("at-leaderboard-*")), 120, "the last leaderboard write")
    master.send_signal(signal.SIGKILL)
    master.wait()
    left = temporaries(results)
    assert any(name.startswith("iris/.leaderboard.csv.") for name in left), left
    final = view_of(lab)
    assert [r["state"] for r in final] == ["scored"] * len(SUBMISSIONS)
    assert all(r["bagged_valid"] and r["bagged_test"] for r in final), final  # all done
    assert board_of(results) != final  # behind the database, as the kill left it

    master = lab.start("master", log="master-1")
    try:
        wait_for(lambda: board_of(results) == final, 60, "leaderboard.csv equal to the view")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{board_of(results)}\n!=\n{final}\n{view_of(lab)}") from None
    wait_for(lambda: temporaries(results) == [], 60, "the stale temporaries removed")
    assert statuses_agree(lab)
    assert view_of(lab) == final  # nothing changed in the database meanwhile
    for proc in (master, executor):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
