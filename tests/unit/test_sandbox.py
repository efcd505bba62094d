"""What the executor tells an admin about its sandbox."""

from __future__ import annotations


def test_the_executor_says_when_folds_cannot_import_beyond_what_it_preloads(monkeypatch):
    from pathlib import Path

    from executor import preflight

    monkeypatch.setattr(preflight, "blocking_ancestor", lambda path: Path("/root"))
    warning = preflight.sandbox_import_warning()
    assert warning is not None and "cannot read /root" in warning
    monkeypatch.setattr(preflight, "blocking_ancestor", lambda path: None)
    assert preflight.sandbox_import_warning() is None


def test_the_address_space_an_rlimit_must_leave_room_beyond_is_measured():
    from spool import linux

    numbers = bytearray(64 * 2**20)  # mapped: counts in VmSize
    assert linux.vm_size() > len(numbers) > 0
