"""Archives of untrusted drops (`.zip`, `.tar.gz`, `.tgz`) unpacked, checked, into a
folder datarun owns.

An archive is never read in place: it is unpacked, by our own code, into a fresh folder;
what is checked, hashed and stored is that copy. Anything that could reach outside the
bundle is refused: links (of any kind), devices and FIFOs, absolute paths, `..`,
backslashes, names too long or too deep; sizes and counts are capped on the bytes
actually written (`spool.droprules`), and no header is trusted. Every member of an
archive, litter included, counts against the cap on entries before anything is
unpacked.
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from spool.droprules import (
    JUNK,
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    NEW_FILE,
    OPEN_FILE,
    Budget,
    Limits,
    archive_kind,
    mb,
    no_link,
    shown,
)
from spool.errors import BundleError

_UNREADABLE = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
    gzip.BadGzipFile, NotImplementedError, UnicodeDecodeError, ValueError,
)  # fmt: skip


class _CappedReader:
    """A file whose single reads are bounded (tarfile reads a long-name header whole),
    and timed: a header can be slow to parse without writing a byte."""

    def __init__(self, raw: IO[bytes] | gzip.GzipFile, cap: int, budget: Budget) -> None:
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
    budget = Budget(limits, where)
    dest.mkdir(parents=True)
    try:
        fd = os.open(archive, OPEN_FILE)  # its folder is ours: only the name could be a link
    except OSError as exc:
        raise BundleError(f"{where}: cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{where}: not a regular file; drop the archive itself")
        if st.st_size > limits.max_bytes:
            raise BundleError(f"{where}: the archive is larger than {mb(limits.max_bytes)}")
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


def _extract_zip(handle: IO[bytes], dest: Path, budget: Budget) -> None:
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
                raise no_link(budget.where, info.filename)
            if info.is_dir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            else:
                with zf.open(info) as src:
                    _write(src, dest / rel, budget)


_CENTRAL = struct.Struct("<4s24x3H12x")  # a central directory record's fixed part
_ZIP64_END = 56 + 20  # the zip64 end record and its locator, before the end record


def _count_zip_entries(handle: IO[bytes], budget: Budget) -> None:
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


def _extract_tar(handle: IO[bytes], dest: Path, budget: Budget) -> None:
    with gzip.GzipFile(fileobj=handle) as unzipped:
        capped = _CappedReader(unzipped, 16 << 20, budget)
        with tarfile.open(fileobj=capped, mode="r:") as tf:  # type: ignore[call-overload]
            for member in tf:
                tf.members = []  # keep no list of members in memory
                budget.entry()  # every header, litter included
                rel = _safe_relative(member.name, budget.where)
                if rel is None:
                    # Skipping its data still inflates it: a 5 MB archive can hide GBs
                    # (tarfile skips data for files and for types it does not know).
                    budget.add(member.size if _has_data(member) else 0)
                    continue
                if member.issym() or member.islnk():
                    raise no_link(budget.where, member.name)
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


def _has_data(member: tarfile.TarInfo) -> bool:
    return member.isfile() or member.type not in tarfile.SUPPORTED_TYPES


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


def _write(src: IO[bytes], dest: Path, budget: Budget) -> None:
    """An archive member into our own folder (which holds no link: none is ever made)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(dest, NEW_FILE, 0o644)
    except FileExistsError:
        raise BundleError(f"{budget.where}: {shown(dest.name)!r} is in the bundle twice") from None
    budget.pour(src, fd)
