"""Watcher chaos: the master SIGKILLed three times during a burst of 500 drops and
restarted each time. Every drop ends registered exactly once: none left in incoming/,
none duplicated, none rejected, nothing left in staging."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import age
from tests.e2e.test_chaos_executors import Lab
from tests.helpers import bundles as B
from tests.helpers.cli import run
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.chaos

DROPS = 500
KILL_AT = (50, 200, 350)  # registered submissions when the master is killed


@pytest.fixture
def lab(env, tmp_path) -> Lab:
    env.update(DATARUN_RESCAN_SECONDS="2", DATARUN_SWEEP_SECONDS="0.5")
    assert run(env, "init").returncode == 0
    url = run(env, "db", "url").stdout.strip()
    spool = Path(env["DATARUN_HOME"]) / "spool"
    return Lab(env, tmp_path, spool, url, tmp_path, tmp_path)


def registered(lab: Lab) -> int:
    return int(lab.query("select count(*) as n from submissions")[0]["n"])


def test_a_master_killed_during_a_burst_registers_every_drop_once(lab: Lab):
    spool = lab.spool
    master = lab.start("master", log="master-0")
    age(B.dataset(lab.tmp / "d")).rename(spool / "incoming" / "datasets" / "iris")
    target = spool / "incoming" / "submissions" / "iris"
    wait_for(target.is_dir, 60, "the dataset")
    ready = [age(B.submission(lab.tmp / "subs", name=f"s{i:03d}", variant=i))
             for i in range(DROPS)]  # fmt: skip

    def burst() -> None:
        for root in ready:
            root.rename(target / root.name)

    dropper = threading.Thread(target=burst)
    dropper.start()
    for n, count in enumerate(KILL_AT, start=1):
        wait_for(lambda: registered(lab) >= count, 120, f"{count} registered")  # noqa: B023
        master.send_signal(signal.SIGKILL)
        master.wait()
        master = lab.start("master", log=f"master-{n}")
    dropper.join()
    wait_for(lambda: registered(lab) == DROPS, 120, "every drop registered")
    wait_for(lambda: not any(target.iterdir()), 60, "incoming/ emptied")

    rows = lab.query("select name, version, count(*) over (partition by name) as n"
                     " from submission_labels")  # fmt: skip
    assert sorted(r["name"] for r in rows) == [f"s{i:03d}" for i in range(DROPS)]
    assert {(r["version"], r["n"]) for r in rows} == {(1, 1)}
    jobs = lab.query("select count(*) as n, count(distinct (submission_id, fold)) as d from jobs")
    assert jobs[0]["n"] == jobs[0]["d"] == DROPS * 3
    assert not any((spool / "rejected").rglob("*")), list((spool / "rejected").rglob("*"))
    left = [p.name for p in (spool / ".staging").iterdir()]
    assert not [name for name in left if not name.startswith(".") or ".new-" in name], left
    ids = {str(r["id"]) for r in lab.query("select id from submissions")}
    assert {p.name for p in (spool / "store" / "submissions").iterdir()} == ids  # no orphan
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=30) == 0


def test_a_master_killed_between_storing_and_committing_leaves_no_orphan(lab: Lab):
    spool = lab.spool
    chaotic = [sys.executable, "-m", "tests.helpers.chaos"]
    lab.env.update(CHAOS_DIR=str(lab.tmp), PYTHONPATH=str(Path(__file__).parents[2]))
    master = lab.start("master", log="master-0", command=chaotic)
    age(B.dataset(lab.tmp / "d")).rename(spool / "incoming" / "datasets" / "iris")
    target = spool / "incoming" / "submissions" / "iris"
    wait_for(target.is_dir, 60, "the dataset")
    (lab.tmp / "want-register").touch()
    age(B.submission(lab.tmp / "subs", name="victim")).rename(target / "victim")
    wait_for(lambda: any(lab.tmp.glob("at-register-*")), 60, "the pause before the commit")
    assert any((spool / "store" / "submissions").iterdir())  # stored, not registered
    master.send_signal(signal.SIGKILL)
    master.wait()
    master = lab.start("master", log="master-1")
    wait_for(lambda: registered(lab) == 1, 60, "the registration")
    ids = {str(r["id"]) for r in lab.query("select id from submissions")}
    wait_for(lambda: {p.name for p in (spool / "store" / "submissions").iterdir()} == ids, 30,
             "the first attempt's store folder removed")  # fmt: skip
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=30) == 0
