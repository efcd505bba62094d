"""Hostile folds and machine faults against a running executor (its real daemon loop):
whatever a fold leaves behind or says, it ends failed with a one-line reason, its
attempt counts, and no worker thread dies of it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from spool import db
from tests.helpers import bundles as B
from tests.helpers.waiting import running, wait_for
from tests.integration.test_executor import hostile, job_rows, register

pytestmark = pytest.mark.chaos

# Each of these once killed the worker thread that collected its fold.
NUL_MESSAGE = "raise ValueError('bad\\x00byte ' + '\\udcff' + 'x' * 5000)"
DEEP_TREE = (
    "import os\n        for _ in range(160):\n"
    "            os.mkdir('d' * 40)\n            os.chdir('d' * 40)\n"
    "        raise RuntimeError('left a deep tree')"  # its cwd left deep down, too
)
FORGED_RESULT = """
import json
import os

import numpy as np


class Classifier:
    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        # Its own result file, with fields of the wrong type, then out before datarun's.
        np.savez("pred.npz", train=np.full((120, 3), 1 / 3), test=np.full((30, 3), 1 / 3))
        with open("result.json", "w") as handle:
            json.dump({"ok": True, "train_seconds": "fast", "valid_seconds": [1],
                       "test_seconds": {"a": 1}, "versions": 5, "error": {"x": 1},
                       "traceback": 7}, handle)
        os._exit(0)
"""


def live_workers() -> int:
    return sum(t.name.startswith("worker-") and t.is_alive() for t in threading.enumerate())


def settled(url: str) -> bool:
    return all(r["state"] in ("predicted", "failed") for r in job_rows(url))


def test_a_fold_that_breaks_the_executor_side_fails_alone_and_no_worker_dies(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    subs = {
        "nul": hostile(NUL_MESSAGE),
        "deep": hostile(DEEP_TREE),
        "forged": FORGED_RESULT,
        "good": B.CLASSIFIER,
    }
    register(spool, make_watcher, tmp_path, subs)
    executor = make_executor(workers=2)
    with running(executor):
        wait_for(lambda: settled(database_url), 60, what="every fold to end")
        assert live_workers() == 2
    by_name: dict[str, list[dict]] = {}
    for row in job_rows(database_url):
        by_name.setdefault(row["name"], []).append(row)
    assert {(r["state"], r["attempts"]) for r in by_name["good"]} == {("predicted", 1)}
    for name in ("nul", "deep", "forged"):
        rows = by_name[name]
        assert {(r["state"], r["attempts"]) for r in rows} == {("failed", 1)}, rows
        for row in rows:
            reason = row["error"]
            assert "\x00" not in reason and "\n" not in reason and len(reason) <= 500
            reason.encode("utf-8")  # valid UTF-8: no lone surrogate
            assert "\x00" not in (row["error_detail"] or "")
    assert by_name["nul"][0]["error"].startswith("ValueError: bad")
    assert by_name["deep"][0]["error"] == "RuntimeError: left a deep tree"
    assert "result file" in by_name["forged"][0]["error"]
    scratch = Path(executor.config.scratch or "/tmp")
    assert not list(scratch.glob(f"datarun-fold-{os.getpid()}-*"))  # this executor's


def test_a_killed_fold_runner_reruns_the_fold_and_fails_it_only_after_every_attempt(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    """The zygote killed mid-fold (as the OOM killer would): the machine's fault, so the
    fold runs again; a fold whose runner dies on every attempt ends failed, saying so."""
    slow = hostile("import time; time.sleep(1.5)").replace("return None", "return X")
    register(spool, make_watcher, tmp_path, {"slow": slow})
    executor = make_executor(workers=1, timeout_seconds=30)
    with running(executor):
        first = job_rows(database_url)[0]["id"]

        def kill_zygote_under(job: int, attempt: int) -> None:
            def holds() -> bool:
                return bool(executor.zygote.running()) and any(
                    r["id"] == job and r["state"] == "running" and r["attempts"] == attempt
                    for r in job_rows(database_url)
                )

            wait_for(holds, 60, what=f"job {job} running")
            pid = executor.zygote.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

        kill_zygote_under(first, 1)  # once: the fold runs again and completes
        wait_for(lambda: job_rows(database_url)[0]["state"] != "running"
                 or job_rows(database_url)[0]["attempts"] > 1, 60, what="the re-run")  # fmt: skip
        for attempt in (1, 2, 3):  # the next job's runner dies on every attempt
            kill_zygote_under(first + 1, attempt)
        wait_for(lambda: settled(database_url), 90, what="every fold to end")
        assert live_workers() == 1
    rows = {r["id"]: r for r in job_rows(database_url)}
    assert rows[first]["attempts"] == 2
    assert rows[first]["exit_status"] != "ok" or rows[first]["state"] == "predicted"
    failed = rows[first + 1]
    assert (failed["state"], failed["attempts"]) == ("failed", 3)
    assert "fold runner" in failed["error"] and "3 attempts" in failed["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_disk_while_publishing_hands_folds_back_until_space_returns(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    other = B.CLASSIFIER.replace("500", "600")
    register(spool, make_watcher, tmp_path, {"a": B.CLASSIFIER, "b": other})
    predictions = spool.predictions
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(predictions)],
                   check=True)  # fmt: skip
    try:
        filler = predictions / "filler"
        with open(filler, "wb") as handle, pytest.raises(OSError):  # the disk is full
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        executor = make_executor(workers=2)
        with running(executor):
            wait_for(lambda: executor.disk_full_since is not None, 60, what="a full disk seen")
            time.sleep(2)
            assert {(r["state"], r["attempts"]) for r in job_rows(database_url)} <= {
                ("queued", 0), ("running", 1)
            }  # fmt: skip
            filler.unlink()  # space returns: every job completes, no restart
            wait_for(lambda: settled(database_url), 90, what="every fold to end")
            assert live_workers() == 2
        assert {(r["state"], r["attempts"]) for r in job_rows(database_url)} == {("predicted", 1)}
    finally:
        subprocess.run(["umount", "-l", str(predictions)], check=False)


def test_worker_count_in_the_heartbeat_follows_live_workers(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    executor = make_executor(workers=2)
    with running(executor):
        wait_for(lambda: live_workers() == 2, 60, what="two workers")
        with db.connect(database_url) as conn:
            row = conn.execute("select workers from executors where id = %s",
                               (executor.id,)).fetchone()  # fmt: skip
        assert row is not None and row["workers"] == 2


SNOOP_MEMORY = """
import ctypes
import posix


class Classifier:
    def fit(self, X, y):
        secret = b"s3cr3t" + b"-token"
        found = ["posix.environ"] if any(secret in v for v in posix.environ.values()) else []
        try:  # unreadable once the fold dropped to its own user, and then never shown
            with open("/proc/self/environ", "rb") as handle:
                found += ["/proc/self/environ"] if secret in handle.read() else []
        except OSError:
            pass
        environ = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
        i = 0
        while environ[i]:
            found += ["environ"] if secret in environ[i] else []
            i += 1
        raise RuntimeError(f"secrets seen: {sorted(set(found))}")

    def predict_proba(self, X):
        return None
"""


def test_nothing_the_executor_knew_is_in_a_folds_memory(
    spool, make_watcher, make_executor, database_url, tmp_path, monkeypatch
):
    """An administrator's variable under any name (not only DATARUN_* and PG*) stays out
    of the fold runner, so no fold finds it in the memory it inherits."""
    monkeypatch.setenv("CLOUD_UPLOAD_TOKEN", "s3cr3t-token")
    register(spool, make_watcher, tmp_path, {"snoop": SNOOP_MEMORY})
    executor = make_executor(workers=1)
    with running(executor):
        wait_for(lambda: settled(database_url), 60, what="every fold to end")
    errors = {r["error"] for r in job_rows(database_url)}
    assert errors == {"RuntimeError: secrets seen: []"}, errors


def forged_predictions(body: str) -> str:
    return f"""
import json
import os

import numpy as np


class Classifier:
    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        {body}
        with open("result.json", "w") as handle:
            json.dump({{"ok": True}}, handle)
        os._exit(0)
"""


def test_prediction_files_are_read_no_further_than_the_expected_arrays_need(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    """A sparse 512 MB file and a header declaring 2 GB: refused from their size and
    header, never read or copied whole into predictions/."""
    subs = {
        "sparse": forged_predictions("open('pred.npz', 'wb').truncate(512 * 2**20)"),
        "shape": forged_predictions("np.savez('pred.npz', train=np.zeros((5, 3)), test=0)"),
        "good": B.CLASSIFIER,
    }
    register(spool, make_watcher, tmp_path, subs)
    executor = make_executor(workers=2)
    with running(executor):
        wait_for(lambda: settled(database_url), 60, what="every fold to end")
    by_name: dict[str, set[str]] = {}
    for row in job_rows(database_url):
        by_name.setdefault(row["name"], set()).add(row["error"] or row["state"])
    assert by_name["good"] == {"predicted"}
    assert all(e.startswith("the fold's predictions were refused: ") for e in by_name["sparse"])
    assert all(e.startswith("the fold's predictions were refused: ") for e in by_name["shape"])
    assert max(p.stat().st_size for p in spool.predictions.iterdir()) < 2**20


THREE_CHILDREN = hostile(
    "import os, time\n        pids = []\n        for _ in range(3):\n"
    "            pid = os.fork()\n            if pid == 0:\n"
    "                block = bytearray(120 * 2**20)\n"
    "                block[::4096] = b'x' * len(block[::4096])\n"
    "                time.sleep(1)\n                os._exit(0)\n"
    "            pids.append(pid)\n"
    "        for pid in pids:\n            os.waitpid(pid, 0)\n"
    "        raise RuntimeError('measured')"
)


def test_a_folds_peak_memory_is_its_processes_together(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    """Three children of 120 MB at once: the fold's peak is read from its control group
    (all of them, about 360 MB), not from the largest single process (120 MB)."""
    from executor.isolation import probe

    if probe(loud=False).cgroups is None:
        pytest.skip("no control group for folds on this machine: peaks are per process")
    register(spool, make_watcher, tmp_path, {"three": THREE_CHILDREN})
    executor = make_executor(workers=1, memory_mb=600)
    with running(executor):
        wait_for(lambda: settled(database_url), 60, what="every fold to end")
    with db.connect(database_url) as conn:
        peaks = [r["peak_rss_bytes"] for r in conn.execute("select peak_rss_bytes from jobs")]
    assert {r["error"] for r in job_rows(database_url)} == {"RuntimeError: measured"}
    assert all(p is not None and p >= 3 * 120 * 2**20 for p in peaks), peaks
