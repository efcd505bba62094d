"""The executor: claim fold jobs, run each in a sandboxed child, report the outcome.

Threads: `workers` workers (claim one job, run it, complete it), one heartbeat
(beats, stops folds whose job is no longer ours, reaps executors that went silent),
one listener (LISTEN datarun_jobs wakes idle workers; they also poll every
`poll_seconds`, because a NOTIFY sent while we were disconnected is lost). Fold code
never runs in this process: the zygote forks it. No transaction stays open while a
fold runs: the claim commits at once, the completion is one fenced UPDATE.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import gettempdir
from typing import Any

from executor import mounts, outputs
from executor.client import ZygoteClient, ZygoteDied
from executor.isolation import Isolation
from executor.sandbox import (
    SANDBOX_USER,
    SandboxUsers,
    kill_user,
    network_check,
    release_scratch,
    remove_files_of,
)
from spool import db, jobs
from spool.errors import ConfigError, DatabaseError, DatabaseUnavailable
from spool.jobs import ClaimedJob, Outcome
from spool.layout import Spool, blocking_ancestor
from spool.version import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutorConfig:
    workers: int = 2
    queues: tuple[str, ...] = ("high", "low")
    heartbeat_seconds: float = 5.0
    lease_seconds: float = 30.0
    poll_seconds: float = 2.0
    timeout_seconds: float = 3600.0  # hard: wall clock, the process group is killed
    cpu_seconds: float | None = None  # soft: RLIMIT_CPU
    memory_mb: int | None = 4096
    max_processes: int = 64
    log_mb: float = 10.0
    threads: int = 1
    stop_grace_seconds: float = 30.0
    scratch: Path | None = None
    network: bool = False  # folds keep the network (else, as root: a namespace of their own)
    name: str | None = None  # how this executor is listed (default: the host name)
    # work/, and /tmp, /var/tmp and /dev/shm together: a tmpfs of this size each (with
    # namespaces), else the largest file a fold may write (RLIMIT_FSIZE)
    disk_mb: int | None = 1024
    # control groups and namespaces: probed at start unless given (a test's fallback)
    isolation: Isolation | None = None

    def limits(self) -> dict[str, Any]:
        return {"timeout": self.timeout_seconds, "cpu_seconds": self.cpu_seconds,
                "memory_mb": self.memory_mb, "max_processes": self.max_processes,
                "log_bytes": int(self.log_mb * 2**20), "disk_mb": self.disk_mb,
                "network": "host" if self.network or os.geteuid() != 0 else "none",
                "isolation": self.isolation.as_dict() if self.isolation else None}  # fmt: skip


# What a fold can and cannot import when it cannot read the Python installation: only
# what the zygote imported before forking (executor.zygote.prewarm) is there. Named in
# the warning; a test checks each name against a real sandboxed import.
PRELOADED_EXAMPLES = ("sklearn.svm", "sklearn.tree", "sklearn.neighbors", "sklearn.metrics")
NOT_PRELOADED_EXAMPLES = ("sklearn.cluster", "sklearn.impute", "sklearn.neural_network")


def sandbox_import_warning() -> str | None:
    """Folds run as datarun-run-N: can those users read this Python's own files? If not,
    say exactly what a submission can import and what fails."""
    spec = importlib.util.find_spec("sklearn")  # found, not imported: the parent stays small
    stdlib = blocking_ancestor(Path(os.__file__))
    packages = blocking_ancestor(Path(spec.origin if spec and spec.origin else os.__file__))
    blocked = stdlib or packages
    if blocked is None:
        return None
    standard = (
        "only the standard library modules those loaded"
        if stdlib is not None
        else "Python's standard library"
    )
    return (
        f"folds run as {SANDBOX_USER}-N users, who cannot read {blocked} where this Python's "
        "packages live, and this machine gives folds no mount namespace to show it to them: "
        "a submission can import only what the executor loaded before starting folds "
        "(numpy, pandas, pyarrow, scipy, joblib, ramp-workflow if installed, and scikit-learn "
        "with the submodules its ensemble, linear_model, model_selection, pipeline and "
        f"preprocessing need, such as {', '.join(PRELOADED_EXAMPLES)}) and {standard}. Any "
        "other module installed there fails with ModuleNotFoundError: "
        f"{', '.join(NOT_PRELOADED_EXAMPLES)}, any other package. Install datarun where "
        "other users can read it (e.g. python3 -m venv /opt/datarun) to lift this."
    )


class Executor:
    def __init__(self, url: str, spool: Spool, config: ExecutorConfig) -> None:
        self.url = url
        self.spool = spool
        self.config = config
        # Claims and completions are fenced and leased: a commit lost in a server crash
        # at worst makes a fold run again, so they need not wait for the disk.
        self.pool = db.Database(
            url, min_size=1, max_size=config.workers + 3, name="executor", durable=False
        )
        self.zygote = ZygoteClient(config.threads)
        self.id: int | None = None
        self.host = config.name or socket.gethostname()
        self._users: SandboxUsers | None = None  # when root: a user per running fold
        self._active: dict[str, tuple[ClaimedJob, Future[dict[str, Any]] | None]] = {}
        self._active_lock = threading.Lock()
        self._wake = threading.Condition()
        self._generation = 0
        self._stopping = threading.Event()
        self._handing_back: set[str] = set()
        self._orphans: set[tuple[int, int]] = set()
        self._known: dict[int, dict[str, Any]] = {}  # submission id -> what folds need
        self._closed = False
        self.warning: str | None = None
        self._workers: list[threading.Thread] = []
        self.disk_full_since: float | None = None  # no room to publish: claims wait

    # ---- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        if self.id is not None:
            return
        # Threads here mostly wait; the default 5 ms GIL switch interval would add up to
        # that much to each hand-over (a fold's end reaching its worker, say).
        sys.setswitchinterval(0.0005)
        root = os.geteuid() == 0
        if root and not self.config.network:
            network_check()  # a machine without namespaces at all: refused, first
        # What folds get, said once: as a warning where full isolation is expected (root,
        # folds without network), else in the log (not root, or fold_network set).
        layers = self.config.isolation or Isolation.probe(loud=root and not self.config.network)
        if not root and layers.namespaces:
            raise ConfigError("folds get mount and PID namespaces only from a root executor")
        self.config = replace(self.config, isolation=layers)
        isolated = layers.namespaces
        if root:
            scratch = self.config.scratch or Path(gettempdir())
            for point in mounts.release_stale(scratch, outputs.SCRATCH_PREFIX):
                log.info("unmounted %s, left by an executor that is gone", point)
            blocked = None if isolated else blocking_ancestor(scratch / "x")
            if blocked is not None:
                raise ConfigError(
                    f"the sandbox users ({SANDBOX_USER}-N) cannot enter {blocked}, so folds "
                    "cannot reach their scratch folders: set DATARUN_SCRATCH_DIR (scratch_dir) "
                    "to a folder that others may traverse"
                )
            if self._users is None:
                self._users = SandboxUsers(self.config.workers)
                log.info("folds run as %s", ", ".join(self._users.lease()))
                self.zygote.pass_fds = self._users.fds
            # with namespaces, folds see the Python prefixes through their own root
            self.warning = None if isolated else sandbox_import_warning()
            if self.warning:
                log.warning("%s", self.warning)
        for path in outputs.clean_stale(self.config.scratch):
            log.info("removed %s, left by an executor that is gone", path)
        self.pool.open()
        # The zygote first: its warm-up takes seconds, and a registered executor whose
        # heartbeat has not started yet could be reaped as lost meanwhile.
        self.zygote.start()
        self._register()

    def _register(self) -> None:
        with self.pool.connection() as conn:
            self.id = jobs.register_executor(
                conn, host=self.host, pid=os.getpid(), queues=list(self.config.queues),
                workers=self.config.workers, version=__version__, limits=self.config.limits(),
            )  # fmt: skip
        log.info(
            "executor %s registered (%s pid %d, queues %s, %d workers)",
            self.id,
            self.host,
            os.getpid(),
            ",".join(self.config.queues),
            self.config.workers,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.zygote.close()
        if self._users is not None:
            self._users.close()
        if self.id is not None:
            try:
                with self.pool.connection() as conn:
                    jobs.stopped(conn, self.id)
            except DatabaseError:
                log.warning("could not mark executor %s stopped", self.id)
        self.pool.close()

    # ---- one pass, for tests ------------------------------------------------------

    def run_once(self) -> int:
        """Claim up to `workers` jobs, run them to their end; returns how many ran."""
        self.start()
        assert self.id is not None
        with self.pool.connection() as conn:
            claimed = jobs.claim(
                conn, self.id, list(self.config.queues), self.config.workers, self._known
            )
        threads = [threading.Thread(target=self.execute, args=(job,)) for job in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return len(claimed)

    # ---- one job ------------------------------------------------------------------

    def execute(self, job: ClaimedJob) -> None:
        """Run one fold to its end. Never raises: whatever the fold left behind or said,
        an error on our side fails the fold (its attempt counts, the worker goes on); a
        fault of the machine (a full disk, a dead fold runner) gives it back."""
        try:
            self._execute(job)
        except Exception as exc:
            self._fault(job, exc)

    def _execute(self, job: ClaimedJob) -> None:
        assert self.id is not None
        executor = self.id
        started = time.time()
        scratch: Path | None = None
        spec: dict[str, Any] = {"limits": self.config.limits()}
        with self._active_lock:
            self._active[job.key] = (job, None)
        ids = self._users.take() if self._users else None
        done: dict[str, Any] = {}
        try:
            try:
                scratch = outputs.make_scratch(job, self.spool, self.config.scratch, ids)
                spec = self._spec(job, scratch, ids)
                future = self.zygote.run(job.key, spec)
                with self._active_lock:
                    self._active[job.key] = (job, future)
                try:  # the zygote enforces the timeout; this bounds a zygote gone silent
                    done = future.result(timeout=float(spec["limits"]["timeout"]) + 60)
                except TimeoutError:
                    self.zygote.kill(job.key)
                    raise ZygoteDied("the fold runner did not report the fold's end") from None
            finally:
                with self._active_lock:
                    self._active.pop(job.key, None)
                if ids and done.get("op") != "done":  # the zygote did not see this fold's end
                    kill_user(ids[0])
            facts = {"executor": executor, "host": self.host, "started_at": started}
            self._finish(job, facts, scratch, spec, done)
        finally:
            try:
                if scratch is not None:
                    self._clean(scratch)
            finally:
                # Only now, its files read and removed and its processes dead, may the
                # user run another fold: never while this fold's work folder exists.
                if ids and self._users:
                    try:
                        remove_files_of(ids[0])
                    finally:
                        self._users.give(ids)

    def _finish(self, job: ClaimedJob, facts: dict[str, Any], scratch: Path | None,
                spec: dict[str, Any], done: dict[str, Any]) -> None:  # fmt: skip
        executor = int(facts["executor"])
        if job.key in self._handing_back:
            self._handing_back.discard(job.key)
            self._with_db(lambda conn: jobs.hand_back(conn, job, executor))
            log.info("job %s handed back", job.key)
            return
        outcome = (
            outputs.collect(job, scratch, done, spec=spec, spool=self.spool, executor=facts)
            if scratch is not None
            else Outcome(error=f"the fold could not start: {done.get('message')}")
        )
        self.disk_full_since = None  # the results were published
        if not self._with_db(lambda conn: jobs.complete(conn, job, executor, outcome)):
            log.warning(
                "late result of job %s attempt %d refused: the job was given "
                "back and belongs to a newer attempt",
                job.id,
                job.attempt,
            )
            outputs.discard(job, self.spool)
        elif outcome.error:
            log.info("job %s failed: %s", job.key, outcome.error)

    def _clean(self, scratch: Path) -> None:
        release_scratch(scratch)  # its work/ tmpfs, when the fold had one
        try:
            outputs.clean(scratch)
        except OSError as exc:
            # Whatever is left must not reach the user's next fold: root's alone now.
            log.error("could not remove the scratch folder %s: %s", scratch, exc)
            with contextlib.suppress(OSError):
                os.chmod(scratch, 0o700)

    def _fault(self, job: ClaimedJob, exc: Exception) -> None:
        """The fold did not reach a completion: say why, in the database and the log."""
        executor = self.id
        assert executor is not None
        with contextlib.suppress(OSError):
            outputs.discard(job, self.spool)  # a half-published attempt
        try:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                if self.disk_full_since is None:
                    self.disk_full_since = time.monotonic()
                log.error("no space left to run or publish job %s (%s): handed back; "
                          "waiting for space", job.key, exc)  # fmt: skip
                self._with_db(lambda conn: jobs.hand_back(conn, job, executor))
            elif isinstance(exc, ZygoteDied):
                reason = f"the machine failed this fold: {exc}"
                state = self._with_db(
                    lambda conn: jobs.requeue(conn, job.id, job.attempt, executor, reason)
                )
                log.warning("job %s: %s; now %s", job.key, reason, state or "not ours")
            else:
                log.error("datarun's side of job %s failed; the fold is failed",
                          job.key, exc_info=exc)  # fmt: skip
                reason = (
                    f"datarun's executor could not finish this fold: {type(exc).__name__}: {exc}"
                )
                outcome = Outcome(error=reason, exit_status="executor error")
                self._with_db(lambda conn: jobs.complete(conn, job, executor, outcome))
        except DatabaseError:
            # Left running in the database: the heartbeat hands it back, attempt counted.
            log.exception("could not record the end of job %s", job.key)

    def _spec(self, job: ClaimedJob, scratch: Path, ids: tuple[int, int] | None) -> dict[str, Any]:
        return {
            "dataset_path": str(self.spool.absolute(job.dataset_path)),
            "kind": job.kind, "workflow": job.workflow, "task": job.task, "target": job.target,
            "fold": job.fold, "classes": job.summary.get("classes") or [],
            "scores": job.scores or [],
            "code": str(scratch / "code"), "work": str(scratch / "work"),
            "log": str(scratch / "fold.log"),
            "uid": ids[0] if ids else None, "gid": ids[1] if ids else None,
            "limits": self.config.limits(),
            # never shown to a fold, whatever folder its Python lives in
            "hide": [str(self.spool.root), str(scratch.parent)],
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch / "work"),
                    "TMPDIR": str(scratch / "work"), "LANG": "C.UTF-8",
                    "OMP_NUM_THREADS": str(self.config.threads),
                    "OPENBLAS_NUM_THREADS": str(self.config.threads),
                    "MKL_NUM_THREADS": str(self.config.threads)},
        }  # fmt: skip

    def _with_db(self, action: Any) -> Any:
        """Run a statement, waiting out a database restart (fencing keeps it safe)."""
        backoff = 0.2
        while True:
            try:
                with self.pool.connection() as conn:
                    return action(conn)
            except DatabaseUnavailable as exc:
                if self._stopping.is_set() and backoff > 5:
                    raise
                log.warning("%s; retrying in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    # ---- the daemon ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; then finish running folds within the grace period,
        hand back the others, and deregister. A worker that dies is said and replaced."""
        self.start()
        self._workers = [self._worker(stop, i) for i in range(self.config.workers)]
        helpers = [threading.Thread(target=self._beat, args=(stop,), name="heartbeat",
                                    daemon=True),
                   threading.Thread(target=self._listen, args=(stop,), name="listener",
                                    daemon=True)]  # fmt: skip
        for thread in helpers:
            thread.start()
        while not stop.wait(0.5):
            for i, thread in enumerate(self._workers):
                if not thread.is_alive() and not stop.is_set():
                    log.error("worker %d died; starting another in its place", i)
                    self._workers[i] = self._worker(stop, i)
        workers = self._workers
        self._stopping.set()
        if self.id is not None:
            self._with_db(lambda conn: jobs.stopping(conn, self.id))
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + self.config.stop_grace_seconds
        for thread in workers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._active_lock:
            late = list(self._active)
        for key in late:
            self._handing_back.add(key)
            self.zygote.kill(key)
        for thread in workers + helpers:
            thread.join(timeout=30)
        self.close()

    def _worker(self, stop: threading.Event, i: int) -> threading.Thread:
        thread = threading.Thread(target=self._work, args=(stop,), name=f"worker-{i}",
                                  daemon=True)  # fmt: skip
        thread.start()
        return thread

    def live_workers(self) -> int:
        if not self._workers:  # run_once: no long-lived workers
            return self.config.workers
        return sum(thread.is_alive() for thread in self._workers)

    def _work(self, stop: threading.Event) -> None:
        queues = list(self.config.queues)
        while not stop.is_set():
            if self.disk_full_since is not None:  # claim no fold we could not publish
                stop.wait(min(30.0, 1.0 + (time.monotonic() - self.disk_full_since) / 4))
                self.disk_full_since = None if self._has_space() else self.disk_full_since
                if self.disk_full_since is not None:
                    continue
            seen = self._generation
            try:
                claimed = self._with_db(self._claim_one(queues))
            except DatabaseError:
                log.exception("claim failed")
                stop.wait(1.0)
                continue
            if claimed:
                self.execute(claimed[0])
                continue
            with self._wake:
                if self._generation == seen and not stop.is_set():
                    self._wake.wait(timeout=self.config.poll_seconds)

    def _has_space(self) -> bool:
        """Room for a fold's results again, in predictions/ and the scratch folder?"""
        for folder in (self.spool.predictions, self.config.scratch or Path(gettempdir())):
            try:
                with tempfile.TemporaryFile(dir=folder) as probe:
                    probe.write(b"\0" * 65536)
                    probe.flush()
                    os.fsync(probe.fileno())
            except OSError:
                return False
        log.info("space is back: claiming folds again")
        return True

    def _claim_one(self, queues: list[str]) -> Any:
        executor = self.id
        assert executor is not None
        return lambda conn: jobs.claim(conn, executor, queues, 1, self._known)

    def _listen(self, stop: threading.Event) -> None:
        def woken(queue: str | None) -> None:
            if queue is not None and queue not in self.config.queues:
                return  # jobs of a queue we do not serve: our idle workers sleep on
            with self._wake:
                self._generation += 1
                self._wake.notify_all()

        db.listen(self.url, jobs.JOBS_CHANNEL, woken, stop)

    def _beat(self, stop: threading.Event) -> None:
        next_reap = 0.0
        while not stop.wait(self.config.heartbeat_seconds):
            try:
                self.beat_once()
                if time.monotonic() >= next_reap:
                    with self.pool.connection() as conn:
                        reaped = jobs.reap(conn, self.config.lease_seconds)
                    for row in reaped:
                        log.warning("job %s of a silent executor: now %s", row["id"], row["state"])
                    next_reap = time.monotonic() + self.config.lease_seconds / 2
            except DatabaseError as exc:
                log.warning("heartbeat failed: %s", exc)

    def beat_once(self) -> None:
        assert self.id is not None
        with self._active_lock:  # before the query: what it misses was claimed after it
            active = dict(self._active)
        with self.pool.connection() as conn:
            ours = jobs.heartbeat(conn, self.id, self.live_workers())
        if ours is None:
            log.warning("executor %s was declared lost (its heartbeat came too late); its "
                        "jobs went back to the queue: stopping their folds and registering "
                        "again", self.id)  # fmt: skip
            for key in active:
                self.zygote.kill(key)
            self._register()
            return
        for key, (job, _) in active.items():
            if (job.id, job.attempt) not in ours:
                log.info("job %s is no longer ours (cancelled or given back): stopping it", key)
                self.zygote.kill(key)
        # Running in the database but not here (a completion lost in a server crash, a
        # worker gone): seen twice in a row, such a job is handed back to the queue.
        running_here = {(job.id, job.attempt) for job, _ in active.values()}
        orphans = ours - running_here
        for job_id, attempt in orphans & self._orphans:
            with self.pool.connection() as conn:
                state = jobs.hand_back_orphan(conn, job_id, attempt, self.id)
            if state:
                log.warning("job %s attempt %s was running in the database but not here: "
                            "now %s", job_id, attempt, state)  # fmt: skip
        self._orphans = orphans
