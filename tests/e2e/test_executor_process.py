"""`datarun executor` as a real process: killed, paused, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from spool import db
from tests.helpers.cli import DATARUN
from tests.integration.test_executor import hostile, job_rows, register

pytestmark = pytest.mark.chaos

SLOW = hostile("import time; time.sleep({seconds})").replace(
    "return None", "import numpy as np; return np.full((len(X), 3), 1 / 3)"
)


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture
def start_executor(spool, database_url, tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    procs: list[subprocess.Popen] = []

    def start(*args: str, name: str = "ex") -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATARUN_")}
        env.update(
            DATARUN_HOME=str(tmp_path / "home"), DATARUN_SPOOL=str(spool.root),
            DATARUN_DATABASE_URL=database_url, DATARUN_LEASE_SECONDS="2",
            DATARUN_HEARTBEAT_SECONDS="0.5", DATARUN_POLL_SECONDS="0.5",
            DATARUN_STOP_GRACE_SECONDS="1",
        )  # fmt: skip
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([*DATARUN, "-v", "executor", "--workers", "1", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def running_job(url: str) -> dict | None:
    rows = [r for r in job_rows(url) if r["state"] == "running"]
    return rows[0] if rows else None


def test_a_job_of_a_sigkilled_executor_is_run_again_after_the_lease(
    spool, make_watcher, database_url, tmp_path, start_executor
):
    register(spool, make_watcher, tmp_path, {"slow": SLOW.format(seconds=2)})
    first = start_executor(name="first")
    wait_for(lambda: running_job(database_url) is not None)
    first.kill()  # SIGKILL, mid-fold
    first.wait()
    victim = running_job(database_url)
    assert victim is not None and victim["attempts"] == 1
    second = start_executor(name="second")
    wait_for(lambda: all(r["state"] == "predicted" for r in job_rows(database_url)), 90)
    again = next(r for r in job_rows(database_url) if r["id"] == victim["id"])
    assert again["attempts"] == 2
    assert again["prediction_path"] == f"predictions/{victim['id']}.2.npz"
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    with db.connect(database_url) as conn:
        states = [r["state"] for r in conn.execute("select state from executors order by id")]
    assert states == ["lost", "stopped"]


def test_a_paused_executor_cannot_complete_its_old_attempt(
    spool, make_watcher, database_url, tmp_path, start_executor
):
    register(spool, make_watcher, tmp_path, {"slow": SLOW.format(seconds=4)})
    with db.connect(database_url) as conn:  # one job is enough
        conn.execute("update jobs set state = 'cancelled' where fold > 0")
    paused = start_executor(name="paused")
    wait_for(lambda: running_job(database_url) is not None)
    job = running_job(database_url)
    os.kill(paused.pid, signal.SIGSTOP)  # its fold goes on in the zygote's child
    other = start_executor(name="other")
    wait_for(lambda: job_rows(database_url)[0]["attempts"] == 2, 60)
    time.sleep(4.5)  # the paused executor's own fold has finished meanwhile
    os.kill(paused.pid, signal.SIGCONT)
    wait_for(lambda: job_rows(database_url)[0]["state"] == "predicted", 60)
    wait_for(lambda: "refused" in (tmp_path / "paused.log").read_text(), 30)
    row = job_rows(database_url)[0]
    assert row["attempts"] == 2 and row["prediction_path"] == f"predictions/{job['id']}.2.npz"
    assert not (spool.predictions / f"{job['id']}.1.npz").exists()
    for proc in (paused, other):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_sigterm_hands_back_a_fold_that_does_not_finish_in_time(
    spool, make_watcher, database_url, tmp_path, start_executor
):
    register(spool, make_watcher, tmp_path, {"slow": SLOW.format(seconds=30)})
    proc = start_executor(name="stopping")
    wait_for(lambda: running_job(database_url) is not None)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    rows = job_rows(database_url)
    assert all(r["state"] == "queued" and r["attempts"] == 0 for r in rows), rows
    with db.connect(database_url) as conn:
        assert conn.execute("select state from executors").fetchone()["state"] == "stopped"
    assert "handed back" in (tmp_path / "stopping.log").read_text()
