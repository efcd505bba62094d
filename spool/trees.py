"""Whole trees changed through descriptors, links never followed: a stored bundle made
read-only (`freeze`) or the master's only (`private`), given to a user (`own`), or
removed however deep or read-only (`remove`).

These trees may be a dropper's or a fold's, who can still change them while we work:
every folder is opened relative to its parent's descriptor without following links, and
the walk climbs back checking it lands where it came from, so nothing outside the tree
is ever touched, and no path below the tree is used (a tree deeper than PATH_MAX is
handled too).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from spool.droprules import OPEN_DIR, OPEN_FILE, shown


def freeze(top: Path) -> None:
    """Make a stored bundle read-only for everyone (executable files stay executable)."""
    _chmod_tree(top, lambda mode: 0o555 if mode & stat.S_IXUSR else 0o444, 0o555)


def private(path: Path) -> None:
    """Make a frozen file or tree readable by its owner only (the master): what folds,
    which run as other users, must not read (a dataset's raw files, its test labels)."""
    if path.is_symlink() or not path.exists():
        return
    if not path.is_dir():
        os.chmod(path, 0o400)
        return
    _chmod_tree(path, lambda mode: 0o400, 0o500)


def _chmod_tree(top: Path, file_mode: Callable[[int], int], folder_mode: int) -> None:
    """Files first, then each folder as it is left (so the walk could still enter it),
    all on opened descriptors: links are left alone, never followed."""

    def entry(fd: int, name: str, is_file: bool) -> None:
        if is_file:
            _fchmod_at(fd, name, file_mode)

    _each_entry(top, entry, lambda fd: os.fchmod(fd, folder_mode), "its modes were set")


def own(top: Path, uid: int, gid: int) -> None:
    """Give the tree at `top` to uid:gid, links themselves included, through opened
    descriptors (`fchownat` without following): nothing a link names changes hands."""

    def entry(fd: int, name: str, _is_file: bool) -> None:
        os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)

    _each_entry(top, entry, lambda fd: os.fchown(fd, uid, gid), "it changed hands")


def _each_entry(
    top: Path, entry: Callable[[int, str, bool], None], folder: Callable[[int], None],
    doing: str,
) -> None:  # fmt: skip
    """`entry(folder_fd, name, is_regular_file)` for every entry but sub-folders, then
    `folder(fd)` for each folder as it is left, `top` last (`_walk`: no link followed)."""

    def enter(fd: int) -> list[str]:
        folders = []
        with os.scandir(fd) as entries:
            for found in entries:
                if found.is_dir(follow_symlinks=False):
                    folders.append(found.name)
                else:
                    entry(fd, found.name, found.is_file(follow_symlinks=False))
        return folders

    root = os.open(top, OPEN_DIR)
    try:
        if not _walk(root, enter, lambda fd, _parent, _name: folder(fd)):
            raise OSError(errno.EBUSY, f"{top} changed while {doing}")
        folder(root)
    finally:
        os.close(root)


def _fchmod_at(folder: int, name: str, file_mode: Callable[[int], int]) -> None:
    """chmod the regular file `name` of `folder` through a descriptor (never a link)."""
    try:
        fd = os.open(name, OPEN_FILE, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return  # gone, or not a regular file after all: not ours to change
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            os.fchmod(fd, file_mode(st.st_mode))
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """Remove a file, link or folder tree, however deep or read-only (no recursion).

    The tree may be a dropper's (or a fold's), who can still change it while we remove
    it: every folder is opened relative to its parent's descriptor without following
    links and made writable through that descriptor, so a folder swapped for a link
    loses the link, never the files it points to; no path below `path` is ever used,
    so a tree deeper than PATH_MAX goes too; and at most a few descriptors are open."""
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        _remove_at(parent, path.name)
    finally:
        os.close(parent)


_REMOVE_TRIES = 5  # a tree changed this often while we remove it is left for next time


def _remove_at(parent: int, name: str) -> None:
    def leave(_fd: int, up: int, child: str) -> None:
        try:
            os.rmdir(child, dir_fd=up)
        except OSError as exc:  # refilled: the next pass sees to it; gone or swapped: done
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
                raise

    for _ in range(_REMOVE_TRIES):
        top = _open_folder(parent, name, unlink=True)
        if top is None:
            return  # gone, or not a folder (unlinked, not followed)
        try:
            done = _walk(top, _unlink_files, leave)
        finally:
            os.close(top)
        if done:
            try:
                os.rmdir(name, dir_fd=parent)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
    raise OSError(errno.EBUSY, f"{shown(name)!r} keeps changing while it is removed")


def _walk(
    top: int, enter: Callable[[int], list[str]], leave: Callable[[int, int, str], None]
) -> bool:
    """Visit the tree below the folder `top` depth first, without recursion and with two
    descriptors at most besides `top`: `enter(fd)` when a folder is reached (it returns
    the names of its sub-folders), `leave(fd, parent, name)` once they are all visited.
    Each sub-folder is opened relative to its parent without following links (made
    readable if it is not); the walk climbs back with "..", checking that it lands in
    the very folder it came from. False when it did not (the tree was moved under us):
    the walk stops there, having touched nothing outside `top` that it was not in."""
    fd = os.dup(top)
    seen = os.fstat(fd)
    names: list[str] = []  # the way down from top to fd
    ids: list[tuple[int, int]] = [(seen.st_dev, seen.st_ino)]  # each folder on that way
    pending = [enter(fd)]  # per folder on the way, its sub-folders not yet visited
    try:
        while True:
            if pending[-1]:
                name = pending[-1].pop()
                child = _open_folder(fd, name, unlink=False)
                if child is None:
                    continue  # gone, or no longer a folder
                os.close(fd)
                fd = child
                seen = os.fstat(fd)
                names.append(name)
                ids.append((seen.st_dev, seen.st_ino))
                pending.append(enter(fd))
                continue
            pending.pop()
            if not names:
                return True
            up = os.open("..", OPEN_DIR, dir_fd=fd)
            seen = os.fstat(up)
            ids.pop()
            if (seen.st_dev, seen.st_ino) != ids[-1]:
                os.close(up)
                return False  # moved elsewhere: its ".." is not ours
            try:
                leave(fd, up, names.pop())
            finally:
                os.close(fd)
                fd = up
    finally:
        os.close(fd)


def _open_folder(parent: int, name: str, *, unlink: bool) -> int | None:
    """The folder `name` of `parent`, opened without following a link and made ours to
    read and empty (through what was opened, never by name); None when it is gone or
    is not a folder (unlinked first when `unlink`: a link goes, never what it names)."""
    for _ in range(_REMOVE_TRIES):
        try:
            fd = os.open(name, OPEN_DIR, dir_fd=parent)
        except FileNotFoundError:
            return None
        except PermissionError:  # a folder made unreadable (datarun not root)
            readable = _made_readable(parent, name)
            if readable is None:
                continue
            fd = readable
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            if not unlink:
                return None
            try:
                os.unlink(name, dir_fd=parent)  # a file, a link, anything else
                return None
            except FileNotFoundError:
                return None
            except IsADirectoryError:
                continue  # swapped back to a folder meanwhile
        if os.fstat(fd).st_mode & 0o700 != 0o700:
            os.fchmod(fd, 0o700)  # frozen (0555) or made read-only: must be emptied
        return fd
    raise OSError(errno.EBUSY, f"{shown(name)!r} keeps changing while it is removed")


def _made_readable(parent: int, name: str) -> int | None:
    """Open an unreadable folder after making it readable, through an O_PATH descriptor
    (which needs no permission and never follows a link). None if it changed meanwhile."""
    path = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        os.chmod(f"/proc/self/fd/{path}", 0o700)  # the very folder opened, not a name
        fd = os.open(name, OPEN_DIR, dir_fd=parent)
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (
            os.fstat(path).st_dev, os.fstat(path).st_ino
        ):  # fmt: skip
            os.close(fd)
            return None
        return fd
    finally:
        os.close(path)


def _unlink_files(fd: int) -> list[str]:
    """Unlink every entry of the folder but its sub-folders; returns their names."""
    folders = []
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                folders.append(entry.name)
    return folders
