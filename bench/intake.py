"""Drop-to-registration latency of the watcher (issue 3).

For each of N drops: rename a submission folder into incoming/submissions/<dataset>/,
then wait for the NOTIFY its registration transaction sends at commit. Reports p50 and
p99 per mode. Baseline, in the same run: the time watchdog alone takes to report the
same kind of rename (what any inotify-based watcher pays before doing any work).
Targets: inotify p50 <= 20 ms and p99 <= 100 ms; poll p99 <= poll interval + 100 ms.
Mode `challenge` (as root): inotify again, with a team registered and each drop owned
by its member's uid, under a daily quota: the identity, quota and sharing checks of a
challenge are all paid (issue 17), against the same targets.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import threading
import time
from pathlib import Path

import psycopg
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from bench.common import Bed, ms, percentile, settle, testbed, write_dataset, write_submission
from spool import db, rules, teams
from watcher import sharing
from watcher.daemon import Watcher, WatcherConfig

MEMBER = 61003  # the challenge mode's participant: a uid with no login


def watchdog_floor(where: Path, n: int) -> list[float]:
    """Rename-to-callback time of a bare watchdog observer."""
    seen: queue.Queue[float] = queue.Queue()

    class Handler(FileSystemEventHandler):
        def on_moved(self, event: FileSystemEvent) -> None:
            seen.put(time.perf_counter())

    target = where / "floor"
    target.mkdir()
    observer = InotifyObserver(generate_full_events=True)
    observer.schedule(Handler(), str(target), recursive=True)
    observer.start()
    latencies = []
    try:
        for i in range(n):
            source = write_submission(where / "floor-src", f"f{i}", i)
            start = time.perf_counter()
            source.rename(target / source.name)
            latencies.append(seen.get(timeout=10) - start)
    finally:
        observer.stop()
        observer.join()
    return latencies


def as_participant(bed: Bed, sources: list[Path]) -> None:
    """A team whose member owns every drop; the spool shared as in a challenge."""
    with db.connect(bed.url) as conn:
        teams.add(conn, "bench", [teams.User(MEMBER, str(MEMBER))])
        sharing.reshare(bed.spool, conn)
    for source in sources:
        for path in [source, *source.rglob("*")]:
            os.chown(path, MEMBER, MEMBER, follow_symlinks=False)


def measure(bed: Bed, n: int, poll: bool, poll_seconds: float,
            challenge: bool = False) -> list[float]:  # fmt: skip
    config = WatcherConfig(settle_seconds=2.0, rescan_seconds=60.0, poll_seconds=poll_seconds,
                           poll=poll)  # fmt: skip
    watcher = Watcher(bed.spool, bed.url, config)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    listener = psycopg.connect(bed.url, autocommit=True)
    listener.execute("LISTEN datarun_events")
    dataset = f"ds{'poll' if poll else 'challenge' if challenge else 'inotify'}"
    sources = [settle(write_submission(bed.spool.root / "src" / dataset, f"s{i}", i))
               for i in range(n)]  # fmt: skip
    if challenge:
        as_participant(bed, sources)
    thread.start()
    try:
        settle(write_dataset(bed.spool.root / "src-ds", dataset)).rename(
            bed.spool.incoming_datasets / dataset
        )
        _wait_kind(listener, "dataset.registered", 120)
        into = bed.spool.incoming_submissions / dataset
        while not into.is_dir():  # the watcher makes it right after the commit
            time.sleep(0.01)
        if challenge:  # a quota to count against at every drop, never reached
            with db.connect(bed.url) as conn:
                rules.change(conn, dataset, [f"submissions_per_day={10 * n}"], "bench")
        latencies = []
        for source in sources:
            if poll:  # drops arrive at random moments, not in step with the scans
                time.sleep(random.uniform(0, poll_seconds))
            start = time.perf_counter()
            source.rename(into / source.name)
            _wait_kind(listener, "submission.registered", 30)
            latencies.append(time.perf_counter() - start)
    finally:
        stop.set()
        thread.join()
        listener.close()
    return latencies


def _wait_kind(conn: psycopg.Connection[tuple[object, ...]], kind: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in conn.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1):
            if json.loads(note.payload)["kind"] == kind:
                return
    raise TimeoutError(f"no {kind} within {timeout} s")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench intake", description=__doc__)
    parser.add_argument("--drops", type=int, default=200)
    parser.add_argument("--modes", default="inotify,poll,challenge")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    with testbed() as bed:
        floor = watchdog_floor(bed.spool.root, args.drops)
        figures["floor_p50"] = percentile(floor, 50)
        print(f"baseline  watchdog rename->event   p50 {ms(figures['floor_p50'])}"
              f"  p99 {ms(percentile(floor, 99))}")  # fmt: skip
        for mode in args.modes.split(","):
            if mode == "challenge" and os.geteuid() != 0:
                print("datarun   challenge: skipped (drops owned by another user need root)")
                continue
            lat = measure(bed, args.drops, mode == "poll", args.poll_seconds,
                          challenge=mode == "challenge")  # fmt: skip
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            figures[f"{mode}_p50"], figures[f"{mode}_p99"] = p50, p99
            if mode == "poll":
                target = f"p99 <= {ms(args.poll_seconds + 0.1)}"
                ok = p99 <= args.poll_seconds + 0.1
            else:
                target, ok = "p50 <= 20 ms, p99 <= 100 ms", p50 <= 0.020 and p99 <= 0.100
            print(f"datarun   {mode:8s} rename->registered p50 {ms(p50)}  p99 {ms(p99)}  "
                  f"max {ms(max(lat))}  ({len(lat)} drops)  p50 ratio to baseline "
                  f"{p50 / figures['floor_p50']:.1f}x  target {target}: "
                  f"{'met' if ok else 'MISSED'}")  # fmt: skip
    return figures


if __name__ == "__main__":
    main()
