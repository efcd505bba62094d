"""The whole chain with real processes: a master and two executors, a real database."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spool import db
from tests.conftest import age
from tests.helpers import bundles as B
from tests.helpers.cli import DATARUN, run
from tests.helpers.waiting import wait_for
from tests.integration.test_executor import hostile

SLOW = hostile("import time; time.sleep(4)").replace(
    "return None", "import numpy as np; return np.full((len(X), 3), 1 / 3)"
)


@pytest.fixture
def cluster(env, tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    env.update(DATARUN_SWEEP_SECONDS="0.5", DATARUN_LEASE_SECONDS="3",
               DATARUN_HEARTBEAT_SECONDS="0.5", DATARUN_POLL_SECONDS="0.5",
               DATARUN_RESCAN_SECONDS="2", DATARUN_STOP_GRACE_SECONDS="1")  # fmt: skip
    assert run(env, "init").returncode == 0
    procs: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> subprocess.Popen:
        handle = open(tmp_path / f"{log}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([*DATARUN, "-v", *args], env=env, stdout=handle,
                                stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def drop_all(spool: Path, tmp_path: Path, subs: dict[str, str]) -> None:
    age(B.dataset(tmp_path / "d", scores='["accuracy", "neg_log_loss"]')).rename(
        spool / "incoming" / "datasets" / "iris"
    )
    wait_for((spool / "incoming" / "submissions" / "iris").is_dir, 60, "iris")
    for name, code in subs.items():
        root = B.submission(tmp_path / "subs", name=name)
        (root / "classifier.py").write_text(code)
        age(root).rename(spool / "incoming" / "submissions" / "iris" / name)


def status(spool: Path, tag: str) -> dict:
    path = spool / "results" / "iris" / tag / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


NUMERICAL = ("numpy", "scipy", "sklearn", "pandas", "pyarrow")


def numerical_libraries(pid: int) -> set[str]:
    """The numerical libraries a running process has imported: each of them loads its
    compiled core when imported (numpy's _multiarray_umath, pandas' _libs, scikit-
    learn's _check_build, scipy's _lib, pyarrow's lib), so they show in its maps."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = Path(line.split(maxsplit=5)[-1]).parts
        found |= {name for name in NUMERICAL if name in parts and "site-packages" in parts}
    return found


def test_three_submissions_end_with_scores_a_failure_and_consistent_results(env, cluster, tmp_path):
    spool = Path(env["DATARUN_HOME"]) / "spool"
    master = cluster("master", log="master")
    cluster("executor", "--workers", "1", log="ex1")
    cluster("executor", "--workers", "1", log="ex2")
    drop_all(spool, tmp_path, {"good": B.CLASSIFIER, "other": B.CLASSIFIER + "# v\n",
                               "broken": hostile("raise ValueError('no way')")})  # fmt: skip
    final = {"good.v1": "scored", "other.v1": "scored", "broken.v1": "failed"}
    wait_for(lambda: {t: status(spool, t).get("state") for t in final} == final, 120,
             "final states")  # fmt: skip
    board_file = spool / "results" / "iris" / "leaderboard.csv"
    wait_for(lambda: board_file.is_file() and len(board_file.read_text().splitlines()) == 4,
             30, "the leaderboard")  # fmt: skip
    url = run(env, "db", "url").stdout.strip()
    with db.connect(url) as conn:
        progress = {
            r["label"]: r["state"] for r in conn.execute("select * from submission_progress")
        }
        view = {r["label"]: r for r in conn.execute("select * from leaderboard")}
        failures = conn.execute("select * from recent_failures").fetchall()
    assert progress == final
    with open(board_file) as handle:
        board = {r["submission"]: r for r in csv.DictReader(handle)}
    for tag, row in board.items():
        assert (int(row["rank"]) if row["rank"] else None) == view[tag]["rank"]  # failed: none
        if tag != "broken.v1":
            assert float(row["valid_mean"]) == pytest.approx(view[tag]["valid_mean"], rel=1e-12)
            assert status(spool, tag)["mean"]["valid"]["accuracy"] == pytest.approx(
                view[tag]["valid_mean"], rel=1e-12)  # fmt: skip
            assert float(row["bagged_valid"]) == pytest.approx(view[tag]["bagged_valid"])
    assert {f["error"] for f in failures} == {"ValueError: no way"}
    broken = status(spool, "broken.v1")
    assert all(f["error"] == "ValueError: no way" for f in broken["folds"])
    assert (spool / "results" / "iris" / "broken.v1" / "fold_0.log").is_file()
    # Scored, bagged and its folds published: the master itself imported none of it.
    assert (spool / "results" / "iris" / "folds.json").is_file()
    assert numerical_libraries(master.pid) == set()
    assert {"numpy", "sklearn"} <= numerical_libraries(os.getpid())  # the check sees them


def test_a_killed_executors_job_is_reaped_and_completes_on_another(env, cluster, tmp_path):
    spool = Path(env["DATARUN_HOME"]) / "spool"
    cluster("master", log="master")
    doomed = cluster("executor", "--workers", "1", log="doomed")
    drop_all(spool, tmp_path, {"slow": SLOW})
    url = run(env, "db", "url").stdout.strip()

    def running() -> list[dict]:
        with db.connect(url) as conn:
            return conn.execute("select * from jobs where state = 'running'").fetchall()

    wait_for(lambda: len(running()) == 1, 60, "a running fold")
    victim = running()[0]
    doomed.kill()  # SIGKILL, mid-fold; no executor is left to reap
    doomed.wait()
    cluster("executor", "--workers", "2", log="survivor")
    wait_for(lambda: status(spool, "slow.v1").get("state") == "scored", 120, "the scores")
    with db.connect(url) as conn:
        job = conn.execute("select * from jobs where id = %s", [victim["id"]]).fetchone()
        executors = conn.execute("select state from executors order by id").fetchall()
    assert job["state"] == "scored" and job["attempts"] == 2
    assert executors[0]["state"] == "lost"
