"""Untrusted `.npz` files, read within what the expected arrays need.

A prediction file comes from a fold, so from a participant: its zip directory, its
`.npy` headers and its sizes are all claims. Everything here is checked before it is
believed, in an order that bounds memory and reading by the caller's expectation:

1. the file is opened without following a link and must be a regular file whose size
   is at most `size_needed(expected)` (a sparse 1 GB file is refused from its size);
2. the zip's end record must announce no more members than expected and a central
   directory no larger than theirs, before `zipfile` parses anything;
3. members must be exactly the expected names, once each, stored or deflated, with a
   declared size that the expected shape can explain;
4. each member's `.npy` header is read (at most MAX_HEADER bytes) and its shape and
   dtype compared with the expectation: only then is an array allocated, of exactly
   shape x itemsize bytes, and filled by bounded reads (`allow_pickle` never arises:
   object dtypes are refused from the header).

Steps 2 to 4 parse the file's framing: that is `spool.npzformat`. This module opens the
file, bounds it, and reads the arrays' data.

`expected` maps each member's name (without `.npy`) to its shape: `(rows,)` or
`(rows, width)`; `(rows, None)` is read as `(rows,)`, so a caller may pass
`(n, width or None)`. Names in `optional` may be absent; every other one must be there.
Every refusal is an `ArraysRefused` with a one-line reason.
"""

from __future__ import annotations

import io
import math
import os
import stat
import zipfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, TypeVar

import numpy as np

from spool.npzformat import (
    ArraysRefused,
    Expected,
    Header,
    deflated_bound,
    describe_expected,
    end_record,
    expected_shape,
    member_bound,
    members,
    read_header,
    refusing,
)

__all__ = ["ArraysRefused", "headers", "load", "read_bytes", "shape_of", "size_needed"]

Source = str | os.PathLike[str] | IO[bytes]
T = TypeVar("T")

CHUNK = 1 << 20  # bytes read at a time
# Zip framing, as zipfile writes it (numpy's savez): a local header (30 bytes + name +
# a zip64 extra), an optional data descriptor, a central directory entry per member,
# then the end records (`spool.npzformat`).
MEMBER_OVERHEAD = 1024
ARCHIVE_OVERHEAD = 1024


def shape_of(rows: int, width: int | None) -> tuple[int, ...]:
    """(rows,) for one value a row (width None), (rows, width) otherwise."""
    return (rows,) if width is None else (rows, width)


def size_needed(expected: Expected) -> int:
    """The largest file (bytes) that can hold the expected arrays: data at the largest
    itemsize, headers and zip framing, and deflate's worst case (a few bytes per 16 KB
    of incompressible data). A file larger than this is refused unread."""
    total = ARCHIVE_OVERHEAD
    for name, spec in expected.items():
        total += deflated_bound(member_bound(expected_shape(name, spec))) + MEMBER_OVERHEAD
    return total


def headers(
    source: Source,
    expected: Expected,
    *,
    dir_fd: int | None = None,
    verify: bool = False,
    optional: Collection[str] = (),
) -> dict[str, Header]:
    """Every member's header, checked; no array is allocated. With `verify`, each
    member's data is also read through (in bounded chunks) to its end, so its length
    and CRC are checked too."""

    def take(member: IO[bytes], header: Header) -> Header:
        if verify:
            _drain(member, header)
        return header

    return _each_member(source, expected, dir_fd, optional, take)


def load(
    source: Source,
    expected: Expected,
    *,
    dir_fd: int | None = None,
    optional: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """The expected arrays, each read only after its header is checked, into an array of
    exactly its declared size."""
    return _each_member(source, expected, dir_fd, optional, _read)


def read_bytes(
    source: Source,
    expected: Expected,
    *,
    dir_fd: int | None = None,
    optional: Collection[str] = (),
) -> bytes:
    """The file's bytes, checked as `headers(verify=True)` does, for a caller that copies
    the file on (the executor publishing a fold's predictions): at most
    `size_needed(expected)` bytes are read, and the bytes returned are the ones checked,
    so a file changed meanwhile cannot slip through."""
    handle, owned = _open(source, dir_fd)
    try:
        with refusing("the file cannot be read"):
            size = _size(handle, expected)
            handle.seek(0)
            data = handle.read(size + 1)
    finally:
        if owned:
            handle.close()
    if len(data) != size:
        raise ArraysRefused(f"the file changed size while read ({size} then {len(data)} bytes)")
    headers(io.BytesIO(data), expected, verify=True, optional=optional)
    return data


# ---- opening ------------------------------------------------------------------------


class _Opened:
    """The zip, opened from a bounded file, with its members matched to the names."""

    def __init__(
        self, source: Source, expected: Expected, dir_fd: int | None, optional: Collection[str]
    ) -> None:
        self.source, self.expected, self.dir_fd = source, expected, dir_fd
        self.optional = optional

    def __enter__(self) -> _Opened:
        self.handle, self.owned = _open(self.source, self.dir_fd)
        try:
            with refusing("not a readable .npz file"):  # an I/O error, a file cut short
                size = _size(self.handle, self.expected)
                end_record(self.handle, size, self.expected)
                self.handle.seek(0)
                self.zip = zipfile.ZipFile(self.handle)
            self.members = members(self.zip, self.expected, self.optional)
        except BaseException:
            self._close()
            raise
        return self

    def open(self, info: zipfile.ZipInfo, name: str) -> IO[bytes]:
        with refusing(f"'{name}' cannot be read"):  # e.g. a local header that disagrees
            return self.zip.open(info)

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "zip"):
            self.zip.close()
        self._close()

    def _close(self) -> None:
        if self.owned:
            self.handle.close()


def _open(source: Source, dir_fd: int | None) -> tuple[IO[bytes], bool]:
    """A binary handle on the source, and whether it is ours to close. A path is opened
    without following a final link and without blocking on a FIFO."""
    if not isinstance(source, str | os.PathLike):
        return source, False
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(source, flags, dir_fd=dir_fd)
    except OSError as exc:
        name = Path(os.fsdecode(source)).name
        raise ArraysRefused(f"cannot open {name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArraysRefused("not a regular file")
    return os.fdopen(fd, "rb"), True


def _size(handle: IO[bytes], expected: Expected) -> int:
    """The file's size, refused when the file is not regular or larger than needed."""
    try:
        fd = handle.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        fd = None
    if fd is not None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArraysRefused("not a regular file")
        size = st.st_size
    else:  # an in-memory file
        size = handle.seek(0, io.SEEK_END)
    cap = size_needed(expected)
    if size > cap:
        raise ArraysRefused(f"the file is {size} bytes, more than the {cap} bytes that "
                            f"{describe_expected(expected)} can take")  # fmt: skip
    return size


def _each_member(
    source: Source, expected: Expected, dir_fd: int | None, optional: Collection[str],
    take: Callable[[IO[bytes], Header], T],
) -> dict[str, T]:  # fmt: skip
    """name -> `take(member, header)` for every member, its header checked first, while
    the member is open."""
    with _Opened(source, expected, dir_fd, optional) as archive:
        out = {}
        for name, info in archive.members.items():
            with archive.open(info, name) as member:
                out[name] = take(member, read_header(member, info, name, expected[name]))
        return out


# ---- one member's data ---------------------------------------------------------------


def _read(member: IO[bytes], header: Header) -> np.ndarray:
    """The member's data into an array of exactly header.nbytes."""
    flat = np.empty(math.prod(header.shape), dtype=header.dtype)
    target = flat.view(np.uint8)
    done = 0
    for chunk in _chunks(member, header):
        target[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        done += len(chunk)
    if header.fortran_order:  # as numpy stores it: the reversed shape, transposed
        return flat.reshape(header.shape[::-1]).transpose()
    return flat.reshape(header.shape)


def _drain(member: IO[bytes], header: Header) -> None:
    for _ in _chunks(member, header):
        pass


def _chunks(member: IO[bytes], header: Header) -> Iterator[bytes]:
    """The member's data in bounded chunks, then a check that nothing follows (which
    also makes zipfile compare the CRC)."""
    left = header.nbytes
    while left:
        with refusing(f"'{header.name}' cannot be read"):
            chunk = member.read(min(CHUNK, left))
        if not chunk:
            raise ArraysRefused(f"'{header.name}' ends {left} bytes early")
        left -= len(chunk)
        yield chunk
    with refusing(f"'{header.name}' cannot be read"):
        more = member.read(1)
    if more:
        raise ArraysRefused(f"'{header.name}' holds more data than its shape needs")
