"""Bundles on disk: folders and archives, checked before anything reads them.

A bundle is a folder, a `.zip` or a `.tar.gz`. Archives are unpacked member by member
by our own code (no `extractall`): absolute paths, `..`, links leaving the bundle,
devices, and sizes past the caps are refused before a byte is written where it should
not be. The content hash identifies a bundle whatever form it was dropped in.
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
JUNK = frozenset({"__MACOSX", ".DS_Store", "__pycache__"})
CHUNK = 1 << 20
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


def _member_path(name: str, archive: str) -> PurePosixPath | None:
    """The safe relative path of an archive member, None for junk, error for escapes."""
    if "\\" in name or "\0" in name:
        raise BundleError(f"{archive}: member {name!r} has a backslash or NUL in its name")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise BundleError(
            f"{archive}: member {name!r} has an absolute path; archive relative paths"
        )
    if ".." in path.parts:
        raise BundleError(f"{archive}: member {name!r} climbs out of the bundle with '..'")
    parts = [p for p in path.parts if p not in (".", "")]
    if not parts or any(p in JUNK for p in parts):
        return None
    return PurePosixPath(*parts)


def _inside(link_dir: PurePosixPath, target: str) -> bool:
    """Does a link placed in `link_dir` pointing at `target` stay inside the bundle?"""
    if target.startswith("/"):
        return False
    depth = len(link_dir.parts)
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


class _Budget:
    def __init__(self, limits: Limits, where: str) -> None:
        self.limits, self.where, self.bytes, self.files = limits, where, 0, 0

    def file(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise BundleError(
                f"{self.where}: more than {self.limits.max_files} files; bundles are capped"
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


def _copy(src: IO[bytes], dest: Path, budget: _Budget) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = open(dest, "xb")  # noqa: SIM115
    except FileExistsError:
        raise BundleError(f"{budget.where}: {dest.name!r} is in the archive twice") from None
    with out:
        while chunk := src.read(CHUNK):
            budget.add(len(chunk))  # counts real bytes: headers may lie
            out.write(chunk)


def extract(archive: Path, dest: Path, limits: Limits) -> Path:
    """Unpack into `dest` (created); returns the bundle root (a lone top folder, if any)."""
    kind = archive_kind(archive.name)
    name = archive.name
    budget = _Budget(limits, name)
    dest.mkdir(parents=True)
    try:
        if kind == "zip":
            _extract_zip(archive, dest, budget)
        elif kind == "tar":
            _extract_tar(archive, dest, budget)
        else:
            raise BundleError(f"{name}: not a .zip, .tar.gz or .tgz archive")
    except _UNREADABLE as exc:
        raise BundleError(f"{name}: cannot be read as a {kind} archive: {exc}") from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        where = Path(exc.filename).name if exc.filename else "?"
        raise BundleError(
            f"{name}: two members clash at {where!r} (a file and a folder, or a name twice)"
        ) from None
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = _member_path(info.filename, archive.name)
            if rel is None:
                continue
            if info.flag_bits & 0x1:
                raise BundleError(f"{archive.name}: member {info.filename!r} is encrypted")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                _link(dest, rel, target, archive.name, budget)
            elif info.is_dir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            else:
                budget.file()
                with zf.open(info) as src:
                    _copy(src, dest / rel, budget)


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    with tarfile.open(archive, mode="r:*") as tf:
        for member in tf:
            rel = _member_path(member.name, archive.name)
            if rel is None:
                continue
            if member.issym():
                _link(dest, rel, member.linkname, archive.name, budget)
            elif member.islnk():
                raise BundleError(
                    f"{archive.name}: member {member.name!r} is a hard link; archive plain files"
                )
            elif member.isdir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                budget.file()
                src = tf.extractfile(member)
                if src is None:
                    raise BundleError(f"{archive.name}: member {member.name!r} cannot be read")
                _copy(src, dest / rel, budget)
            else:
                raise BundleError(
                    f"{archive.name}: member {member.name!r} is a device, FIFO or other special "
                    "file; archives may hold only files, folders and links inside the bundle"
                )


def _link(dest: Path, rel: PurePosixPath, target: str, where: str, budget: _Budget) -> None:
    if not _inside(rel.parent, target):
        raise BundleError(f"{where}: link {str(rel)!r} -> {target!r} points outside the bundle")
    budget.file()
    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, dest / rel)


def check_folder(root: Path, limits: Limits) -> None:
    """A dropped folder: no special files, no links leaving it, within the caps."""
    budget = _Budget(limits, root.name)
    for path, rel in _walk(root):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            if not _inside(PurePosixPath(rel).parent, os.readlink(path)):
                raise BundleError(
                    f"{root.name}: link {rel!r} -> {os.readlink(path)!r} points outside the bundle"
                )
            budget.file()
        elif stat.S_ISREG(st.st_mode):
            budget.file()
            budget.add(st.st_size)
        elif not stat.S_ISDIR(st.st_mode):
            raise BundleError(f"{root.name}: {rel!r} is a device, FIFO or socket, not a file")


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every entry below root (links not followed), with its relative posix path."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in JUNK)
        base = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            if name in JUNK:
                continue
            rel = (base / name).relative_to(root).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise BundleError(
                    f"{root.name}: a file name is not valid UTF-8 ({rel!r}); rename it"
                ) from None
            yield base / name, rel


def content_hash(root: Path) -> str:
    """sha256 over every file's relative path and bytes (links: their target), sorted;
    the drop marker and junk (`__pycache__`, `.DS_Store`) do not count."""
    digest = hashlib.sha256()
    for path, rel in _walk(root):
        if rel == MARKER:
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            digest.update(b"L" + rel.encode() + b"\0" + os.readlink(path).encode() + b"\0")
        elif stat.S_ISREG(st.st_mode):
            digest.update(b"F" + rel.encode() + b"\0" + str(st.st_size).encode() + b"\0")
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()


def freeze(top: Path) -> None:
    """Make a stored bundle read-only for everyone (executable files stay executable)."""
    for dirpath, _dirs, filenames in os.walk(top, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o555 if mode & stat.S_IXUSR else 0o444)
        os.chmod(dirpath, 0o555)


def remove(path: Path) -> None:
    """Remove a file, link or folder tree that datarun owns (staging, never user data)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=_writable_then_retry)


def _writable_then_retry(func: Callable[[str], object], path: str, _exc: object) -> None:
    """A frozen (read-only) folder refuses deletions until it is writable again."""
    os.chmod(os.path.dirname(path), 0o755)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o755)
    func(path)
