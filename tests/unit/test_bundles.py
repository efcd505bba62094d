"""Bundles on disk: names, hashing, freezing."""

from __future__ import annotations

import io
import tarfile

import pytest

from spool.bundles import (
    Limits,
    archive_kind,
    content_hash,
    copy_folder,
    extract,
    freeze,
    remove,
    stem,
)
from spool.errors import BundleError


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


def test_what_is_stored_is_the_checked_copy_without_litter(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "pkg").mkdir(parents=True)
        (root / "pkg" / "m.py").write_text("x = 1")
    (b / ".ready").touch()
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "m.pyc").write_bytes(b"junk")
    limits = Limits(max_bytes=10_000)
    copy_a = copy_folder(a, tmp_path / "ca", limits)
    copy_b = copy_folder(b, tmp_path / "cb", limits)
    assert sorted(p.name for p in copy_b.rglob("*")) == ["m.py", "pkg"]
    assert content_hash(copy_a) == content_hash(copy_b)
    (b / "pkg" / "m.py").write_text("x = 2")
    assert content_hash(copy_a) != content_hash(copy_folder(b, tmp_path / "cb2", limits))
    (b / "pkg" / "m.py").write_text("x = 1")
    (b / "pkg" / "m.py").rename(b / "pkg" / "n.py")
    assert content_hash(copy_a) != content_hash(copy_folder(b, tmp_path / "cb3", limits))


def test_a_very_deep_tree_is_refused_and_removed_without_recursion(tmp_path):
    deep = tmp_path / "deep"
    path = deep
    for _ in range(100):
        path = path / "d"
    path.mkdir(parents=True)
    with pytest.raises(BundleError, match="nested more than"):
        copy_folder(deep, tmp_path / "copy", Limits(max_bytes=10_000, max_files=100_000))
    remove(deep)
    assert not deep.exists()


def test_litter_of_an_unknown_type_counts_its_data_before_it_is_skipped(tmp_path):
    # tarfile skips such a member's data by reading through it: 64 MB of zeros, 64 KB
    # compressed, behind a name that is left out, must not be unpacked for nothing
    archive = tmp_path / "sub.tar.gz"
    size = 64 << 20
    with tarfile.open(archive, "w:gz") as tf:
        member = tarfile.TarInfo("__MACOSX/x")
        member.type, member.size = b"Q", size
        tf.addfile(member, io.BytesIO(bytes(size)))
        tf.addfile(tarfile.TarInfo("classifier.py"), io.BytesIO(b""))
    with pytest.raises(BundleError, match="larger than"):
        extract(archive, tmp_path / "out", Limits(max_bytes=1 << 20))
