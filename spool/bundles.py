"""Bundles on disk: every drop becomes a copy that datarun owns, checked on the way in.

A bundle is a folder, a `.zip` or a `.tar.gz`. Neither is read in place: a folder is
copied and an archive is unpacked, by our own code, into a fresh folder; what is
checked, hashed and stored is that copy, so the dropper cannot change it afterwards.
On the way, anything that could reach outside the bundle is refused: links (of any
kind), devices and FIFOs, absolute paths, `..`, backslashes, names too long or too
deep; sizes and counts are capped on the bytes actually written, and no header is
trusted. Editor and OS litter (`__pycache__`, `.DS_Store`, `__MACOSX`, the `.ready`
marker) is left out, so what is stored is exactly what was checked.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from datarun.errors import BundleError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
MARKER = ".ready"  # written last into a folder (or as <archive>.ready) means "complete"
JUNK = frozenset({"__MACOSX", ".DS_Store", "__pycache__", MARKER})
CHUNK = 1 << 20
MAX_DEPTH = 32
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
_UNREADABLE = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
    gzip.BadGzipFile, NotImplementedError, UnicodeDecodeError, ValueError,
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_files: int = 10_000


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
    """Counts entries and bytes as they are written; refuses past the caps."""

    def __init__(self, limits: Limits, where: str) -> None:
        self.limits, self.where, self.bytes, self.entries = limits, where, 0, 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise BundleError(
                f"{self.where}: more than {self.limits.max_files} files and folders; "
                "bundles are capped"
            )

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise BundleError(
                f"{self.where}: larger than {_mb(self.limits.max_bytes)} once unpacked; "
                "bundles are capped (leave large data out, or ask the admin to raise the cap)"
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise BundleError(f"{budget.where}: {shown(dest.name)!r} is in the bundle twice") from None
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


def copy_folder(source: Path, dest: Path, limits: Limits) -> Path:
    """Copy a dropped folder into `dest` (created), refusing links and special files."""
    budget = _Budget(limits, shown(source.name))
    dest.mkdir(parents=True)
    stack: list[tuple[Path, Path, int]] = [(source, dest, 0)]
    while stack:
        src_dir, dst_dir, depth = stack.pop()
        try:
            names = sorted(os.listdir(src_dir))
        except OSError as exc:
            raise BundleError(f"{budget.where}: cannot read a folder: {exc.strerror}") from None
        for name in names:
            if name in JUNK:
                continue
            path = src_dir / name
            if len(os.fsencode(path.relative_to(source))) > MAX_PATH_BYTES:
                raise BundleError(f"{budget.where}: {shown(name)[:80]!r} has a path too long")
            st = path.lstat()
            budget.entry()
            if stat.S_ISLNK(st.st_mode):
                raise _no_link(budget.where, str(path.relative_to(source)))
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 >= MAX_DEPTH:
                    raise BundleError(f"{budget.where}: nested more than {MAX_DEPTH} folders deep")
                (dst_dir / name).mkdir()
                stack.append((path, dst_dir / name, depth + 1))
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    raise BundleError(
                        f"{budget.where}: {shown(name)!r} is a hard link; copy the file instead"
                    )
                _copy_regular(path, dst_dir / name, budget)
            else:
                raise BundleError(
                    f"{budget.where}: {shown(name)!r} is a device, FIFO or socket, not a file"
                )
    return dest


def _copy_regular(path: Path, dest: Path, budget: _Budget) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise BundleError(f"{budget.where}: {shown(path.name)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise BundleError(f"{budget.where}: {shown(path.name)!r} changed while being read")
        _write(src, dest, budget)


# ---- archives -----------------------------------------------------------------------


class _CappedReader:
    """A file whose single reads are bounded: tarfile reads a long-name header whole."""

    def __init__(self, raw: IO[bytes] | gzip.GzipFile, cap: int, where: str) -> None:
        self.raw, self.cap, self.where = raw, cap, where

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.cap:
            raise BundleError(f"{self.where}: an archive header claims {size} bytes; refused")
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
        fd = os.open(archive, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
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
    with zipfile.ZipFile(handle) as zf:
        for info in zf.infolist():
            rel = _safe_relative(info.filename, budget.where)
            if rel is None:
                continue
            budget.entry()
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


def _extract_tar(handle: IO[bytes], dest: Path, budget: _Budget) -> None:
    with gzip.GzipFile(fileobj=handle) as unzipped:
        capped = _CappedReader(unzipped, 16 << 20, budget.where)
        with tarfile.open(fileobj=capped, mode="r:") as tf:  # type: ignore[call-overload]
            for member in tf:
                tf.members = []  # keep no list of members in memory
                rel = _safe_relative(member.name, budget.where)
                if rel is None:
                    continue
                budget.entry()
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
    """Files first, then folders deepest first (so the walk can still enter them);
    links are left alone."""
    stack, folders = [top], []
    while stack:
        folder = stack.pop()
        folders.append(folder)
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                os.chmod(entry.path, file_mode(entry.stat(follow_symlinks=False).st_mode))
    for folder in reversed(folders):
        os.chmod(folder, folder_mode)


def remove(path: Path) -> None:
    """Remove a file, link or folder tree, however deep or read-only (no recursion)."""
    if path.is_symlink() or not path.is_dir():
        if path.exists() or path.is_symlink():
            path.unlink()
        return
    stack, folders = [path], []
    while stack:
        folder = stack.pop()
        os.chmod(folder, 0o700)
        folders.append(folder)
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            else:
                os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def move_tree(source: Path, dest: Path) -> None:
    """Rename when possible; across filesystems copy then remove."""
    try:
        source.rename(dest)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV
            raise
        shutil.copytree(source, dest, symlinks=True)
        remove(source)
