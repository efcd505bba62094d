"""`<drop>.ready` beside a drop says it is complete only when its owner made it: in a
shared inbox another team may create that name, as a file to have a drop taken while
it is still being copied, or as a folder to block it. A name too long to have a marker
is answered like any other bad name, never left waiting; so is a drop named like the
notes of an answer, which holds the drop beside them."""

from __future__ import annotations

import os

import pytest

from spool.bundles import MARKER
from tests.conftest import age, drop, staged
from tests.helpers import bundles as B

root = pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user")
pytestmark = [pytest.mark.chaos, root]
OTHER = 65534  # nobody: another team


def test_another_users_marker_neither_hurries_nor_blocks_a_drop(spool, make_watcher, tmp_path):
    watcher = make_watcher(settle_seconds=3600)  # without a marker, nothing settles here
    drop(age(B.dataset(tmp_path / "d"), 7200), spool.incoming_datasets, settled=False)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    inbox = spool.incoming_submissions / "iris"
    copying = B.submission(tmp_path / "s", name="copying")  # still being copied: no marker
    drop(copying, inbox, settled=False)
    (inbox / f"copying{MARKER}").touch()
    os.chown(inbox / f"copying{MARKER}", OTHER, OTHER)
    blocked = B.submission(tmp_path / "s", name="blocked", variant=1)
    (blocked / MARKER).touch()  # complete, as its owner says inside
    (inbox / f"blocked{MARKER}").mkdir()
    os.chown(inbox / f"blocked{MARKER}", OTHER, OTHER)
    drop(blocked, inbox)
    mine = B.submission(tmp_path / "s", name="mine", variant=2)
    drop(mine, inbox, settled=False)
    (inbox / f"mine{MARKER}").touch()  # its owner's own marker, beside it
    long_name = B.submission(tmp_path / "s", name="n" * 252, variant=3)
    (long_name / MARKER).touch()
    drop(long_name, inbox)
    outcomes = {o.name: o.result for o in watcher.run_once()}
    assert outcomes.pop("blocked") == "registered"
    assert outcomes.pop("mine") == "registered"
    assert outcomes.pop("n" * 252) == "rejected"
    assert outcomes == {}  # "copying" waits for its owner
    assert (inbox / "copying").is_dir() and (inbox / f"blocked{MARKER}").is_dir()
    assert (inbox / f"copying{MARKER}").exists()  # not ours to remove
    assert not (inbox / f"mine{MARKER}").exists()
    age(inbox / "copying", 7200)
    assert [(o.name, o.result) for o in watcher.run_once()] == [("copying", "registered")]


def test_a_drop_named_like_an_answers_note_is_answered_with_both(spool, make_watcher, tmp_path):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    inbox = spool.incoming_submissions / "iris"
    folder = B.submission(tmp_path / "s", name="x")
    drop(folder.rename(folder.with_name("REJECTED.txt")), inbox)  # a folder
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "WAITING.txt").write_text("not datarun's note\n")
    drop(tmp_path / "file" / "WAITING.txt", inbox)  # a file
    outcomes = watcher.run_once()
    assert sorted(o.result for o in outcomes) == ["rejected", "rejected"], outcomes
    assert not staged(spool)
    answers = sorted(spool.rejected.iterdir())
    assert sorted(n for a in answers for n in os.listdir(a) if n.endswith("-drop")) == [
        "REJECTED.txt-drop", "WAITING.txt-drop"]  # fmt: skip
    for answer in answers:  # the drop, beside datarun's own note
        assert "not datarun's note" not in (answer / "REJECTED.txt").read_text()
