"""The watcher as a daemon: real inotify events through watchdog, in a thread."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spool import db
from tests.conftest import age, drop, staged
from tests.helpers import bundles as B
from tests.helpers.waiting import running


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError("timed out")


def count(url: str, table: str) -> int:
    with db.connect(url) as conn:
        return conn.execute(f"select count(*) as n from {table}").fetchone()["n"]


def test_drops_made_while_stopped_are_registered_at_start(
    spool, make_watcher, database_url, tmp_path
):
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    drop(B.submission(tmp_path / "s", manifest='dataset = "iris"\n'), spool.incoming_submissions)
    with running(make_watcher()):
        wait_for(lambda: count(database_url, "jobs") == 3)
    assert list(spool.incoming_submissions.glob("logreg*")) == []


def test_a_rename_is_taken_on_its_inotify_event(spool, make_watcher, database_url, tmp_path):
    watcher = make_watcher(settle_seconds=60, rescan_seconds=3600)  # only events can take it
    with running(watcher):
        wait_for(lambda: watcher._leader)
        (tmp_path / "d").mkdir()
        B.dataset(tmp_path / "d").rename(spool.incoming_datasets / "iris")
        wait_for(lambda: count(database_url, "datasets") == 1)
        B.submission(tmp_path / "s").rename(spool.incoming_submissions / "iris" / "logreg")
        took = wait_for(lambda: count(database_url, "jobs") == 3)
    assert took < 5


def test_a_folder_copied_in_place_is_taken_once_it_settles(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher(settle_seconds=1.0)
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    with running(watcher):
        wait_for(lambda: count(database_url, "datasets") == 1)
        target = spool.incoming_submissions / "iris" / "slow"
        target.mkdir()
        for i in range(6):  # a slow copy: a write every 0.3 s
            (target / f"part{i}.txt").write_text("x" * 1000)
            time.sleep(0.3)
            assert count(database_url, "submissions") == 0, "taken while still being copied"
        (target / "classifier.py").write_text(B.CLASSIFIER)
        wait_for(lambda: count(database_url, "submissions") == 1, timeout=10)


def test_a_burst_of_500_drops_is_registered_exactly_once_each(
    spool, make_watcher, database_url, tmp_path
):
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    sources = [age(B.submission(tmp_path / "burst", name=f"s{i:03d}", variant=i))
               for i in range(500)]  # fmt: skip
    into = spool.incoming_submissions / "iris"
    with running(make_watcher()):
        wait_for(into.is_dir)
        for source in sources:
            source.rename(into / source.name)
        wait_for(lambda: count(database_url, "submissions") == 500, timeout=120)
        time.sleep(1.5)  # a rescan passes: still nothing twice
    with db.connect(database_url) as conn:
        names = [r["name"] for r in conn.execute("select name from submissions").fetchall()]
        assert conn.execute("select count(*) as n from jobs").fetchone()["n"] == 1500
    assert sorted(names) == [f"s{i:03d}" for i in range(500)]
    assert list(into.iterdir()) == []
    assert list(spool.rejected.iterdir()) == []
    assert staged(spool) == []


def test_poll_mode_takes_drops_without_inotify(spool, make_watcher, database_url, tmp_path):
    watcher = make_watcher(poll=True)
    assert watcher.config.poll
    with running(watcher):
        drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
        wait_for(lambda: count(database_url, "datasets") == 1)
        drop(B.submission(tmp_path / "s"), spool.incoming_submissions / "iris")
        wait_for(lambda: count(database_url, "jobs") == 3, timeout=5)


def test_bad_drops_never_stop_the_daemon(spool, make_watcher, database_url, tmp_path):
    with running(make_watcher()):
        for i in range(5):
            (spool.incoming_submissions / f"junk{i}.zip").write_bytes(b"not a zip")
        (spool.incoming_datasets / "empty.tar.gz").write_bytes(b"")
        drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
        wait_for(lambda: count(database_url, "datasets") == 1)
        wait_for(lambda: len(list(spool.rejected.iterdir())) == 6)
    assert all((p / "REJECTED.txt").is_file() for p in spool.rejected.iterdir())


@pytest.fixture
def small_inotify_queue() -> Iterator[None]:
    """A kernel queue of 32 events (new inotify instances only), as if thousands of
    drops had arrived at once; restored afterwards."""
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    if os.geteuid() != 0 or not os.access(knob, os.W_OK):
        pytest.skip("needs root to shrink the kernel's inotify queue")
    before = knob.read_text()
    knob.write_text("32")
    try:
        yield
    finally:
        knob.write_text(before)


def test_an_overflowed_inotify_queue_is_rescanned_at_once(
    spool, make_watcher, database_url, tmp_path, small_inotify_queue
):
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    sources = [age(B.submission(tmp_path / "burst", name=f"s{i:03d}", variant=i))
               for i in range(200)]  # fmt: skip
    into = spool.incoming_submissions / "iris"
    with running(make_watcher(rescan_seconds=3600)):  # no timer to fall back on
        wait_for(into.is_dir)
        for source in sources:
            source.rename(into / source.name)
        wait_for(lambda: count(database_url, "submissions") == 200, timeout=60)
    assert list(into.iterdir()) == []
