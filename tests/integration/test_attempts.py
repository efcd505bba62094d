"""Every attempt of a fold is kept: its outcome, reason, executor, exit status, CPU and
memory, shown by `datarun logs`, the `job_attempts` view and status.json."""

from __future__ import annotations

import json

import pytest

from datarun import admin
from spool import db, jobs
from spool.jobs import Outcome
from tests.helpers import bundles as B
from tests.integration.test_executor import drain, register
from watcher.results import Results
from watcher.sweeper import Sweeper

SLOW = """
import time

import numpy as np


class Classifier:
    def fit(self, X, y):
        time.sleep(2.5)  # longer than the first two runs' timeout

    def predict_proba(self, X):
        return np.full((len(X), 3), 1 / 3)
"""


def history(conn: db.Conn, job: int) -> list[tuple]:
    rows = conn.execute(
        "select try, attempt, outcome, reason, exit_status, host from job_attempts "
        "where job = %s order by try",
        [job],
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def test_a_fold_that_failed_twice_then_succeeded_shows_all_three(
    spool, make_watcher, make_executor, database_url, conn, tmp_path
):
    """Two runs under a timeout the fit exceeds, an admin's retry after each, then a
    run with time enough: three attempts, each with its own reason."""
    register(spool, make_watcher, tmp_path, {"slow": SLOW})
    impatient = make_executor(timeout_seconds=1)
    for _ in range(2):
        assert drain(impatient) == 3
        assert sorted(jobs.retry(conn, submission=1)) == [1, 2, 3]
    assert drain(make_executor()) == 3
    database = db.Database(database_url, name="test attempts").open()
    try:
        sweeper = Sweeper(spool, database)
        assert sweeper.sweep_once().scored == 3
        assert Results(spool, database, sweeper).refresh_once() == 1
        sweeper.close()
    finally:
        database.close()

    [host] = {r["host"] for r in conn.execute("select host from executors")}
    timeout = ("failed", "timeout after 1 s", "timeout", host)
    assert history(conn, 1) == [
        (1, 1, *timeout),
        (2, 1, *timeout),
        (3, 1, "scored", None, "ok", host),
    ]
    tries = conn.execute("select * from attempts where job_id = 1 order by id").fetchall()
    assert all(t["finished_at"] >= t["claimed_at"] for t in tries)
    assert tries[-1]["cpu_seconds"] > 0 and tries[-1]["peak_rss_bytes"] > 2**20

    status = json.loads(
        (spool.results / "iris" / "slow.v1" / "status.json").read_text(encoding="utf-8")
    )
    fold = status["folds"][0]
    assert (fold["state"], fold["attempts"], fold["error"]) == ("scored", 1, None)
    assert [(h["outcome"], h["reason"]) for h in fold["history"]] == [
        ("failed", "timeout after 1 s"), ("failed", "timeout after 1 s"), ("scored", None)
    ]  # fmt: skip
    assert fold["history"][0]["executor"].startswith(f"{host} pid ")

    text = admin.logs(conn, spool, job=1, submission=None)
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("try ")]
    assert len(lines) == 3
    assert lines[0].startswith(f"try 1: attempt 1 on {host} pid ")
    assert "failed (timeout) after" in lines[0] and lines[0].endswith(": timeout after 1 s")
    assert "scored (ok)" in lines[2]


@pytest.fixture
def silent(conn) -> int:
    return jobs.register_executor(conn, host="h", pid=7, queues=["low"], workers=4,
                                  version="x", limits={})  # fmt: skip


def test_every_way_an_attempt_ends_is_recorded(
    spool, make_watcher, database_url, conn, tmp_path, silent
):
    """Claim, predicted, failed, handed back, requeued, reaped, cancelled, unscorable:
    each statement that ends an attempt closes its row, fenced like the job."""
    register(spool, make_watcher, tmp_path, {"a": B.CLASSIFIER, "b": B.CLASSIFIER + "\n# b\n"})
    got = jobs.claim(conn, silent, ["low"], 6)
    assert [row["n"] for row in conn.execute(
        "select count(*) as n from attempts where outcome = 'running' and finished_at is null"
    )] == [6]  # fmt: skip
    a1, a2, a3, b1, b2, b3 = got
    assert jobs.complete(conn, a1, silent, Outcome(cpu_seconds=1.5, peak_rss_bytes=10))
    assert not jobs.complete(conn, a1, silent, Outcome())  # fenced: no second close
    assert jobs.complete(conn, a2, silent, Outcome(error="ValueError: no", exit_status="exit 1"))
    assert jobs.hand_back(conn, a3, silent)
    assert jobs.requeue(conn, b1.id, b1.attempt, silent, "its result could not be kept")
    conn.execute("update jobs set max_attempts = 1 where id = %s", [b2.id])
    conn.execute("update executors set heartbeat_at = now() - interval '1 hour'")
    assert len(jobs.reap(conn, lease_seconds=30)) == 2  # b2 fails, b3 runs again
    other = jobs.register_executor(conn, host="k", pid=8, queues=["low"], workers=4,
                                   version="x", limits={})  # fmt: skip
    again = {j.id: j for j in jobs.claim(conn, other, ["low"], 6)}
    assert set(again) == {a3.id, b1.id, b3.id}
    assert jobs.cancel(conn, b1.submission_id) == {"running": 2}

    outcomes = {
        row["job"]: [(t["try"], t["attempt"], t["outcome"], t["reason"], t["host"])
                     for t in conn.execute(
                         "select * from job_attempts where job = %s order by try", [row["job"]])]
        for row in conn.execute("select distinct job from job_attempts")
    }  # fmt: skip
    lost = "its executor (h pid 7) stopped answering"
    assert outcomes == {
        a1.id: [(1, 1, "predicted", None, "h")],
        a2.id: [(1, 1, "failed", "ValueError: no", "h")],
        a3.id: [(1, 1, "handed back", None, "h"), (2, 1, "running", None, "k")],
        b1.id: [(1, 1, "requeued", "its result could not be kept", "h"),
                (2, 2, "cancelled", None, "k")],
        b2.id: [(1, 1, "failed", lost, "h")],
        b3.id: [(1, 1, "requeued", lost, "h"), (2, 2, "cancelled", None, "k")],
    }  # fmt: skip
    peak = conn.execute("select cpu_seconds, peak_rss_bytes from attempts where job_id = %s",
                        [a1.id]).fetchone()  # fmt: skip
    assert (peak["cpu_seconds"], peak["peak_rss_bytes"]) == (1.5, 10)
    # the sweeper's verdict on a predicted attempt is that attempt's outcome
    db.execute(conn, "job_unscorable", {"id": a1.id, "attempt": 1, "error": "bad file",
                                        "detail": None})  # fmt: skip
    assert history(conn, a1.id) == [(1, 1, "failed", "bad file", "ok", "h")]
