"""The watcher daemon: notice drops, decide when each is complete, hand it to the intake.

A drop is complete when it was renamed into an intake folder (inotify's moved-to), when
it holds its marker (`.ready` inside a folder, `<archive>.ready` beside an archive), or
when it has stopped changing: its newest mtime is older than `settle_seconds`, or its
size, file count and newest mtime stood unchanged across two looks `settle_seconds`
apart. Hidden names and `*.partial` are never taken. inotify does not see writes made
by other hosts on a network mount, so the daemon also rescans on a timer and at
start-up; `poll=True` rescans only (for mounts where inotify sees nothing).
"""

from __future__ import annotations

import logging
import queue
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from spool import bundles, db
from spool.errors import DatabaseUnavailable, DatarunError
from spool.layout import Spool
from watcher.intake import Intake, IntakeConfig, Kind, NotLeader, Outcome

log = logging.getLogger(__name__)

# watchdog holds an unpaired IN_MOVED_FROM for `delay` seconds (0.5) hoping for its
# IN_MOVED_TO, and every later event waits behind it. Each drop we move out of incoming/
# is such an event, so the next drop would wait half a second. A pair arrives in one
# read(), so a short hold still pairs renames made inside the watched tree.
MOVE_PAIRING_SECONDS = 0.005


def shorten_move_pairing() -> None:
    """Set watchdog's move-pairing hold to MOVE_PAIRING_SECONDS. It is watchdog's
    internal class attribute: should a release rename it, the assignment would silently
    create a new one and every drop wait 500 ms again, so its absence is an error."""
    current = getattr(InotifyMoveEventGrouper, "delay", None)
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise DatarunError(
            "this watchdog's InotifyMoveEventGrouper has no numeric 'delay' any more, which "
            "datarun shortens so that a drop does not wait 500 ms behind the previous one; "
            "install a watchdog datarun supports (pip install 'watchdog>=4,<8'), or run "
            "`datarun master --poll`"
        )
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_SECONDS


class _Overflow(logging.Filter):
    """The kernel's inotify queue overflowed (a burst of thousands of drops): events
    were lost. watchdog only logs it, so we listen to that log line and rescan at
    once, rather than leave the lost drops to the rescan timer. Should a watchdog
    release word it otherwise, the timer still finds them."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__()
        self.watcher = watcher

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflow" in record.getMessage().lower():
            self.watcher.request_rescan()
        return True


@dataclass(frozen=True)
class WatcherConfig:
    settle_seconds: float = 2.0
    rescan_seconds: float = 10.0
    poll_seconds: float = 1.0
    poll: bool = False
    intake: IntakeConfig = field(default_factory=IntakeConfig)


def ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith((".partial", bundles.MARKER))


@dataclass(frozen=True)
class Candidate:
    path: Path
    kind: Kind
    hint: str | None


class _Events(FileSystemEventHandler):
    """Runs in watchdog's thread: only queues what it saw, the daemon decides."""

    def __init__(self, sink: queue.Queue[tuple[str, str]]) -> None:
        self.sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "moved" and event.dest_path:
            self.sink.put(("moved", str(event.dest_path)))
        elif event.event_type in ("created", "modified", "closed"):
            self.sink.put(("changed", str(event.src_path)))


class Watcher:
    def __init__(self, spool: Spool, url: str, config: WatcherConfig) -> None:
        self.spool = spool
        self.url = url
        self.config = config
        self._conn: db.Conn | None = None
        self._leader = False
        self._seen: dict[Path, tuple[tuple[int, int, int], float]] = {}
        self._events: queue.Queue[tuple[str, str]] = queue.Queue()
        self._datasets: set[str] = set()
        self._now: float | None = None  # the spool's clock (mtimes come from it, not ours)
        self._rescan = threading.Event()

    def request_rescan(self) -> None:
        """Ask the running daemon for a full reconcile at its next turn (the master's
        scheduler does, on its timer)."""
        self._rescan.set()

    # ---- database and leadership ------------------------------------------------

    def _intake(self) -> Intake | None:
        """The intake on a live connection, or None while another watcher leads."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = db.connect(self.url, application_name="datarun watcher")
            self._leader = False
        if not self._leader:
            self._leader = self._still_leader()
            if not self._leader:
                log.info("another watcher holds the lock; standing by")
                return None
        return Intake(self.spool, self._conn, self.config.intake, self._still_leader)

    def _still_leader(self) -> bool:
        """True while this session holds the watcher lock (taking it if it is free)."""
        assert self._conn is not None
        row = db.fetch_one(self._conn, "watcher_try_lock")
        return bool(row and row["locked"])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- one pass ---------------------------------------------------------------

    def run_once(self) -> list[Outcome]:
        """Reconcile: finish staged drops, take every complete drop, revisit waiting ones.

        Each drop is handled on its own: one that fails is logged and retried later, and
        never stops the others."""
        intake = self._intake()
        if intake is None:
            return []
        self._datasets = {r["name"] for r in db.fetch_all(intake.conn, "dataset_names")}
        outcomes: list[Outcome] = []
        for token in sorted(self.spool.staging.iterdir()):
            if token.name.startswith((".trash-", ".new-")):
                self._guarded(bundles.remove, token)  # a token never made, or half removed
            elif token.is_dir() and not token.name.startswith("."):
                outcomes += self._guarded(lambda t: [intake.process(t)], token) or []
        self._now = _filesystem_now(self.spool.staging)
        for candidate in list(self.candidates()):
            if self._guarded(self.ready, candidate.path):
                outcomes += self._guarded(lambda c: [self._take(intake, c)], candidate) or []
        outcomes += self._guarded(lambda _: intake.revisit_waiting(), None) or []
        return outcomes

    def _guarded(self, action: Any, item: Any) -> Any:
        """Run one step; a database outage or lost lead stops the pass, anything else is
        logged and skipped."""
        try:
            return action(item)
        except (DatabaseUnavailable, NotLeader):
            raise
        except DatarunError as exc:
            log.error("%s", exc)
        except Exception:
            log.exception("handling %s failed; it is retried at the next pass", item)
        return None

    def _take(self, intake: Intake, candidate: Candidate) -> Outcome:
        self._seen.pop(candidate.path, None)
        outcome = intake.take(candidate.path, candidate.kind, candidate.hint)
        if outcome.kind == "dataset" and outcome.result == "registered":
            self._datasets.add(outcome.detail)
            intake.revisit_waiting()
        return outcome

    def candidates(self) -> Iterator[Candidate]:
        for entry in _entries(self.spool.incoming_datasets):
            yield Candidate(entry, "dataset", None)
        for entry in _entries(self.spool.incoming_submissions):
            if not self.is_container(entry):
                yield Candidate(entry, "submission", None)
            elif self.trusted_container(entry):
                for inner in _entries(entry):
                    yield Candidate(inner, "submission", entry.name)

    def is_container(self, entry: Path) -> bool:
        """incoming/submissions/<dataset>/ holds bundles; a bundle holds files at its top.
        The folder of a registered dataset is always a container: a stray file in it is a
        drop of its own, never a reason to take the folder."""
        if entry.is_symlink() or not entry.is_dir():
            return False
        if entry.name in self._datasets:
            return True
        return not any(
            inner.is_file() and bundles.archive_kind(inner.name) is None
            for inner in _entries(entry)
        )

    def trusted_container(self, entry: Path) -> bool:
        """A folder of an unknown name is trusted as a container once it settled: until
        then it may be a bundle whose files are still being copied."""
        return entry.name in self._datasets or self.ready(entry)

    def ready(self, path: Path) -> bool:
        if (path / bundles.MARKER).is_file() or bundles.sibling_marker(path) is not None:
            return True
        sig = _signature(path)
        now, wall = time.monotonic(), self._now or time.time()
        newest = sig[2] / 1e9
        if wall - self.config.settle_seconds > newest and newest <= wall + 1:
            return True
        previous = self._seen.get(path)
        if previous and previous[0] == sig:
            return now - previous[1] >= self.config.settle_seconds
        self._seen[path] = (sig, now)
        return False

    # ---- the daemon -------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: react to inotify events, rescan on a timer, never die of
        bad input, and back off while the database is away."""
        try:  # a spool made before staging was kept private
            self.spool.staging.chmod(0o700)
        except OSError as exc:
            log.warning("cannot make %s private: %s", self.spool.staging, exc)
        observer = None
        overflow = _Overflow(self)
        inotify_log = logging.getLogger("watchdog.observers.inotify_c")
        if not self.config.poll:
            inotify_log.addFilter(overflow)
            if not inotify_log.isEnabledFor(logging.WARNING):
                inotify_log.setLevel(logging.WARNING)  # else no record reaches the filter
            shorten_move_pairing()
            observer = InotifyObserver(generate_full_events=True)
            observer.schedule(_Events(self._events), str(self.spool.root / "incoming"),
                              recursive=True)  # fmt: skip
            observer.start()
        interval = self.config.poll_seconds if self.config.poll else self.config.rescan_seconds
        backoff, next_scan = 0.5, 0.0
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_scan or self._rescan.is_set():
                        self._rescan.clear()
                        self.run_once()
                        next_scan = time.monotonic() + interval
                    self._react(stop, timeout=max(0.0, min(next_scan - time.monotonic(), 0.5)))
                    backoff = 0.5
                except DatabaseUnavailable as exc:
                    log.warning("%s; retrying in %.1f s", exc, backoff)
                    self.close()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                except NotLeader:
                    log.warning("another watcher took the lead; standing by")
                    self._leader = False
                    stop.wait(1.0)
                except Exception:
                    log.exception("watcher pass failed; continuing")
                    stop.wait(1.0)
        finally:
            inotify_log.removeFilter(overflow)
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            self.close()

    def _react(self, stop: threading.Event, timeout: float) -> None:
        """Wait for events; take renamed-in drops at once, settle the others."""
        try:
            first = self._events.get(timeout=timeout)
        except queue.Empty:
            self._settle()
            return
        batch = [first]
        while True:
            try:
                batch.append(self._events.get_nowait())
            except queue.Empty:
                break
        intake = self._intake()
        if intake is None:
            return
        for what, raw in batch:
            if stop.is_set():
                return
            candidate = self._candidate_of(Path(raw))
            if candidate is None:
                continue
            if what == "moved" and candidate.path == Path(raw) and candidate.path.exists():
                self._guarded(lambda c: self._take(intake, c), candidate)
            else:
                self._seen.setdefault(candidate.path, ((-1, -1, -1), time.monotonic()))
        self._settle()

    def _settle(self) -> None:
        """Look again at drops that changed: take those that stopped changing."""
        for path in [p for p in self._seen if not p.exists() and not p.is_symlink()]:
            del self._seen[path]
        if not self._seen:
            return
        intake = self._intake()
        if intake is None:
            return
        self._now = _filesystem_now(self.spool.staging)
        for candidate in list(self.candidates()):
            changed = candidate.path in self._seen or candidate.path.parent in self._seen
            if changed and self._guarded(self.ready, candidate.path):
                self._guarded(lambda c: self._take(intake, c), candidate)

    def _candidate_of(self, path: Path) -> Candidate | None:
        """The drop a changed path belongs to (its top folder under an intake folder)."""
        for base, kind in ((self.spool.incoming_datasets, "dataset"),
                           (self.spool.incoming_submissions, "submission")):  # fmt: skip
            try:
                parts = path.relative_to(base).parts
            except ValueError:
                continue
            if not parts or ignored(parts[0]):
                return None
            top = base / parts[0]
            if kind == "submission" and self.is_container(top):
                if len(parts) < 2 or ignored(parts[1]) or not self.trusted_container(top):
                    return None  # the top folder itself is watched (ready() noted it)
                return Candidate(top / parts[1], "submission", parts[0])
            return Candidate(top, kind, None)  # type: ignore[arg-type]
        return None


def _filesystem_now(folder: Path) -> float | None:
    """The spool's own clock: on a network mount mtimes are the server's, not ours."""
    probe = folder / ".clock"
    try:
        probe.touch()
        return probe.stat().st_mtime
    except OSError:
        return None


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(e for e in folder.iterdir() if not ignored(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _signature(path: Path) -> tuple[int, int, int]:
    """(entries, bytes, newest mtime in ns) of a file or a whole folder, links not followed;
    no deeper than a bundle may be (a deeper one is refused when taken anyway)."""
    count = size = newest = 0
    stack = [(path, 0)]
    while stack:
        current, depth = stack.pop()
        try:
            st = current.lstat()
        except OSError:
            continue
        count += 1
        size += st.st_size
        newest = max(newest, st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode) and depth <= bundles.MAX_DEPTH:
            try:
                stack.extend((child, depth + 1) for child in current.iterdir())
            except OSError:
                continue
    return count, size, newest
