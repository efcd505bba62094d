"""The whole chain as a normal user: init, master, executor, without root anywhere."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from spool import db
from tests.conftest import age
from tests.e2e.conftest import TESTER
from tests.helpers import bundles as B
from tests.helpers.cli import DATARUN, run


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid)


def start(environ: dict[str, str], entry, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*DATARUN, "-v", *args], env=environ, cwd="/", user=entry.pw_uid, group=entry.pw_gid,
        extra_groups=[], stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_a_normal_user_runs_master_and_executor(normal_user):
    environ, entry, user_home = normal_user
    environ = {**environ, "DATARUN_LEASE_SECONDS": "4", "DATARUN_HEARTBEAT_SECONDS": "1"}
    init = run(environ, "init", user=TESTER)
    assert init.returncode == 0, init.stderr
    spool = user_home / ".local" / "share" / "datarun" / "spool"
    src = user_home / "src"
    for made in (B.dataset(src), B.submission(src)):
        chown_tree(made, entry.pw_uid, entry.pw_gid)
        age(made)
    (src / "iris").rename(spool / "incoming" / "datasets" / "iris")
    url = run(environ, "db", "url", user=TESTER).stdout.strip()
    logs = user_home / "logs"
    logs.mkdir()
    master = start(environ, entry, "master", log=logs / "master.log")
    executor = start(environ, entry, "executor", "--workers", "1", log=logs / "executor.log")
    try:
        deadline = time.monotonic() + 60
        while not (spool / "incoming" / "submissions" / "iris").is_dir():
            assert time.monotonic() < deadline, (logs / "master.log").read_text()
            time.sleep(0.1)
        (src / "logreg").rename(spool / "incoming" / "submissions" / "iris" / "logreg")
        while True:
            with db.connect(url) as conn:
                states = [r["state"] for r in conn.execute("select state from jobs")]
            if states == ["predicted"] * 3:
                break
            assert time.monotonic() < deadline, (states, (logs / "executor.log").read_text())
            time.sleep(0.2)
    finally:
        for proc in (master, executor):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    stored = next((spool / "store" / "submissions").iterdir())
    assert stored.stat().st_uid == entry.pw_uid and stored.stat().st_mode & 0o777 == 0o555
    assert len(list((spool / "predictions").glob("*.npz"))) == 3
    shutil.rmtree(src, ignore_errors=True)
