"""A dropped folder copied into a folder datarun owns, checked on the way in.

A folder is never read in place: it is copied, by our own code, into a fresh folder;
what is checked, hashed and stored is that copy, so the dropper cannot change it
afterwards. Links (of any kind), devices, FIFOs, sockets, hard links and other
filesystems mounted inside are refused; names too long or too deep too; sizes and
counts are capped on the bytes actually written (`spool.droprules`).

The dropper may keep its folder open and change it while we work (swap a sub-folder for
a link to a folder only root may read, for instance), so a dropped tree is never reached
by a path: each folder is opened relative to its parent's descriptor without following
links, and each entry's type is checked on what was opened.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from spool.droprules import (
    JUNK,
    MAX_DEPTH,
    MAX_PATH_BYTES,
    NEW_FILE,
    OPEN_DIR,
    OPEN_FILE,
    Budget,
    Limits,
    no_link,
    shown,
)
from spool.errors import BundleError


class _Folder:
    """A folder being copied: its descriptor, our copy's, and the entries left to see."""

    def __init__(self, src: int, dst: int, rel: str) -> None:
        self.src, self.dst, self.rel = src, dst, rel
        try:
            self.entries = os.scandir(src)  # reads through its own duplicate of src
        except BaseException:
            os.close(src)
            os.close(dst)
            raise

    def close(self) -> None:
        self.entries.close()
        os.close(self.src)
        os.close(self.dst)


def copy_folder(source: Path, dest: Path, limits: Limits) -> Path:
    """Copy a dropped folder into `dest` (created), refusing links and special files.

    The dropper may change the folder while we copy: every folder and file is opened
    relative to its parent's descriptor, links never followed, and its type is checked
    on the descriptor; what we read is therefore always inside the drop."""
    budget = Budget(limits, shown(source.name))
    top = _open_top(source, budget.where)
    device = os.fstat(top).st_dev
    try:
        dest.mkdir(parents=True)
        out = os.open(dest, OPEN_DIR)
    except BaseException:
        os.close(top)
        raise
    stack = [_Folder(top, out, "")]
    try:
        while stack:
            folder = stack[-1]
            entry = next(folder.entries, None)
            if entry is None:
                stack.pop().close()
                continue
            budget.entry()  # litter counts too: a cap it could bypass is no cap
            if entry.name in JUNK:
                continue
            rel = f"{folder.rel}/{entry.name}" if folder.rel else entry.name
            if len(os.fsencode(rel)) > MAX_PATH_BYTES:
                raise BundleError(f"{budget.where}: {shown(rel)[:80]!r} has a path too long")
            fd, st = _open_entry(folder.src, entry.name, rel, device, budget.where)
            if stat.S_ISDIR(st.st_mode):
                try:
                    if len(stack) >= MAX_DEPTH:
                        raise BundleError(
                            f"{budget.where}: nested more than {MAX_DEPTH} folders deep"
                        )
                    try:
                        os.mkdir(entry.name, 0o755, dir_fd=folder.dst)
                    except FileExistsError:
                        raise _changed(budget.where, rel) from None
                    dst = os.open(entry.name, OPEN_DIR, dir_fd=folder.dst)
                except BaseException:
                    os.close(fd)
                    raise
                stack.append(_Folder(fd, dst, rel))
            else:
                _copy_file(fd, folder.dst, entry.name, rel, budget)
    finally:
        for folder in stack:
            folder.close()
    return dest


def _open_top(source: Path, where: str) -> int:
    """The dropped folder itself, opened without following a link (its parent is ours)."""
    parent = os.open(source.parent, OPEN_DIR)
    try:
        return os.open(source.name, OPEN_DIR, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise BundleError(f"{where}: not a folder (a link?); drop the folder itself") from None
        raise BundleError(f"{where}: cannot be read: {exc.strerror}") from None
    finally:
        os.close(parent)


def _open_entry(
    parent: int, name: str, rel: str, device: int, where: str
) -> tuple[int, os.stat_result]:
    """Open a folder or regular file in `parent`, never through a link, and return it
    with its status as opened. Anything else is refused without being opened."""
    try:
        seen = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        raise _changed(where, rel) from None
    if stat.S_ISLNK(seen.st_mode):
        raise no_link(where, rel)
    if not (stat.S_ISDIR(seen.st_mode) or stat.S_ISREG(seen.st_mode)):
        raise BundleError(f"{where}: {shown(rel)!r} is a device, FIFO or socket, not a file")
    try:
        fd = os.open(name, OPEN_DIR if stat.S_ISDIR(seen.st_mode) else OPEN_FILE, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise _changed(where, rel) from None  # swapped since we looked
        raise BundleError(f"{where}: {shown(rel)!r} cannot be read: {exc.strerror}") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode)) != (
        seen.st_dev, seen.st_ino, stat.S_IFMT(seen.st_mode)
    ):  # fmt: skip
        os.close(fd)
        raise _changed(where, rel)
    if st.st_dev != device:
        os.close(fd)
        raise BundleError(
            f"{where}: {shown(rel)!r} is another filesystem mounted in the folder; "
            "bundles are plain folders"
        )
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:  # it may be a file we must not read
        os.close(fd)
        raise BundleError(f"{where}: {shown(rel)!r} is a hard link; copy the file instead")
    return fd, st


def _copy_file(fd: int, dst: int, name: str, rel: str, budget: Budget) -> None:
    with os.fdopen(fd, "rb") as src:
        try:
            out = os.open(name, NEW_FILE, 0o644, dir_fd=dst)
        except FileExistsError:
            raise _changed(budget.where, rel) from None
        budget.pour(src, out)


def _changed(where: str, rel: str) -> BundleError:
    return BundleError(
        f"{where}: {shown(rel)!r} changed while being copied; drop the folder once it is "
        "complete, and leave it alone until it is answered"
    )
