"""`datarun init` and `datarun master` as a user runs them."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from spool import db
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.helpers.cli import DATARUN, run


def test_init_is_idempotent_and_master_registers_drops_until_sigterm(env, tmp_path):
    first = run(env, "init")
    assert first.returncode == 0, first.stderr
    assert "folders created" in first.stdout and "migrations applied" in first.stdout
    again = run(env, "init")
    assert again.returncode == 0
    assert "created" not in again.stdout and "applied" not in again.stdout
    spool = f"{env['DATARUN_HOME']}/spool"
    master = subprocess.Popen([*DATARUN, "-v", "master"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        drop(B.dataset(tmp_path / "d"), Path(spool) / "incoming" / "datasets")
        drop(B.submission(tmp_path / "s"), Path(spool) / "incoming" / "submissions" / "iris")
        url = run(env, "db", "url").stdout.strip()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db.connect(url) as conn:
                if conn.execute("select count(*) as n from jobs").fetchone()["n"] == 3:
                    break
            time.sleep(0.2)
    finally:
        master.send_signal(signal.SIGTERM)
        out, err = master.communicate(timeout=30)
    assert time.monotonic() < deadline, f"the master did not register the drops: {err}"
    assert master.returncode == 0, err
    assert "master stopped" in out


def test_master_refuses_an_old_schema_with_a_hint(env):
    assert run(env, "db", "up").returncode == 0
    result = run(env, "master")
    assert result.returncode == 1
    assert "run `datarun init`" in result.stderr
