"""The database goes away mid-run and comes back: the master (watcher and sweeper) and
two executors, all real processes, reconnect with back-off; every job ends scored,
the drop made while the database was down included, and results are written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from datarun.embedded import EmbeddedServer
from spool import db
from tests.conftest import age, reachable_tmp
from tests.helpers import bundles as B
from tests.helpers.cli import DATARUN, run
from tests.helpers.waiting import wait_for
from tests.integration.test_executor import hostile

pytestmark = pytest.mark.chaos

SLOW = hostile("import time; time.sleep(1.5)").replace(
    "return None", "import numpy as np; return np.full((len(X), 3), 1 / 3)"
)


def states(url: str) -> list[str]:
    try:
        with db.connect(url) as conn:
            return [r["state"] for r in conn.execute("select state from jobs order by id")]
    except Exception:
        return []


def test_a_fast_restart_of_the_database_loses_nothing(tmp_path: Path):
    base = reachable_tmp("datarun-test-restart-")
    server = EmbeddedServer(base / "db", port=55434)
    server.up()
    url = server.url()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATARUN_")}
    env.update(DATARUN_HOME=str(base / "home"), DATARUN_DATABASE_URL=url,
               DATARUN_SWEEP_SECONDS="0.5", DATARUN_LEASE_SECONDS="20",
               DATARUN_HEARTBEAT_SECONDS="0.5", DATARUN_POLL_SECONDS="0.5",
               DATARUN_RESCAN_SECONDS="1", DATARUN_STOP_GRACE_SECONDS="5")  # fmt: skip
    procs: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> subprocess.Popen:
        handle = open(tmp_path / f"{log}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([*DATARUN, "-v", *args], env=env, stdout=handle,
                                stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(proc)
        return proc

    try:
        assert run(env, "init").returncode == 0
        spool = base / "home" / "spool"
        start("master", log="master")
        for i in range(2):
            start("executor", "--workers", "1", log=f"executor-{i}")
        age(B.dataset(tmp_path / "d")).rename(spool / "incoming" / "datasets" / "iris")
        wait_for((spool / "incoming" / "submissions" / "iris").is_dir, 60, "the dataset")
        for i in range(3):
            sub = B.submission(tmp_path / "s", name=f"slow{i}")
            (sub / "classifier.py").write_text(SLOW + f"\n# {i}\n")
            age(sub).rename(spool / "incoming" / "submissions" / "iris" / sub.name)
        wait_for(lambda: "running" in states(url), 60, "a running fold")
        server.down()  # fast shutdown, mid-run
        time.sleep(3)
        late = B.submission(tmp_path / "late", name="late")  # dropped while it is down
        age(late).rename(spool / "incoming" / "submissions" / "iris" / "late")
        server.up()
        wait_for(lambda: states(url) == ["scored"] * 12, 180, "every job scored")
        for name in ("slow0", "slow1", "slow2", "late"):
            path = spool / "results" / "iris" / f"{name}.v1" / "status.json"
            wait_for(path.is_file, 30, f"{name}'s results")
            wait_for(lambda: json.loads(path.read_text())["state"] == "scored", 30, name)  # noqa: B023
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.down()
        shutil.rmtree(base, ignore_errors=True)
    logs = {p.stem: p.read_text() for p in tmp_path.glob("*.log")}
    assert all("retrying" in text or "reconnect" in text for text in logs.values()), logs
