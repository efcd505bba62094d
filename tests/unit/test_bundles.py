"""Bundles on disk: names, hashing, freezing."""

from __future__ import annotations

from spool.bundles import archive_kind, content_hash, freeze, remove, stem


def test_a_frozen_bundle_is_read_only_and_still_removable_by_datarun(tmp_path):
    (tmp_path / "b" / "sub").mkdir(parents=True)
    (tmp_path / "b" / "sub" / "f.py").write_text("x")
    freeze(tmp_path / "b")
    assert (tmp_path / "b" / "sub").stat().st_mode & 0o777 == 0o555
    remove(tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_names_and_kinds():
    assert stem("sub.tar.gz") == "sub" and stem("Sub.ZIP") == "Sub" and stem("plain") == "plain"
    assert archive_kind("a.tgz") == "tar" and archive_kind("a.zip") == "zip"
    assert archive_kind("a.rar") is None


def test_content_hash_ignores_the_marker_and_junk_but_not_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "pkg").mkdir(parents=True)
        (root / "pkg" / "m.py").write_text("x = 1")
    (b / ".ready").touch()
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "m.pyc").write_bytes(b"junk")
    assert content_hash(a) == content_hash(b)
    (b / "pkg" / "m.py").write_text("x = 2")
    assert content_hash(a) != content_hash(b)
    (b / "pkg" / "m.py").write_text("x = 1")
    (b / "pkg" / "m.py").rename(b / "pkg" / "n.py")
    assert content_hash(a) != content_hash(b)
