"""What crosses the executor's process boundaries (executor.messages) comes back as it
went: a fold's spec through the zygote's JSON line, a fold's end through its reply."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from executor.cgroups import Hierarchy
from executor.isolation import Isolation
from executor.messages import FoldDone, FoldLimits, FoldSpec

LIMITS = FoldLimits(
    timeout=60, cpu_seconds=1.5, memory_mb=512, max_processes=64, log_bytes=10 << 20,
    disk_mb=1024, network="none",
    isolation=Isolation(Hierarchy(1, Path("/sys/fs/cgroup/memory/x"), Path("/p")), True),
)  # fmt: skip


def through_json(data: dict) -> dict:
    return json.loads(json.dumps(data))


def test_a_spec_crosses_to_the_zygote_unchanged():
    spec = FoldSpec(
        dataset_path="/spool/store/datasets/1", kind="native", workflow="classifier",
        task="classification", target="y", fold=3, classes=("a", "b"), scores=("accuracy",),
        code="/tmp/s/code", work="/tmp/s/work", log="/tmp/s/fold.log", uid=1001, gid=1001,
        limits=LIMITS, hide=("/spool", "/tmp"), env={"PATH": "/usr/bin", "HOME": "/tmp/s/work"},
    )  # fmt: skip
    assert FoldSpec.from_dict(through_json(spec.to_dict())) == spec
    assert spec.outputs == spec.work  # a fold alone writes its results in work/
    own = replace(spec, out="/tmp/s/work/.datarun-7.1")  # a fold of a shared child
    assert FoldSpec.from_dict(through_json(own.to_dict())) == own
    assert own.outputs == "/tmp/s/work/.datarun-7.1"
    bare = FoldLimits(3600.0, None, None, 64, 1 << 20, None, "host", None)
    assert FoldLimits.from_dict(through_json(bare.to_dict())) == bare


def test_limits_keep_the_shape_stored_in_executors_limits():
    assert set(LIMITS.to_dict()) == {
        "timeout", "cpu_seconds", "memory_mb", "max_processes", "log_bytes", "disk_mb",
        "network", "isolation",
    }  # fmt: skip
    assert LIMITS.to_dict()["isolation"] == {
        "cgroups": 1, "cgroup_memory": "/sys/fs/cgroup/memory/x", "cgroup_pids": "/p",
        "namespaces": True,
    }  # fmt: skip


def test_a_fold_end_and_a_refused_start_cross_back_unchanged():
    done = FoldDone(
        "7.1", exit_code=-9, timed_out=True, cpu_seconds=1.25, peak_rss_kb=1000,
        base_rss_kb=800, minor_faults=12, wall_seconds=2.5, log_bytes=10, log_dropped=0,
        memory_peak_bytes=None, oom=False, disk_full=True,
    )  # fmt: skip
    message = through_json(done.to_message())
    assert message["op"] == "done" and FoldDone.from_message(message) == done
    refused = FoldDone("7.2", start_error="OSError: [Errno 28] No space left on device")
    message = through_json(refused.to_message())
    assert message == {"op": "error", "key": "7.2", "message": refused.start_error}
    back = FoldDone.from_message(message)
    assert back == refused and not back.ended and back.exit_code is None
    unrun = FoldDone("7.3", not_run=True)  # a shared child ended before this fold
    assert FoldDone.from_message(through_json(unrun.to_message())) == unrun
    lent = FoldDone("7.4", not_run=True, lent=True)  # given to an idle worker
    assert FoldDone.from_message(through_json(lent.to_message())) == lent
