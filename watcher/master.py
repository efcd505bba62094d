"""`datarun master`: the watcher, and the sweeper's jobs on one APScheduler scheduler.

Jobs (each `max_instances=1`, missed runs coalesced): sweep (score predictions),
results (refresh the files of submissions that changed), reap (give back the jobs of
silent executors) and rescan (the watcher's reconcile). Two masters started by
mistake do not race: the sweeper's jobs run only in the one holding the sweeper's
advisory lock, the watcher only in the one holding the watcher's. A master that gains
the sweeper's lock first repairs what a killed one may have left half written in
results/ (`Results.recover`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from spool import db, linux
from spool.errors import DatabaseUnavailable, DatarunError
from spool.layout import Spool
from watcher.daemon import Watcher
from watcher.results import Results
from watcher.sweeper import Sweeper, reap_once

log = logging.getLogger(__name__)


class _PassStillRunning(logging.Filter):
    """Under load a pass outlasts its interval; APScheduler would then warn, once a
    second, that it skipped the next run. That is the design (`max_instances=1`), not
    a fault: an admin's log should not fill with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in str(record.msg)


scheduler_log = logging.getLogger(f"{__name__}.scheduler")
scheduler_log.addFilter(_PassStillRunning())

# The master's threads (watcher, observer, scheduler, jobs, the pool's) share one malloc
# arena: they wait on files and the database, not on malloc, and a run of 10,000
# submissions left 60 MB in a dozen fragmented per-thread ones (bench memory).
MALLOC_ARENAS = 1


@dataclass(frozen=True)
class MasterConfig:
    sweep_seconds: float = 1.0
    results_seconds: float = 1.0
    reap_seconds: float = 15.0
    rescan_seconds: float = 10.0
    lease_seconds: float = 30.0


class Leadership:
    """Holds `pg_try_advisory_lock` for one role on its own connection."""

    def __init__(self, url: str, query: str) -> None:
        self.url = url
        self.query = query
        self._conn: db.Conn | None = None
        self._lock = threading.Lock()
        self._held = False
        self.term = 0  # counts the times the lock was gained: a new term, a new start

    def held(self) -> bool:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = db.connect(self.url, application_name="datarun sweeper")
                row = db.fetch_one(self._conn, self.query)
                locked = bool(row and row["locked"])
            except DatabaseUnavailable:
                self._conn = None
                locked = False
            if locked and not self._held:
                self.term += 1
            self._held = locked
            return locked

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class Master:
    def __init__(self, spool: Spool, url: str, watcher: Watcher, config: MasterConfig) -> None:
        self.spool = spool
        self.url = url
        self.watcher = watcher
        self.config = config
        self.database = db.Database(url, min_size=1, max_size=4, name="datarun sweeper")
        self.sweeper = Sweeper(spool, self.database)
        self.results = Results(spool, self.database, self.sweeper)
        self.leadership = Leadership(url, "sweeper_try_lock")
        self._recovered_term = 0  # the term whose start the results were recovered at

    def _refresh_results(self) -> int:
        """The results job: at the start of each term (this master's first lead, or the
        lead regained after losing it, when another master may have written meanwhile
        and been killed), recover first."""
        term = self.leadership.term
        if term != self._recovered_term:
            self.results.recover()
            self._recovered_term = term
        try:
            return self.results.refresh_once()
        finally:
            linux.malloc_trim()  # a pass over many submissions frees megabytes at once

    def _job(self, name: str, action: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            if not self.leadership.held():
                return
            try:
                action()
            except DatabaseUnavailable as exc:
                log.warning("%s: %s", name, exc)
            except DatarunError as exc:
                log.error("%s: %s", name, exc)
            except Exception:
                log.exception("%s failed; it runs again at its next interval", name)

        return run

    def scheduler(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            logger=scheduler_log,
        )
        jobs: list[tuple[str, Callable[[], object], float]] = [
            ("sweep", self.sweeper.sweep_once, self.config.sweep_seconds),
            ("results", self._refresh_results, self.config.results_seconds),
            ("reap", lambda: reap_once(self.database, self.config.lease_seconds),
             self.config.reap_seconds),
            ("rescan", self.watcher.request_rescan, self.config.rescan_seconds),
        ]  # fmt: skip
        for name, action, seconds in jobs:
            scheduler.add_job(self._job(name, action), "interval", seconds=seconds, id=name,
                              name=name, next_run_time=datetime.now())  # fmt: skip
        return scheduler

    def run(self, stop: threading.Event) -> None:
        """The watcher in this thread, the scheduler's jobs in its own; until `stop`."""
        linux.malloc_arenas(MALLOC_ARENAS)  # before its threads start
        self.database.open()
        scheduler = self.scheduler()
        scheduler.start()
        try:
            self.watcher.run(stop)
        finally:
            scheduler.shutdown(wait=True)
            self.sweeper.close()
            self.leadership.close()
            self.database.close()
