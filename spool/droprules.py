"""What every drop is held to, whether a folder (`spool.foldercopy`) or an archive
(`spool.archives`): the caps on its size, its entries and the time spent unpacking it,
counted by a `Budget` on what is actually met; the litter left out; how deep and how
long its names may be; how a name is shown in a message; and the flags every dropped
file or folder is opened with, so that no link is ever followed.

Editor and OS litter (`__pycache__`, `.DS_Store`, `__MACOSX`, the `.ready` marker) is
left out, so what is stored is exactly what was checked; it still counts against the
cap on entries. Unpacking has a wall-clock budget: a slow drop is refused rather than
hold up every drop behind it.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
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
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in opens at once, a file under a lease is refused, not waited on.
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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


class Budget:
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
                f"{self.where}: larger than {mb(self.limits.max_bytes)} once unpacked; "
                "bundles are capped (leave large data out, or ask the admin to raise the cap)"
            )
        self.tick()

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise BundleError(
                f"{self.where}: took longer than {self.limits.seconds:g} s to unpack: stopped "
                f"after {self.entries} entries and {mb(self.bytes)}; send fewer, smaller files "
                "(leave data and caches out)"
            )

    def pour(self, src: IO[bytes], fd: int) -> None:
        """Copy `src` into the new file `fd` (closed after), counting the bytes written."""
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                self.add(len(chunk))  # real bytes: headers may lie
                out.write(chunk)


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n} bytes"


def no_link(where: str, name: str) -> BundleError:
    return BundleError(
        f"{where}: {shown(name)!r} is a link; bundles may hold only files and folders "
        "(copy the file instead)"
    )


def sibling_marker(drop: os.PathLike[str] | str) -> str | None:
    """`<drop>.ready`, when it may say the drop is complete: a regular file (not a link,
    not a folder) of the drop's own owner. In a shared inbox anyone may create that
    name; another team's marker must neither hurry a drop still being copied nor
    block one. None also when the name would be too long to exist."""
    path = os.fspath(drop)
    if len(os.path.basename(path).encode(errors="surrogateescape")) + len(MARKER) > MAX_NAME_BYTES:
        return None
    marker = path + MARKER
    try:
        found, owner = os.lstat(marker), os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode) or found.st_uid != owner.st_uid:
        return None
    return marker
