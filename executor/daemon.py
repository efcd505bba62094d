"""The executor: claim fold jobs, run each in a sandboxed child, report the outcome.

Threads: `workers` workers (claim one job, or a submission's short folds, run them,
complete each, the last with the next claim: executor.worker), one
heartbeat (beats, stops folds whose job is no longer ours, reaps executors that went
silent), one listener (LISTEN datarun_jobs wakes idle workers; they also poll every
`poll_seconds`, because a NOTIFY sent while we were disconnected is lost). This module
is the executor's life cycle: start, register, the threads, heartbeat, stop. Fold code
never runs in this process: the zygote forks it. No transaction stays open while a
fold runs: the claim commits at once, the completion is one fenced UPDATE.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from executor import outputs, preflight
from executor.client import ZygoteClient
from executor.config import ExecutorConfig
from executor.messages import FoldDone
from executor.preflight import NOT_PRELOADED_EXAMPLES, PRELOADED_EXAMPLES, sandbox_import_warning
from executor.sandbox import SandboxUsers
from executor.sharedwork import Ended, Lendable
from executor.worker import Worker
from spool import db, jobs
from spool.errors import DatabaseError
from spool.jobs import ClaimedJob
from spool.layout import Spool
from spool.version import __version__

__all__ = [
    "NOT_PRELOADED_EXAMPLES",
    "PRELOADED_EXAMPLES",
    "Executor",
    "ExecutorConfig",
    "sandbox_import_warning",
]

log = logging.getLogger(__name__)


class Executor(Worker):
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
        self._active: dict[str, tuple[ClaimedJob, Future[FoldDone] | None]] = {}
        self._active_lock = threading.Lock()
        self._lendable: dict[str, Lendable] = {}  # shared children running (same lock)
        self._unsent: dict[str, ClaimedJob] = {}  # ended, completion not sent yet (same lock)
        self._wake = threading.Condition()
        self._generation = 0
        self._stopping = threading.Event()
        self._handing_back: set[str] = set()
        self._orphans: set[tuple[int, int]] = set()
        self._known: dict[int, dict[str, Any]] = {}  # submission id -> what folds need
        self._short: OrderedDict[int, bool] = OrderedDict()  # were its folds here short?
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
        self.config = preflight.with_isolation(self.config)
        if os.geteuid() == 0:
            preflight.check_scratch(self.config)
            if self._users is None:
                self._users = SandboxUsers(self.config.workers)
                log.info("folds run as %s", ", ".join(self._users.lease()))
                self.zygote.pass_fds = self._users.fds
            # with namespaces, folds see the Python prefixes through their own root
            isolated = self.config.isolation is not None and self.config.isolation.namespaces
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
                workers=self.config.workers, version=__version__,
                limits=self.config.limits().to_dict(),
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
            claimed = jobs.claim(conn, self.id, list(self.config.queues), self.config.workers,
                                 self._known, sharing=self.sharing())  # fmt: skip
        ended: list[list[Ended]] = []
        threads = [threading.Thread(target=lambda run: ended.append(self.execute(run)),
                                    args=(run,)) for run in self.runs(claimed)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._settle([e for each in ended for e in each], [], 0)
        return len(claimed)

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
        executor = self.id
        if executor is not None:
            self._with_db(lambda conn: jobs.stopping(conn, executor))
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
            held = list(self._unsent.values())
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
        running_here |= {(job.id, job.attempt) for job in held}  # its completion on the way
        orphans = ours - running_here
        for job_id, attempt in orphans & self._orphans:
            with self.pool.connection() as conn:
                state = jobs.hand_back_orphan(conn, job_id, attempt, self.id)
            if state:
                log.warning("job %s attempt %s was running in the database but not here: "
                            "now %s", job_id, attempt, state)  # fmt: skip
        self._orphans = orphans
