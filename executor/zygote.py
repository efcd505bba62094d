"""The pre-warmed parent: a single-threaded process that forks one child per fold.

The executor starts it once (`python -m executor.zygote`) with an environment already
scrubbed of database credentials and with thread counts set, and talks to it in JSON
lines over its stdin and stdout. It imports numpy, pandas and scikit-learn once and
keeps recently used datasets loaded, so a fold's child starts with everything in
memory (copy-on-write) and costs a fork, not a Python start-up.

It owns the children: their output pipes (copied to each fold's log, capped), their
wall-clock deadlines (the whole process group is killed), and their exit status and
resource usage (wait4). Where the machine allows (executor.isolation), it also makes
each fold's control group (executor.cgroups: killed, read and removed after the fold),
mounts its work/ tmpfs (executor.mounts) and forks it into a PID namespace of its own
(executor.pidns). It holds no database connection and no thread, so forking is safe.
When the executor goes away (EOF on stdin) it kills every child and exits.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import select
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from executor import SANDBOX_FAILED, cgroups, mounts, pidns
from executor.isolation import Isolation
from executor.sandbox import kill_user

CHUNK = 1 << 16
CACHE_DATASETS = 4


@dataclass
class Running:
    key: str
    pid: int
    pipe: int
    log: BinaryIO
    log_cap: int
    deadline: float
    started: float
    base_rss_kb: int
    uid: int | None  # the fold's own user, whose every process dies with the fold
    group: cgroups.FoldGroup | None = None  # its control group
    work: str | None = None  # its work/ tmpfs, when it has namespaces
    init: int | None = None  # its PID namespace's init, until reaped
    keep: int | None = None  # the pipe that keeps that init (and the namespace) alive
    written: int = 0
    dropped: int = 0
    timed_out: bool = False
    killed: bool = False
    oom: bool = False
    exit: tuple[int, Any] | None = field(default=None)


class Zygote:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.running: dict[str, Running] = {}
        self.by_pipe: dict[int, Running] = {}
        self.by_pid: dict[int, Running] = {}
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.inits: dict[int, Running] = {}  # PID namespaces' inits
        self.by_oom: dict[int, Running] = {}  # v1 memory groups' OOM eventfds
        self.busy_groups: list[cgroups.FoldGroup] = []  # to remove once empty
        self.hierarchies: set[cgroups.Hierarchy] = set()  # seen: stale groups removed
        self.inbuf = b""
        self.gone = False  # the executor went away (killed): stop, quietly

    def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            self.out.write(json.dumps(message).encode() + b"\n")
            self.out.flush()
        except BrokenPipeError:
            self.gone = True

    # ---- data ---------------------------------------------------------------------

    def dataset(self, path: str, kind: str, target: str | None) -> Any:
        from executor.fold import load_dataset

        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        data = load_dataset(Path(path), kind, target)
        self.cache[path] = data
        while len(self.cache) > CACHE_DATASETS:
            self.cache.popitem(last=False)
        return data

    # ---- requests -----------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> bool:
        op = request.get("op")
        if op == "run":
            self.start(request["key"], request["spec"])
        elif op == "kill":
            self.kill(request["key"])
        elif op == "ping":
            self.send({"op": "pong"})
        elif op == "quit":
            return False
        return True

    def start(self, key: str, spec: dict[str, Any]) -> None:
        limits = spec["limits"]
        isolated = bool((limits.get("isolation") or {}).get("namespaces"))
        group: cgroups.FoldGroup | None = None
        try:
            kind = spec.get("kind", "native")
            data = self.dataset(spec["dataset_path"], kind, spec.get("target"))
            group = self._group(key, limits)
            if group is not None:
                spec = {**spec, "cgroups": group.join_files}
            if isolated:
                mounts.plan(hide=spec.get("hide") or ())  # once: the child inherits it
                mounts.mount_work(spec["work"], int(limits.get("disk_mb") or 1024),
                                  spec.get("uid"), spec.get("gid"))  # fmt: skip
            log = open(spec["log"], "wb", opener=_private)  # noqa: SIM115 (closed at reap)
        except Exception as exc:
            if group is not None:
                group.remove()
            self.send({"op": "error", "key": key, "message": f"{type(exc).__name__}: {exc}"})
            return
        read_end, write_end = os.pipe()
        base = _rss_kb()
        try:
            pid, init, keep = self._fork(spec, data, read_end, write_end, isolated)
        except OSError as exc:
            for fd in (read_end, write_end):
                os.close(fd)
            if group is not None:
                group.remove()
            log.close()
            self.send({"op": "error", "key": key, "message": f"{type(exc).__name__}: {exc}"})
            return
        os.close(write_end)
        os.set_blocking(read_end, False)
        now = time.monotonic()
        job = Running(key, pid, read_end, log, int(limits["log_bytes"]),
                      now + float(limits["timeout"]), now, base, spec.get("uid"), group,
                      spec["work"] if isolated else None, init, keep)  # fmt: skip
        self.running[key] = job
        self.by_pipe[read_end] = job
        self.by_pid[pid] = job
        if init is not None:
            self.inits[init] = job
        if group is not None and group.oom_event is not None:
            self.by_oom[group.oom_event] = job
        self.send({"op": "started", "key": key, "pid": pid})

    def _fork(self, spec: dict[str, Any], data: Any, read_end: int, write_end: int,
              isolated: bool) -> tuple[int, int | None, int | None]:  # fmt: skip
        """Fork the fold's child (in a PID namespace of its own when `isolated`):
        (its pid, its namespace's init, the pipe that keeps that init alive)."""
        from executor.fold import child_main

        gc.freeze()  # the child's collector then leaves our objects (and their pages) alone
        init = keep = None
        if isolated:
            init, keep = pidns.begin()
        try:
            pid = os.fork()
        except OSError:
            if keep is not None:
                pidns.end()
                os.close(keep)  # its init exits
            raise
        if pid == 0:  # the fold's child: never returns
            code = SANDBOX_FAILED
            try:
                os.close(read_end)
                code = child_main(spec, data, write_end)
            except BaseException as exc:  # the sandbox itself failed: its last log line
                os.write(2, f"\n{type(exc).__name__}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(code)
        if init is not None:
            pidns.end()
        return pid, init, keep

    def _group(self, key: str, limits: dict[str, Any]) -> cgroups.FoldGroup | None:
        hierarchy = Isolation.hierarchy(limits)
        if hierarchy is None:
            return None
        if hierarchy not in self.hierarchies:  # what a dead zygote left there, once
            self.hierarchies.add(hierarchy)
            cgroups.remove_stale(hierarchy, alive=os.getpid())
        name = f"{cgroups.PREFIX}{os.getpid()}-{key}"
        return cgroups.FoldGroup.create(hierarchy, name, limits.get("memory_mb"),
                                        limits.get("max_processes"))  # fmt: skip

    def kill(self, key: str) -> None:
        job = self.running.get(key)
        if job is not None:
            job.killed = True
            self._stop(job)

    def _stop(self, job: Running) -> None:
        """Kill the fold: its process group, its PID namespace (init's pipe closed: the
        kernel kills every process in it), its control group."""
        _killpg(job.pid)
        self._end_namespace(job)
        if job.group is not None:
            job.group.kill()

    def _end_namespace(self, job: Running) -> None:
        if job.keep is not None:
            os.close(job.keep)
            job.keep = None

    def out_of_memory(self, fd: int) -> None:
        job = self.by_oom.get(fd)
        if job is not None and job.group is not None and job.group.oom_fired():
            # v1 kills one process: the fold is limited as a whole, so all of it goes
            job.oom = True
            self._stop(job)

    # ---- events -------------------------------------------------------------------

    def drain(self, fd: int) -> None:
        job = self.by_pipe.get(fd)
        if job is None:
            return
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._close_pipe(job)
                return
            room = max(0, job.log_cap - job.written)
            if room:
                job.log.write(chunk[:room])
                job.written += min(room, len(chunk))
            job.dropped += max(0, len(chunk) - room)

    def _close_pipe(self, job: Running) -> None:
        if job.pipe in self.by_pipe:
            del self.by_pipe[job.pipe]
            os.close(job.pipe)
        self._maybe_finish(job)

    def reap(self) -> None:
        while self.by_pid or self.inits:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.inits:  # the namespace is gone, and every process in it
                done = self.inits.pop(pid)
                done.init = None
                self._maybe_finish(done)
                continue
            job = self.by_pid.pop(pid, None)
            if job is None:
                continue
            _killpg(pid)  # whatever the fold left running dies with it
            self._end_namespace(job)  # even what left its group (in its namespace)
            if job.uid is not None and job.work is None:  # no namespace: all of its user
                kill_user(job.uid)
            job.exit = (status, usage)
            if job.pipe in self.by_pipe:
                self.drain(job.pipe)
            self._maybe_finish(job)

    def _maybe_finish(self, job: Running) -> None:
        if job.exit is None or job.pipe in self.by_pipe or job.key not in self.running:
            return  # wait for both: the exit status and the end of its output (once)
        if job.init is not None:
            return  # and for its namespace's end: then none of its processes is left
        status, usage = job.exit
        if job.dropped:
            job.log.write(
                f"\n[datarun: output capped at {job.log_cap} bytes; "
                f"{job.dropped} more bytes dropped]\n".encode()
            )
        job.log.close()
        del self.running[job.key]
        peak, oom = None, job.oom
        if job.group is not None:
            if job.group.oom_event is not None:
                self.by_oom.pop(job.group.oom_event, None)
                job.group.oom_fired()
            peak, oom = job.group.stats()
            if not job.group.remove(wait=0.5):
                self.busy_groups.append(job.group)
        self.send({
            "op": "done", "key": job.key,
            "exit_code": os.waitstatus_to_exitcode(status),
            "timed_out": job.timed_out, "killed": job.killed,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_kb": usage.ru_maxrss, "base_rss_kb": job.base_rss_kb,
            "minor_faults": usage.ru_minflt,
            "wall_seconds": time.monotonic() - job.started,
            "log_bytes": job.written, "log_dropped": job.dropped,
            # The fold as a whole, from its control group (None without one): its peak
            # memory (every process, its tmpfs files and shared memory included), and
            # whether it ran out of it; and whether its work/ tmpfs ended full.
            "memory_peak_bytes": peak, "oom": oom,
            "disk_full": mounts.work_full(job.work) if job.work else False,
        })  # fmt: skip

    def remove_busy_groups(self) -> None:
        self.busy_groups = [g for g in self.busy_groups if not g.remove()]

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for job in self.running.values():
            if job.exit is None and not job.timed_out and now >= job.deadline:
                job.timed_out = True
                self._stop(job)
            elif job.exit is not None and job.pipe in self.by_pipe and now >= job.deadline + 5:
                self._close_pipe(job)  # a descendant escaped the group and holds the pipe

    def loop(self, stdin: int, wakeup: int) -> None:
        while True:
            deadlines = [j.deadline for j in self.running.values()]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0
            watched = [stdin, wakeup, *self.by_pipe, *self.by_oom]
            ready, _, _ = select.select(watched, [], [], min(timeout, 1.0))
            for fd in ready:
                if fd == wakeup:
                    _drain_wakeup(wakeup)
                elif fd == stdin:
                    if not self.read_requests(stdin):
                        return
                elif fd in self.by_oom:
                    self.out_of_memory(fd)
                else:
                    self.drain(fd)
            self.reap()
            self.enforce_deadlines()
            if self.busy_groups:
                self.remove_busy_groups()
            if self.gone:
                return

    def read_requests(self, stdin: int) -> bool:
        chunk = os.read(stdin, CHUNK)
        if not chunk:
            return False  # the executor is gone
        self.inbuf += chunk
        while b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            if line.strip() and not self.handle(json.loads(line)):
                return False
        return True

    def shutdown(self) -> None:
        for job in list(self.running.values()):
            self._stop(job)
        deadline = time.monotonic() + 5
        while (self.by_pid or self.inits) and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        for job in self.running.values():
            if job.group is not None:
                job.group.remove(wait=0.5)
        self.remove_busy_groups()


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)  # the fold's log: not for other folds' eyes


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _drain_wakeup(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def prewarm() -> None:
    """Import what folds use, once, before any fork."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import sklearn
    import sklearn.ensemble
    import sklearn.linear_model
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing  # noqa: F401

    import executor.fold
    import executor.workflows

    try:  # RAMP kits' folds import ramp-workflow: once here, not in every child
        import rampwf  # noqa: F401

        import executor.rampfold  # noqa: F401
    except ImportError:
        pass
    _warm_up()


def _warm_up() -> None:
    """Run a few tiny fits once, so that every child starts with scikit-learn's lazy
    imports done, its caches filled and the interpreter's code warm (forked children
    inherit all of it; started cold, a fold pays it again, about as much as a small fit)."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=list("abcd"))
    y = np.arange(60) % 3
    for model in (LogisticRegression(max_iter=200), RandomForestClassifier(n_estimators=3),
                  make_pipeline(StandardScaler(), LogisticRegression())):  # fmt: skip
        model.fit(X, y).predict_proba(X)
        model.fit(X.to_numpy(), y).predict_proba(X.to_numpy())
    for regressor in (Ridge(), RandomForestRegressor(n_estimators=3)):
        regressor.fit(X, y.astype(float)).predict(X)
    np.savez(io.BytesIO(), a=np.zeros(3))
    _warm_workflows(X, y)


WARM_CLASSIFIER = """
from sklearn.linear_model import LogisticRegression


class Classifier:
    def __init__(self):
        self.model = LogisticRegression(max_iter=200)

    def fit(self, X, y):
        self.model.fit(X, y)

    def predict_proba(self, X):
        return self.model.predict_proba(X)
"""


def _warm_workflows(X: Any, y: Any) -> None:
    """The workflow code path itself (module loading, DataFrame slicing, alignment)."""
    import tempfile

    import numpy as np

    from executor import workflows

    frame = X.assign(target=y)
    with tempfile.TemporaryDirectory() as code:
        Path(code, "classifier.py").write_text(WARM_CLASSIFIER, encoding="utf-8")
        workflows.run("classifier", "classification", Path(code), train=frame, test=X,
                      target="target", train_rows=np.arange(40), classes=["0", "1", "2"],
                      seed=0, scores=["accuracy"])  # fmt: skip
    sys.modules.pop("submission_classifier", None)
    from spool import responses

    for metric in ("accuracy", "roc_auc", "neg_log_loss", "r2"):  # scorers' methods, cached
        responses.preference(metric)


def _not_inherited() -> None:
    """What the executor passed us (the users' lease locks) stays ours: not held by
    the PID namespaces' inits we spawn."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def main() -> int:
    _not_inherited()
    prewarm()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    read_wake, write_wake = os.pipe()
    os.set_blocking(read_wake, False)
    os.set_blocking(write_wake, False)
    signal.set_wakeup_fd(write_wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    zygote = Zygote(sys.stdout.buffer)
    zygote.send({"op": "ready", "pid": os.getpid()})
    try:
        zygote.loop(sys.stdin.fileno(), read_wake)
    finally:
        zygote.shutdown()
        if zygote.gone:  # nobody reads our stdout: no flush error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
