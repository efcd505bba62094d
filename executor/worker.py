"""What each of the executor's worker threads does: claim one fold, run it to its end
in the zygote, publish what it left and complete its job (one fenced UPDATE); a fault
on our side or the machine's is said and recorded, never raised.

`Worker` is mixed into `executor.daemon.Executor`, whose life cycle sets the state
declared here; the daemon starts, replaces and stops the threads that run `work`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from tempfile import gettempdir
from typing import Any, TypeVar

from executor import outputs
from executor.client import ZygoteClient, ZygoteDied
from executor.config import ExecutorConfig
from executor.messages import FoldDone, FoldLimits, FoldSpec
from executor.sandbox import SandboxUsers, kill_user, release_scratch, remove_files_of
from spool import db, jobs
from spool.errors import DatabaseError, DatabaseUnavailable
from spool.jobs import ClaimedJob, Outcome
from spool.layout import Spool

log = logging.getLogger(__name__)

T = TypeVar("T")


def fold_spec(
    job: ClaimedJob, scratch: Path, ids: tuple[int, int] | None, spool: Spool,
    config: ExecutorConfig,
) -> FoldSpec:  # fmt: skip
    """What the fold's child needs, for this attempt in this scratch folder."""
    threads = str(config.threads)
    return FoldSpec(
        dataset_path=str(spool.absolute(job.dataset_path)),
        kind=job.kind, workflow=job.workflow, task=job.task, target=job.target,
        fold=job.fold, classes=tuple(job.summary.get("classes") or ()),
        scores=tuple(job.scores or ()),
        code=str(scratch / "code"), work=str(scratch / "work"),
        log=str(scratch / "fold.log"),
        uid=ids[0] if ids else None, gid=ids[1] if ids else None,
        limits=config.limits(),
        # never shown to a fold, whatever folder its Python lives in
        hide=(str(spool.root), str(scratch.parent)),
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch / "work"),
             "TMPDIR": str(scratch / "work"), "LANG": "C.UTF-8",
             "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
             "MKL_NUM_THREADS": threads},
    )  # fmt: skip


class Worker:
    # Set by Executor.__init__ and start().
    spool: Spool
    config: ExecutorConfig
    pool: db.Database
    zygote: ZygoteClient
    host: str
    id: int | None
    disk_full_since: float | None  # no room to publish: claims wait
    _users: SandboxUsers | None  # when root: a user per running fold
    _active: dict[str, tuple[ClaimedJob, Future[FoldDone] | None]]
    _active_lock: threading.Lock
    _wake: threading.Condition
    _generation: int  # bumped by each wake-up
    _stopping: threading.Event
    _handing_back: set[str]
    _known: dict[int, dict[str, Any]]  # submission id -> what folds need

    # ---- the loop -----------------------------------------------------------------

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

    def _claim_one(self, queues: list[str]) -> Callable[[db.Conn], list[ClaimedJob]]:
        executor = self.id
        assert executor is not None
        return lambda conn: jobs.claim(conn, executor, queues, 1, self._known)

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
        facts = {"executor": self.id, "host": self.host, "started_at": time.time()}
        scratch: Path | None = None
        with self._active_lock:
            self._active[job.key] = (job, None)
        ids = self._users.take() if self._users else None
        done: FoldDone | None = None
        try:
            try:
                scratch = outputs.make_scratch(job, self.spool, self.config.scratch, ids)
                spec = fold_spec(job, scratch, ids, self.spool, self.config)
                done = self._run_in_zygote(job, spec)
            finally:
                with self._active_lock:
                    self._active.pop(job.key, None)
                if ids and (done is None or not done.ended):  # the zygote did not see its end
                    kill_user(ids[0])
            self._finish(job, facts, scratch, spec.limits, done)
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

    def _run_in_zygote(self, job: ClaimedJob, spec: FoldSpec) -> FoldDone:
        future = self.zygote.run(job.key, spec)
        with self._active_lock:
            self._active[job.key] = (job, future)
        try:  # the zygote enforces the timeout; this bounds a zygote gone silent
            return future.result(timeout=float(spec.limits.timeout) + 60)
        except TimeoutError:
            self.zygote.kill(job.key)
            raise ZygoteDied("the fold runner did not report the fold's end") from None

    def _finish(self, job: ClaimedJob, facts: dict[str, Any], scratch: Path,
                limits: FoldLimits, done: FoldDone) -> None:  # fmt: skip
        executor = int(facts["executor"])
        if job.key in self._handing_back:
            self._handing_back.discard(job.key)
            self._with_db(lambda conn: jobs.hand_back(conn, job, executor))
            log.info("job %s handed back", job.key)
            return
        outcome = outputs.collect(job, scratch, done, limits=limits, spool=self.spool,
                                  executor=facts)  # fmt: skip
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

    def _with_db(self, action: Callable[[db.Conn], T]) -> T:
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
