"""What each of the executor's worker threads does: claim one fold (or a submission's
short folds, to run in turn in one warm child), run it to its end in the zygote,
publish what it left and complete its job (fenced on its attempt; the last fold's
completion goes with the next claim, in one statement); a fault on our side or the
machine's is said and recorded, never raised.

`Worker` is mixed into `executor.daemon.Executor`, whose life cycle sets the state
declared here; the daemon starts, replaces and stops the threads that run `work`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from tempfile import gettempdir
from typing import Any, TypeVar

from executor import outputs
from executor.client import ZygoteClient, ZygoteDied
from executor.config import ExecutorConfig
from executor.messages import FoldDone, FoldSpec
from executor.sandbox import SandboxUsers, kill_user, release_scratch, remove_files_of
from executor.sharedwork import Ended, SharedWork
from spool import db, jobs
from spool.errors import DatabaseError, DatabaseUnavailable
from spool.jobs import ClaimedJob, Outcome
from spool.layout import Spool

log = logging.getLogger(__name__)

T = TypeVar("T")


class Worker(SharedWork):
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
    _unsent: dict[str, ClaimedJob]  # ended folds whose completion is not sent yet
    _wake: threading.Condition
    _generation: int  # bumped by each wake-up
    _stopping: threading.Event
    _handing_back: set[str]
    _known: dict[int, dict[str, Any]]  # submission id -> what folds need
    _short: OrderedDict[int, bool]  # submission id -> were its folds done here short?

    # ---- the loop -----------------------------------------------------------------

    def _work(self, stop: threading.Event) -> None:
        """Claim, run, and send each run's last completion with the next claim: one
        round trip between two runs."""
        ended: list[Ended] = []
        try:
            self._serve(stop, ended)
        finally:  # a worker that dies leaves what it did not send to the heartbeat
            self._sent([job for job, _ in ended])

    def _serve(self, stop: threading.Event, ended: list[Ended]) -> None:
        """The loop of `_work`; `ended` holds the completions not sent yet."""
        queues = list(self.config.queues)
        while True:
            stopping = stop.is_set()
            if stopping and not ended:
                return
            if self.disk_full_since is not None and not ended:  # claim no fold we could not publish
                stop.wait(min(30.0, 1.0 + (time.monotonic() - self.disk_full_since) / 4))
                self.disk_full_since = None if self._has_space() else self.disk_full_since
                continue
            n = 0 if stopping or self.disk_full_since is not None else 1
            seen = self._generation
            try:
                claimed = self._settle(ended, queues, n)
            except DatabaseError:
                log.exception("claim failed")
                for job, _ in ended:  # left running in the database: the heartbeat hands
                    outputs.discard(job, self.spool)  # it back, its attempt counted
                ended.clear()
                stop.wait(1.0)
                continue
            ended.clear()
            if claimed:
                ended.extend(self.execute(claimed))
                continue
            if n == 0:
                continue
            self._borrow()  # nothing to claim: half of what a shared child here has left?
            wait = (
                min(0.25, self.config.poll_seconds) if self._lending() else self.config.poll_seconds
            )
            with self._wake:
                if self._generation == seen and not stop.is_set():
                    self._wake.wait(timeout=wait)

    def _settle(self, ended: list[Ended], queues: list[str], n: int) -> list[ClaimedJob]:
        """Complete what ended (fenced: a refused attempt's files are discarded) and
        claim up to n next jobs, in one statement."""
        executor = self.id
        assert executor is not None
        sharing = self.sharing()
        try:
            settled = self._with_db(
                lambda conn: jobs.settle(
                    conn, executor, ended, queues, n, known=self._known, sharing=sharing
                )
            )
        finally:
            self._sent([job for job, _ in ended])
        for job in settled.refused:
            self._refused(job)
        return settled.claimed

    def _refused(self, job: ClaimedJob) -> None:
        log.warning("late result of job %s attempt %d refused: the job was given back and "
                    "belongs to a newer attempt", job.id, job.attempt)  # fmt: skip
        outputs.discard(job, self.spool)

    def _has_space(self) -> bool:
        """Room for a fold's results again, in predictions/ and the scratch folder?"""
        folders = (self.spool.predictions, self.config.scratch or Path(gettempdir()))
        if not all(outputs.has_room(folder) for folder in folders):
            return False
        log.info("space is back: claiming folds again")
        return True

    # ---- claimed jobs -------------------------------------------------------------

    def execute(self, claimed: list[ClaimedJob]) -> list[Ended]:
        """Run what one claim brought: a submission's short folds together in one
        child, any other fold in a child of its own. Each fold is published and
        completed as it ends, but the last: its completion is returned, for the next
        claim to carry. Never raises: whatever the fold left behind or said, an error on
        our side fails the fold (its attempt counts, the worker goes on); a fault of the
        machine (a full disk, a dead fold runner) gives it back."""
        ended: list[Ended] = []
        for run in self.runs(claimed):
            for job, outcome in ended:  # an earlier run's last: not worth holding back
                self._complete(job, outcome)
            ended = self._run(run)
        return ended

    def runs(self, claimed: list[ClaimedJob]) -> list[list[ClaimedJob]]:
        """A claim's jobs by child: a short submission's folds together, in fold order."""
        shared: dict[int, list[ClaimedJob]] = {}
        singles: list[list[ClaimedJob]] = []
        for job in claimed:
            if job.shared and self.config.shared_folds > 1:
                shared.setdefault(job.submission_id, []).append(job)
            else:
                singles.append([job])
        return [sorted(run, key=lambda j: (j.fold, j.id)) for run in shared.values()] + singles

    def _run(self, run: list[ClaimedJob]) -> list[Ended]:
        """One child's folds (one, or several of one submission)."""
        assert self.id is not None
        scratch: Path | None = None
        with self._active_lock:
            for job in run:
                self._active[job.key] = (job, None)
        ids: tuple[int, int] | None = None
        ended: list[Ended] = []
        child: FoldDone | None = None
        try:
            try:
                ids = self._users.take() if self._users else None
                scratch = outputs.make_scratch(run[0], self.spool, self.config.scratch, ids)
                specs = [
                    outputs.fold_spec(job, scratch, ids, self.spool, self.config) for job in run
                ]
                if len(run) == 1:
                    child = self._one(run[0], specs[0], scratch, ended)
                else:
                    child = self._shared(run, specs, scratch, ended)
            except Exception as exc:  # before any fold started: each fails (or goes back)
                for job in run:
                    self._fault(job, exc)
            finally:
                with self._active_lock:
                    for job in run:
                        self._active.pop(job.key, None)
                if ids and (child is None or not child.ended):  # the zygote did not see its end
                    kill_user(ids[0])
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
        return ended

    def _one(self, job: ClaimedJob, spec: FoldSpec, scratch: Path,
             ended: list[Ended]) -> FoldDone | None:  # fmt: skip
        """A fold in a child of its own; how the child ended (None: not seen)."""
        facts = self._facts(job.key)
        future = self.zygote.run(job.key, spec)
        done = None
        try:
            done = self._wait(job, future, spec.limits.timeout)
            self._ended(job, facts, scratch, spec, done, ended=ended, last=True)
        except Exception as exc:
            self._fault(job, exc)
        return done

    def _facts(self, child: str) -> dict[str, Any]:
        return {"executor": self.id, "host": self.host, "started_at": time.time(),
                "child": child}  # fmt: skip

    def _wait(self, job: ClaimedJob, future: Future[FoldDone], timeout: float) -> FoldDone:
        with self._active_lock:
            self._active[job.key] = (job, future)
        try:  # the zygote enforces the timeout; this bounds a zygote gone silent
            return future.result(timeout=float(timeout) + 60)
        except TimeoutError:
            self.zygote.kill(job.key)
            raise ZygoteDied("the fold runner did not report the fold's end") from None

    def _ended(self, job: ClaimedJob, facts: dict[str, Any], scratch: Path, spec: FoldSpec,
               done: FoldDone, *, ended: list[Ended], last: bool) -> None:  # fmt: skip
        """Publish a fold's files and complete it (the last: later, with the next
        claim); a fold the executor is handing back goes back instead."""
        with self._active_lock:  # its completion on the way: still ours, not an orphan
            self._active.pop(job.key, None)
            self._unsent[job.key] = job
        if job.key in self._handing_back:
            self._handing_back.discard(job.key)
            self._sent([job])
            self._hand_back(job, "the executor is stopping")
            return
        try:
            outcome = self._publish(job, scratch, spec, done, facts)
        except BaseException:
            self._sent([job])
            raise
        if last:  # sent with the next claim (or by the caller): held until then
            ended.append((job, outcome))
        else:
            self._complete(job, outcome)

    def _sent(self, done: list[ClaimedJob]) -> None:
        """Completions sent (or given up on: the heartbeat may hand their jobs back)."""
        with self._active_lock:
            for job in done:
                self._unsent.pop(job.key, None)

    def _publish(self, job: ClaimedJob, scratch: Path, spec: FoldSpec, done: FoldDone,
                 facts: dict[str, Any]) -> Outcome:  # fmt: skip
        outcome = outputs.collect(job, scratch, done, limits=spec.limits, spool=self.spool,
                                  executor=facts, out=Path(spec.outputs),
                                  log=Path(spec.log))  # fmt: skip
        self.disk_full_since = None  # the results were published
        self._seen(job, outcome)
        if outcome.error:
            log.info("job %s failed: %s", job.key, outcome.error)
        return outcome

    def _complete(self, job: ClaimedJob, outcome: Outcome) -> None:
        executor = self.id
        assert executor is not None
        try:
            if not self._with_db(lambda conn: jobs.complete(conn, job, executor, outcome)):
                self._refused(job)
        except DatabaseError:
            # Left running in the database: the heartbeat hands it back, attempt counted.
            log.exception("could not record the end of job %s", job.key)
            outputs.discard(job, self.spool)
        finally:
            self._sent([job])

    def _hand_back(self, job: ClaimedJob, why: str) -> None:
        executor = self.id
        assert executor is not None
        self._with_db(lambda conn: jobs.hand_back(conn, job, executor))
        log.info("job %s handed back: %s", job.key, why)

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
