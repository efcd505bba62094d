"""The pre-warmed parent: a single-threaded process that forks one child per fold.

The executor starts it once (`python -m executor.zygote`) with an environment already
scrubbed of database credentials and with thread counts set, and talks to it in JSON
lines over its stdin and stdout. It imports numpy, pandas and scikit-learn once and
keeps recently used datasets loaded, so a fold's child starts with everything in
memory (copy-on-write) and costs a fork, not a Python start-up.

It owns the children: their output pipes (copied to each fold's log, capped), their
wall-clock deadlines (the whole process group is killed), and their exit status and
resource usage (wait4). It holds no database connection and no thread, so forking is
safe. When the executor goes away (EOF on stdin) it kills every child and exits.
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

from executor import SANDBOX_FAILED
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
    written: int = 0
    dropped: int = 0
    timed_out: bool = False
    killed: bool = False
    exit: tuple[int, Any] | None = field(default=None)


class Zygote:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.running: dict[str, Running] = {}
        self.by_pipe: dict[int, Running] = {}
        self.by_pid: dict[int, Running] = {}
        self.cache: OrderedDict[str, Any] = OrderedDict()
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
        from executor.fold import child_main

        try:
            kind = spec.get("kind", "native")
            data = self.dataset(spec["dataset_path"], kind, spec.get("target"))
            log = open(spec["log"], "wb", opener=_private)  # noqa: SIM115 (closed at reap)
        except Exception as exc:
            self.send({"op": "error", "key": key, "message": f"{type(exc).__name__}: {exc}"})
            return
        read_end, write_end = os.pipe()
        base = _rss_kb()
        gc.freeze()  # the child's collector then leaves our objects (and their pages) alone
        pid = os.fork()
        if pid == 0:  # the fold's child: never returns
            code = SANDBOX_FAILED
            try:
                os.close(read_end)
                code = child_main(spec, data, write_end)
            except BaseException as exc:  # the sandbox itself failed: its last log line
                os.write(2, f"\n{type(exc).__name__}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(code)
        os.close(write_end)
        os.set_blocking(read_end, False)
        now = time.monotonic()
        job = Running(key, pid, read_end, log, int(spec["limits"]["log_bytes"]),
                      now + float(spec["limits"]["timeout"]), now, base,
                      spec.get("uid"))  # fmt: skip
        self.running[key] = job
        self.by_pipe[read_end] = job
        self.by_pid[pid] = job
        self.send({"op": "started", "key": key, "pid": pid})

    def kill(self, key: str) -> None:
        job = self.running.get(key)
        if job is not None:
            job.killed = True
            _killpg(job.pid)

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
        while self.by_pid:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.by_pid.pop(pid, None)
            if job is None:
                continue
            _killpg(pid)  # whatever the fold left running dies with it
            if job.uid is not None:  # even what left its session
                kill_user(job.uid)
            job.exit = (status, usage)
            if job.pipe in self.by_pipe:
                self.drain(job.pipe)
            self._maybe_finish(job)

    def _maybe_finish(self, job: Running) -> None:
        if job.exit is None or job.pipe in self.by_pipe or job.key not in self.running:
            return  # wait for both: the exit status and the end of its output (once)
        status, usage = job.exit
        if job.dropped:
            job.log.write(
                f"\n[datarun: output capped at {job.log_cap} bytes; "
                f"{job.dropped} more bytes dropped]\n".encode()
            )
        job.log.close()
        del self.running[job.key]
        self.send({
            "op": "done", "key": job.key,
            "exit_code": os.waitstatus_to_exitcode(status),
            "timed_out": job.timed_out, "killed": job.killed,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_kb": usage.ru_maxrss, "base_rss_kb": job.base_rss_kb,
            "minor_faults": usage.ru_minflt,
            "wall_seconds": time.monotonic() - job.started,
            "log_bytes": job.written, "log_dropped": job.dropped,
        })  # fmt: skip

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for job in self.running.values():
            if job.exit is None and not job.timed_out and now >= job.deadline:
                job.timed_out = True
                _killpg(job.pid)
            elif job.exit is not None and job.pipe in self.by_pipe and now >= job.deadline + 5:
                self._close_pipe(job)  # a descendant escaped the group and holds the pipe

    def loop(self, stdin: int, wakeup: int) -> None:
        while True:
            deadlines = [j.deadline for j in self.running.values()]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0
            ready, _, _ = select.select([stdin, wakeup, *self.by_pipe], [], [], min(timeout, 1.0))
            for fd in ready:
                if fd == wakeup:
                    _drain_wakeup(wakeup)
                elif fd == stdin:
                    if not self.read_requests(stdin):
                        return
                else:
                    self.drain(fd)
            self.reap()
            self.enforce_deadlines()
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
            _killpg(job.pid)
        deadline = time.monotonic() + 5
        while self.by_pid and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)


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
                      seed=0)  # fmt: skip
    sys.modules.pop("submission_classifier", None)


def main() -> int:
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
