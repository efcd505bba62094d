"""Bundles on disk: every drop becomes a copy that datarun owns, checked on the way in.

A bundle is a folder, a `.zip` or a `.tar.gz`. Neither is read in place: a folder is
copied and an archive is unpacked, by our own code, into a fresh folder; what is
checked, hashed and stored is that copy, so the dropper cannot change it afterwards.
On the way, anything that could reach outside the bundle is refused: links (of any
kind), devices and FIFOs, absolute paths, `..`, backslashes, names too long or too
deep; sizes and counts are capped on the bytes actually written, and no header is
trusted. Editor and OS litter (`__pycache__`, `.DS_Store`, `__MACOSX`, the `.ready`
marker) is left out, so what is stored is exactly what was checked; it still counts
against the cap on entries, and so does every member of an archive, counted before
anything is unpacked. Unpacking has a wall-clock budget: a slow drop is refused rather
than hold up every drop behind it.

The dropper may keep its folder open and change it while we work (swap a sub-folder for
a link to a folder only root may read, for instance), so a dropped tree is never reached
by a path: each folder is opened relative to its parent's descriptor without following
links, and each entry's type is checked on what was opened. `remove`, which deletes
droppers' trees too, works the same way.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from spool.errors import BundleError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
MARKER = ".ready"  # written last into a folder (or as <archive>.ready) means "complete"
JUNK = frozenset({"__MACOSX", ".DS_Store", "__pycache__", MARKER})
CHUNK = 1 << 20
MAX_DEPTH = 32
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
# Unpacking may take UNPACK_SECONDS plus a second for each UNPACK_RATE bytes a bundle may
# hold: 22.5 s for a 50 MB submission, two minutes for a 2 GB dataset.
UNPACK_SECONDS = 20.0
UNPACK_RATE = 20 * 2**20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in opens at once, a file under a lease is refused, not waited on.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_UNREADABLE = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
    gzip.BadGzipFile, NotImplementedError, UnicodeDecodeError, ValueError,
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_files: int = 10_000
    max_seconds: float | None = None  # None: UNPACK_SECONDS + max_bytes / UNPACK_RATE

    @property
    def seconds(self) -> float:
        if self.max_seconds is not None:
            return self.max_seconds
        return UNPACK_SECONDS + self.max_bytes / UNPACK_RATE


def archive_kind(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar"
    return None


def stem(name: str) -> str:
    """The bundle's name without its archive suffix."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def shown(name: str) -> str:
    """A name as text for messages, whatever bytes it is made of."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


class _Budget:
    """Counts entries and bytes as they are met, and the time spent; refuses past the caps."""

    def __init__(self, limits: Limits, where: str) -> None:
        self.limits, self.where, self.bytes, self.entries = limits, where, 0, 0
        self.deadline = time.monotonic() + limits.seconds

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise BundleError(
                f"{self.where}: more than {self.limits.max_files} files and folders (litter "
                "such as __pycache__ counts too); bundles are capped"
            )
        self.tick()

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise BundleError(
                f"{self.where}: larger than {_mb(self.limits.max_bytes)} once unpacked; "
                "bundles are capped (leave large data out, or ask the admin to raise the cap)"
            )
        self.tick()

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise BundleError(
                f"{self.where}: took longer than {self.limits.seconds:g} s to unpack: stopped "
                f"after {self.entries} entries and {_mb(self.bytes)}; send fewer, smaller files "
                "(leave data and caches out)"
            )


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n} bytes"


def _safe_relative(name: str, where: str) -> PurePosixPath | None:
    """The relative path of a member, None for litter; BundleError for anything unsafe."""
    show = shown(name)
    if "\\" in name or "\0" in name:
        raise BundleError(f"{where}: {show!r} has a backslash or NUL in its name")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise BundleError(f"{where}: member {show!r} has an absolute path; archive relative paths")
    if ".." in path.parts:
        raise BundleError(f"{where}: member {show!r} climbs out of the bundle with '..'")
    parts = [p for p in path.parts if p not in (".", "")]
    if not parts or any(p in JUNK for p in parts):
        return None
    if len(parts) > MAX_DEPTH:
        raise BundleError(f"{where}: {show!r} is nested more than {MAX_DEPTH} folders deep")
    raw = os.fsencode(name)
    if len(raw) > MAX_PATH_BYTES or any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in parts):
        raise BundleError(f"{where}: {show[:80]!r}... has a name too long")
    return PurePosixPath(*parts)


def _write(src: IO[bytes], dest: Path, budget: _Budget) -> None:
    """An archive member into our own folder (which holds no link: none is ever made)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(dest, _NEW_FILE, 0o644)
    except FileExistsError:
        raise BundleError(f"{budget.where}: {shown(dest.name)!r} is in the bundle twice") from None
    _pour(src, fd, budget)


def _pour(src: IO[bytes], fd: int, budget: _Budget) -> None:
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(CHUNK):
            budget.add(len(chunk))  # real bytes: headers may lie
            out.write(chunk)


def _no_link(where: str, name: str) -> BundleError:
    return BundleError(
        f"{where}: {shown(name)!r} is a link; bundles may hold only files and folders "
        "(copy the file instead)"
    )


# ---- folders ------------------------------------------------------------------------


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
    budget = _Budget(limits, shown(source.name))
    top = _open_top(source, budget.where)
    device = os.fstat(top).st_dev
    try:
        dest.mkdir(parents=True)
        out = os.open(dest, _DIR)
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
                    dst = os.open(entry.name, _DIR, dir_fd=folder.dst)
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
    parent = os.open(source.parent, _DIR)
    try:
        return os.open(source.name, _DIR, dir_fd=parent)
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
        raise _no_link(where, rel)
    if not (stat.S_ISDIR(seen.st_mode) or stat.S_ISREG(seen.st_mode)):
        raise BundleError(f"{where}: {shown(rel)!r} is a device, FIFO or socket, not a file")
    try:
        fd = os.open(name, _DIR if stat.S_ISDIR(seen.st_mode) else _FILE, dir_fd=parent)
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


def _copy_file(fd: int, dst: int, name: str, rel: str, budget: _Budget) -> None:
    with os.fdopen(fd, "rb") as src:
        try:
            out = os.open(name, _NEW_FILE, 0o644, dir_fd=dst)
        except FileExistsError:
            raise _changed(budget.where, rel) from None
        _pour(src, out, budget)


def _changed(where: str, rel: str) -> BundleError:
    return BundleError(
        f"{where}: {shown(rel)!r} changed while being copied; drop the folder once it is "
        "complete, and leave it alone until it is answered"
    )


# ---- archives -----------------------------------------------------------------------


class _CappedReader:
    """A file whose single reads are bounded (tarfile reads a long-name header whole),
    and timed: a header can be slow to parse without writing a byte."""

    def __init__(self, raw: IO[bytes] | gzip.GzipFile, cap: int, budget: _Budget) -> None:
        self.raw, self.cap, self.budget = raw, cap, budget

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.cap:
            raise BundleError(
                f"{self.budget.where}: an archive header claims {size} bytes; refused"
            )
        self.budget.tick()
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def extract(archive: Path, dest: Path, limits: Limits) -> Path:
    """Unpack into `dest` (created); returns the bundle root (a lone top folder, if any)."""
    kind = archive_kind(archive.name)
    where = shown(archive.name)
    budget = _Budget(limits, where)
    dest.mkdir(parents=True)
    try:
        fd = os.open(archive, _FILE)  # its folder is ours: only the name could be a link
    except OSError as exc:
        raise BundleError(f"{where}: cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{where}: not a regular file; drop the archive itself")
        if st.st_size > limits.max_bytes:
            raise BundleError(f"{where}: the archive is larger than {_mb(limits.max_bytes)}")
        try:
            if kind == "zip":
                _extract_zip(handle, dest, budget)
            elif kind == "tar":
                _extract_tar(handle, dest, budget)
            else:
                raise BundleError(f"{where}: not a .zip, .tar.gz or .tgz archive")
        except _UNREADABLE as exc:
            raise BundleError(f"{where}: cannot be read as a {kind} archive: {exc}") from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            clash = shown(Path(exc.filename).name) if exc.filename else "?"
            raise BundleError(
                f"{where}: two members clash at {clash!r} (a file and a folder, or a name twice)"
            ) from None
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest


def _extract_zip(handle: IO[bytes], dest: Path, budget: _Budget) -> None:
    _count_zip_entries(handle, budget)
    with zipfile.ZipFile(handle) as zf:
        for info in zf.infolist():
            rel = _safe_relative(info.filename, budget.where)
            if rel is None:
                continue
            budget.tick()
            if info.flag_bits & 0x1:
                raise BundleError(f"{budget.where}: member {shown(info.filename)!r} is encrypted")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _no_link(budget.where, info.filename)
            if info.is_dir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            else:
                with zf.open(info) as src:
                    _write(src, dest / rel, budget)


_CENTRAL = struct.Struct("<4s24x3H12x")  # a central directory record's fixed part
_ZIP64_END = 56 + 20  # the zip64 end record and its locator, before the end record


def _count_zip_entries(handle: IO[bytes], budget: _Budget) -> None:
    """Count the central directory's records before zipfile reads it: zipfile makes an
    object of each (millions fit in a few MB) and goes by the directory's size, not by
    the count the archive declares. So walk the same bytes the way zipfile will."""
    end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]  # zipfile's own finder
    if not end:
        return  # not a zip: zipfile says so
    size, location = end[5], end[9]  # _ECD_SIZE, _ECD_LOCATION
    start = location - size - (_ZIP64_END if end[0] == b"PK\x06\x06" else 0)
    if start < 0:
        return  # zipfile refuses it
    handle.seek(start)
    walked = 0
    while walked < size:
        record = handle.read(_CENTRAL.size)
        if len(record) != _CENTRAL.size:
            return  # truncated: zipfile refuses it
        signature, name, extra, comment = _CENTRAL.unpack(record)
        if signature != b"PK\x01\x02":
            return
        budget.entry()  # every member, litter included, before anything is unpacked
        handle.seek(name + extra + comment, os.SEEK_CUR)
        walked += _CENTRAL.size + name + extra + comment


def _extract_tar(handle: IO[bytes], dest: Path, budget: _Budget) -> None:
    with gzip.GzipFile(fileobj=handle) as unzipped:
        capped = _CappedReader(unzipped, 16 << 20, budget)
        with tarfile.open(fileobj=capped, mode="r:") as tf:  # type: ignore[call-overload]
            for member in tf:
                tf.members = []  # keep no list of members in memory
                budget.entry()  # every header, litter included
                rel = _safe_relative(member.name, budget.where)
                if rel is None:
                    # Skipping its data still inflates it: a 5 MB archive can hide GBs.
                    budget.add(member.size if member.isfile() else 0)
                    continue
                if member.issym() or member.islnk():
                    raise _no_link(budget.where, member.name)
                if member.isdir():
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    src = tf.extractfile(member)
                    if src is None:
                        raise BundleError(f"{budget.where}: {shown(member.name)!r} cannot be read")
                    _write(src, dest / rel, budget)
                else:
                    raise BundleError(
                        f"{budget.where}: {shown(member.name)!r} is a device, FIFO or other "
                        "special file; archives may hold only files and folders"
                    )


# ---- what datarun owns --------------------------------------------------------------


def walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every file below root, sorted, with its relative posix path (no recursion)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
            else:
                yield path, path.relative_to(root).as_posix()


def content_hash(root: Path) -> str:
    """sha256 over every file's relative path, size and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for path, rel in sorted(walk(root), key=lambda item: item[1]):
        size = path.stat().st_size
        digest.update(b"F" + os.fsencode(rel) + b"\0" + str(size).encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


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

    root = os.open(top, _DIR)
    try:
        if not _walk(root, enter, lambda fd, _parent, _name: folder(fd)):
            raise OSError(errno.EBUSY, f"{top} changed while {doing}")
        folder(root)
    finally:
        os.close(root)


def _fchmod_at(folder: int, name: str, file_mode: Callable[[int], int]) -> None:
    """chmod the regular file `name` of `folder` through a descriptor (never a link)."""
    try:
        fd = os.open(name, _FILE, dir_fd=folder)
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
            up = os.open("..", _DIR, dir_fd=fd)
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
            fd = os.open(name, _DIR, dir_fd=parent)
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
        fd = os.open(name, _DIR, dir_fd=parent)
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
