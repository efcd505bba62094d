"""The master's scheduled passes under load: a pass that outlasts its interval runs
again once it ends, and the log says nothing of the runs it skipped meanwhile."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from watcher.master import Master, MasterConfig


def test_a_pass_longer_than_its_interval_is_not_a_warning_each_second(
    spool, database_url, make_watcher, monkeypatch, caplog
):
    master = Master(spool, database_url, make_watcher(), MasterConfig(sweep_seconds=0.1))
    passes: list[float] = []

    def slow_sweep() -> None:  # a sweep of a busy night: 1 s, ten intervals
        passes.append(time.monotonic())
        time.sleep(1.0)

    monkeypatch.setattr(master.sweeper, "sweep_once", slow_sweep)
    stop = threading.Event()
    runner = threading.Thread(target=master.run, args=(stop,))
    with caplog.at_level(logging.DEBUG):
        runner.start()
        try:
            deadline = time.monotonic() + 30
            while len(passes) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            runner.join(timeout=30)
    assert len(passes) >= 3, "the sweep did not run again after a long pass"
    assert passes[2] - passes[1] == pytest.approx(1.0, abs=0.5)  # at once, not a backlog
    skipped = [r.getMessage() for r in caplog.records if "running instances" in r.getMessage()]
    assert not skipped, skipped
