"""The one atomic write (spool.layout.write_atomic), the stale temporaries it may leave
when a process is killed mid-write, and names escaped for answers (issue 14)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from spool.layout import (
    TEMPORARY,
    escaped,
    remove_stale_temporaries,
    write_atomic,
    write_changed,
)


def test_two_threads_writing_one_file_never_mix_and_leave_nothing(tmp_path: Path):
    target = tmp_path / "leaderboard.csv"
    contents = {"a" * 300_000, "b" * 200_000}
    errors: list[BaseException] = []
    seen: set[str] = set()
    start, stop = threading.Barrier(3), threading.Event()

    def writer(data: str) -> None:
        start.wait()
        try:
            for _ in range(200):
                write_atomic(target, data)
        except BaseException as exc:  # what the test is about: no clash of temporaries
            errors.append(exc)

    def reader() -> None:
        start.wait()
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.add(target.read_text())

    threads = [threading.Thread(target=writer, args=(c,)) for c in contents]
    watcher = threading.Thread(target=reader)
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert seen <= contents, "a reader saw a file that neither thread wrote whole"
    assert target.read_text() in contents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.csv"]


def test_its_temporaries_are_recognizable_and_a_failed_write_leaves_none(tmp_path: Path):
    target = tmp_path / "status.json"
    seen = []
    real = os.replace

    def spy(src, dst):  # a look at the temporary name as it is renamed
        seen.append(Path(src).name)
        return real(src, dst)

    os.replace = spy  # type: ignore[assignment]
    try:
        write_atomic(target, "{}\n")
    finally:
        os.replace = real
    [name] = seen
    match = TEMPORARY.match(name)
    assert match and match["name"] == "status.json" and match["pid"] == str(os.getpid())
    assert match["thread"] == str(threading.get_native_id())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").mkdir()  # a folder where the file should be: the rename fails
    with contextlib.suppress(OSError):
        write_atomic(tmp_path / "sub" / "x", "text")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x"]


def test_a_secret_is_written_private(tmp_path: Path):
    write_atomic(tmp_path / "password", "s3cret\n", mode=0o600)
    assert (tmp_path / "password").stat().st_mode & 0o777 == 0o600


def test_stale_temporaries_are_removed_young_and_own_ones_kept(tmp_path: Path):
    folder = tmp_path / "results" / "iris" / "lr.v1"
    folder.mkdir(parents=True)
    old = time.time() - 120
    stale = [folder / ".status.json.999999.123.tmp", folder / ".scores.csv.999999.tmp",
             folder / ".fold_0.log.tmp", folder.parent / ".leaderboard.html.1.2.tmp"]  # fmt: skip
    young = folder / ".status.json.999998.7.tmp"
    own = folder / f".scores.csv.{os.getpid()}.5.tmp"
    theirs = [folder / "status.json", folder / "notes.tmp", folder / ".hidden"]
    for path in [*stale, young, own, *theirs]:
        path.write_text("x")
        if path is not young:
            os.utime(path, (old, old))
    assert remove_stale_temporaries(tmp_path / "results") == (len(stale), 1)
    left = {p for p in (tmp_path / "results").rglob("*") if p.is_file()}
    assert left == {young, own, *theirs}
    assert remove_stale_temporaries(tmp_path / "results", grace=0) == (1, 0)


def test_names_are_escaped_to_one_line_that_says_what_they_are():
    assert escaped(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert escaped("two\nlines\r") == "two\\nlines\\r"
    assert escaped("tab\there") == "tab\\there"
    assert escaped("a\\xe9") == "a\\\\xe9"  # a backslash typed by the user is not a byte
    assert escaped("bell\x07 nul\x00") == "bell\\x07 nul\\x00"
    assert escaped("evil\u202etxt.py") == "evil\\u202etxt.py"  # right-to-left override
    assert escaped("para\u2029graph") == "para\\u2029graph"
    assert escaped("café ok-1_2") == "café ok-1_2"
    assert "\n" not in escaped("".join(map(chr, range(0x20))) + "\x85\u2028")


def test_an_unchanged_file_is_not_written_again(tmp_path: Path):
    target = tmp_path / "scores.csv"
    assert write_changed(target, "fold,split\n0,valid\n")
    before = os.stat(target)
    time.sleep(0.01)
    assert not write_changed(target, b"fold,split\n0,valid\n")  # the same bytes
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert write_changed(target, "fold,split\n0,valid\n1,valid\n")
    assert target.read_text() == "fold,split\n0,valid\n1,valid\n"
    assert write_changed(target, "fold,split\n")  # shorter: written, not compared as a prefix
    assert target.read_text() == "fold,split\n"


def test_a_link_in_place_of_an_unchanged_file_is_replaced_not_followed(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.write_text("same\n")
    target = tmp_path / "fold_0.log"
    target.symlink_to(elsewhere)
    assert write_changed(target, "same\n")
    assert not target.is_symlink() and target.read_text() == "same\n"
    fifo = tmp_path / "fold_1.log"
    os.mkfifo(fifo)  # opened without blocking, and not read: not a regular file
    assert write_changed(fifo, "same\n")
    assert fifo.read_text() == "same\n"
