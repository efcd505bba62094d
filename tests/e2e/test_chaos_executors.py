"""Executor chaos: three executors over 120 fold jobs, one SIGKILLed every few seconds
(at a claim, mid-fold, while publishing a prediction file) and restarted. Every job
ends scored exactly once, every killed job is given back within the lease plus the
reap interval, and is then the next job a worker claims: no job queued behind it goes
first. (How long that takes depends on when a worker is free; with executors killed
and restarting, at times none is, so the test does not bound it.)"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spool import db
from tests.conftest import age, reachable_tmp
from tests.helpers import bundles as B
from tests.helpers.cli import DATARUN, run
from tests.helpers.waiting import wait_for
from tests.integration.test_executor import hostile

pytestmark = pytest.mark.chaos

LEASE = 3.0
REAP = LEASE / 2  # executors and the master reap every half lease
BEAT = 0.5
COMMIT = 0.3  # a claim that starts this soon after a give-back may not see it yet
SUBMISSIONS, FOLDS, KILLS = 24, 5, 12
NAPPING = hostile("import random, time; time.sleep(random.uniform(0.3, 0.7))").replace(
    "return None", "import numpy as np; return np.full((len(X), 3), 1 / 3)"
)


@dataclass
class Kill:
    point: str
    pid: int
    job: int
    attempt: int
    at: float  # wall clock, as the database's claimed_at
    reclaimed_after: float | None = None


@dataclass
class Lab:
    env: dict[str, str]
    tmp: Path
    spool: Path
    url: str
    chaos: Path
    scratch: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    executors: dict[int, subprocess.Popen] = field(default_factory=dict)

    def start(self, *args: str, log: str, command: list[str] = DATARUN) -> subprocess.Popen:
        handle = open(self.tmp / f"{log}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([*command, "-v", *args], env=self.env, stdout=handle,
                                stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(proc)
        return proc

    def start_executor(self) -> None:
        chaotic = [sys.executable, "-m", "tests.helpers.chaos"]
        proc = self.start("executor", "--workers", "1", log=f"executor-{len(self.procs)}",
                          command=chaotic)  # fmt: skip
        self.executors[proc.pid] = proc

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        with db.connect(self.url) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture
def lab(env, tmp_path) -> Iterator[Lab]:
    chaos = tmp_path / "chaos"
    chaos.mkdir()
    scratch = reachable_tmp("datarun-test-scratch-")  # the sandbox user enters it
    env.update(DATARUN_SWEEP_SECONDS="0.5", DATARUN_LEASE_SECONDS=str(LEASE),
               DATARUN_HEARTBEAT_SECONDS=str(BEAT), DATARUN_POLL_SECONDS="0.5",
               DATARUN_RESCAN_SECONDS="2", DATARUN_STOP_GRACE_SECONDS="5",
               DATARUN_SCRATCH_DIR=str(scratch), CHAOS_DIR=str(chaos),
               PYTHONPATH=str(Path(__file__).parents[2]))  # fmt: skip
    assert run(env, "init").returncode == 0
    url = run(env, "db", "url").stdout.strip()
    lab = Lab(env, tmp_path, Path(env["DATARUN_HOME"]) / "spool", url, chaos, scratch)
    yield lab
    for proc in lab.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(scratch, ignore_errors=True)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(c) for c in text.split()]
    except OSError:
        return found
    return found + [d for child in list(found) for d in descendants(child)]


def running_job_of(lab: Lab, pid: int) -> dict | None:
    rows = lab.query(
        "select j.id, j.attempts from jobs j join executors e on e.id = j.executor_id"
        " where e.pid = %(pid)s and j.state = 'running' order by e.id desc limit 1",
        {"pid": pid},
    )
    return rows[0] if rows else None


def victim(lab: Lab, point: str) -> tuple[int, dict] | None:
    """An executor stopped at `point`, with its job; None if none got there in time."""
    if point == "mid-fold":
        for pid in random.sample(list(lab.executors), len(lab.executors)):
            job = running_job_of(lab, pid)
            if job and len(descendants(pid)) >= 2:  # its zygote and the fold's child
                return pid, job
        return None
    (lab.chaos / f"want-{point}").touch()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        taken = list(lab.chaos.glob(f"at-{point}-*"))
        if taken:
            pid = int(taken[0].name.rsplit("-", 1)[1])
            taken[0].unlink()
            job = running_job_of(lab, pid)
            assert job is not None, f"executor {pid} paused at {point} without a running job"
            return pid, job
        time.sleep(0.02)
    (lab.chaos / f"want-{point}").unlink(missing_ok=True)
    return None


def unfinished(lab: Lab) -> int:
    rows = lab.query("select count(*) as n from jobs where state in ('queued', 'running')")
    return int(rows[0]["n"])


def note_reclaims(lab: Lab, kills: list[Kill]) -> None:
    pending = [k for k in kills if k.reclaimed_after is None]
    if not pending:
        return
    # from the attempts kept, not the job row: a job re-claimed and killed again since
    # is queued with no claim time
    rows = lab.query("select job_id, attempt, extract(epoch from claimed_at)::float8 as claimed"
                     " from attempts where job_id = any(%(ids)s)",
                     {"ids": [k.job for k in pending]})  # fmt: skip
    claimed = {(r["job_id"], r["attempt"]): r["claimed"] for r in rows}
    for kill in pending:
        at = claimed.get((kill.job, kill.attempt + 1))
        if at is not None:
            kill.reclaimed_after = at - kill.at


def test_sigkilled_executors_lose_nothing_and_score_each_job_once(lab: Lab):
    spool = lab.spool
    lab.start("master", log="master")
    age(B.dataset(lab.tmp / "d", scores='["accuracy"]', n_splits=FOLDS)).rename(
        spool / "incoming" / "datasets" / "iris"
    )
    wait_for((spool / "incoming" / "submissions" / "iris").is_dir, 60, "the dataset")
    for i in range(SUBMISSIONS):
        root = B.submission(lab.tmp / "subs", name=f"nap{i}")
        (root / "classifier.py").write_text(NAPPING + f"\n# {i}\n")
        age(root).rename(spool / "incoming" / "submissions" / "iris" / root.name)
    total = SUBMISSIONS * FOLDS
    wait_for(lambda: lab.query("select count(*) as n from jobs")[0]["n"] == total, 120, "jobs")
    # Twelve kills may hit one job more than the default three attempts allow.
    lab.query("update jobs set max_attempts = 20")
    for _ in range(3):
        lab.start_executor()

    kills: list[Kill] = []
    points = itertools.cycle(["claim", "mid-fold", "publish"])
    while len(kills) < KILLS:
        pause = time.monotonic() + random.uniform(1.0, 2.5)
        while time.monotonic() < pause:
            note_reclaims(lab, kills)
            time.sleep(0.05)
        point = next(points)
        found = victim(lab, point)
        if found is None:
            assert unfinished(lab), "the jobs ran out before the last kill: longer folds?"
            continue
        pid, job = found
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        lab.executors.pop(pid).wait()
        kills.append(Kill(point, pid, job["id"], job["attempts"], at))
        lab.start_executor()
    left = unfinished(lab)
    assert left, "the jobs ran out before the last kill: longer folds?"
    print(f"\n{left} of {total} jobs were left after the last kill")

    def settled() -> bool:
        note_reclaims(lab, kills)
        rows = lab.query("select count(*) as n from jobs where state <> 'scored'")
        return rows[0]["n"] == 0

    wait_for(settled, 300, "every job scored")
    for proc in lab.executors.values():
        proc.send_signal(signal.SIGTERM)
    for proc in lab.executors.values():
        assert proc.wait(timeout=60) == 0

    # Each job scored once: one score per split, from its last attempt's file.
    rows = lab.query("select j.id, j.attempts, j.prediction_path, count(s.*) as n"
                     " from jobs j left join scores s on s.job_id = j.id"
                     " group by j.id order by j.id")  # fmt: skip
    assert len(rows) == total
    assert {r["n"] for r in rows} == {3}  # train, valid, test: accuracy
    for r in rows:
        assert r["prediction_path"] == f"predictions/{r['id']}.{r['attempts']}.npz"
    attempts = {r["id"]: r["attempts"] for r in rows}
    assert all(attempts[k.job] > k.attempt for k in kills)
    assert {k.point for k in kills} == {"claim", "mid-fold", "publish"}

    # Nothing left behind: only the last attempt's files, no scratch folder, no fold.
    expected = {f"{r['id']}.{r['attempts']}.{ext}" for r in rows for ext in ("npz", "json", "log")}
    assert {p.name for p in (spool / "predictions").iterdir()} == expected
    assert list(lab.scratch.iterdir()) == []

    check_give_backs(lab, kills)


def check_give_backs(lab: Lab, kills: list[Kill]) -> None:
    """Each killed attempt was given back in time, and its job was the next claimed."""
    rows = lab.query("select job_id, attempt, extract(epoch from claimed_at)::float8 as c,"
                     " extract(epoch from finished_at)::float8 as f from attempts")  # fmt: skip
    claims = sorted((r["c"], r["job_id"]) for r in rows)
    ended = {(r["job_id"], r["attempt"]): r["f"] for r in rows}
    lines, late, jumped = [], [], []
    for k in kills:
        given_back = ended[(k.job, k.attempt)]
        assert k.reclaimed_after is not None, f"job {k.job} was never claimed again"
        reclaimed = k.at + k.reclaimed_after
        ahead = [job for at, job in claims
                 if given_back + COMMIT < at < reclaimed and job > k.job]  # fmt: skip
        lines.append(f"{k.point} job {k.job}: given back after {given_back - k.at:.2f} s, "
                     f"claimed {reclaimed - given_back:.2f} s later"
                     + (f" after jobs {ahead} queued behind it" if ahead else ""))  # fmt: skip
        late += [k] if given_back - k.at > LEASE + REAP + BEAT + 0.5 else []
        jumped += [k] if ahead else []
    report = "\n".join(lines)
    print(f"\n{len(kills)} kills (lease {LEASE:g} s, reap every {REAP:g} s):\n{report}")
    assert not late, report
    assert not jumped, report
