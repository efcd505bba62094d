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
import struct
import zipfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npformat

from spool.errors import DatarunError

Expected = Mapping[str, tuple[int | None, ...]]
Source = str | os.PathLike[str] | IO[bytes]

KINDS = "biuf"  # bool, signed and unsigned integers, floats: numbers, nothing else
MAX_ITEMSIZE = 8  # float64 / int64; longdouble and complex are not predictions
MAX_HEADER = 4096  # numpy writes 128 bytes for a 2-D array; it accepts up to 10,000
MAX_DIMS = 2
CHUNK = 1 << 20  # bytes read at a time

# Zip framing, as zipfile writes it (numpy's savez): a local header (30 bytes + name +
# a zip64 extra), an optional data descriptor, a central directory entry (46 + name +
# extra) per member, then the zip64 end record and locator (76) and the end record (22).
MEMBER_OVERHEAD = 1024
ARCHIVE_OVERHEAD = 1024
CD_ENTRY_MAX = 46 + 64 + 64  # fixed part, name (ours are short), extras (zip64 is 28)
EOCD = struct.Struct("<4s4H2LH")
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


class ArraysRefused(DatarunError):
    """The file is not the expected arrays; the message says why, in one line."""


@dataclass(frozen=True)
class Header:
    """One member's `.npy` header, checked against its expectation."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int  # where the data starts in the member

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def shape_of(rows: int, width: int | None) -> tuple[int, ...]:
    """(rows,) for one value a row (width None), (rows, width) otherwise."""
    return (rows,) if width is None else (rows, width)


def size_needed(expected: Expected) -> int:
    """The largest file (bytes) that can hold the expected arrays: data at the largest
    itemsize, headers and zip framing, and deflate's worst case (a few bytes per 16 KB
    of incompressible data). A file larger than this is refused unread."""
    total = ARCHIVE_OVERHEAD
    for name, spec in expected.items():
        total += _deflated_bound(_member_bound(_shape(name, spec))) + MEMBER_OVERHEAD
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
    with _Opened(source, expected, dir_fd, optional) as archive:
        out = {}
        for name, info in archive.members.items():
            with archive.open(info, name) as member:
                header = _header(member, info, name, expected[name])
                if verify:
                    _drain(member, header)
            out[name] = header
        return out


def load(
    source: Source,
    expected: Expected,
    *,
    dir_fd: int | None = None,
    optional: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """The expected arrays, each read only after its header is checked, into an array of
    exactly its declared size."""
    with _Opened(source, expected, dir_fd, optional) as archive:
        out = {}
        for name, info in archive.members.items():
            with archive.open(info, name) as member:
                header = _header(member, info, name, expected[name])
                out[name] = _read(member, header)
        return out


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
        with _refusing("the file cannot be read"):
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
            with _refusing("not a readable .npz file"):  # an I/O error, a file cut short
                size = _size(self.handle, self.expected)
                _end_record(self.handle, size, self.expected)
                self.handle.seek(0)
                self.zip = zipfile.ZipFile(self.handle)
            self.members = _members(self.zip, self.expected, self.optional)
        except BaseException:
            self._close()
            raise
        return self

    def open(self, info: zipfile.ZipInfo, name: str) -> IO[bytes]:
        with _refusing(f"'{name}' cannot be read"):  # e.g. a local header that disagrees
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
                            f"{_describe(expected)} can take")  # fmt: skip
    return size


def _end_record(handle: IO[bytes], size: int, expected: Expected) -> None:
    """Refuse, from the zip's end record alone, an archive announcing more members or a
    larger directory than expected: zipfile would otherwise build an object per entry."""
    if size < EOCD.size:
        raise ArraysRefused(f"not a .npz file: {size} bytes, too short for a zip")
    handle.seek(size - EOCD.size)
    sig, _, _, _, entries, cd_size, cd_offset, comment = EOCD.unpack(handle.read(EOCD.size))
    if sig != b"PK\x05\x06" or comment != 0:
        raise ArraysRefused("not a .npz file: no zip end record at its end")
    if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):  # zip64: the real ones
        at = size - EOCD.size - ZIP64_LOCATOR.size
        if at < 0:
            raise ArraysRefused("not a .npz file: its zip64 locator is missing")
        handle.seek(at)
        sig, _, where, _ = ZIP64_LOCATOR.unpack(handle.read(ZIP64_LOCATOR.size))
        if sig != b"PK\x06\x07" or where + ZIP64_EOCD.size > at:
            raise ArraysRefused("not a .npz file: its zip64 locator is wrong")
        handle.seek(where)
        record = ZIP64_EOCD.unpack(handle.read(ZIP64_EOCD.size))
        if record[0] != b"PK\x06\x06":
            raise ArraysRefused("not a .npz file: its zip64 end record is wrong")
        entries, cd_size, cd_offset = record[7], record[8], record[9]
    if entries > len(expected):
        raise ArraysRefused(f"it holds {entries} arrays; expected {_names(expected)}")
    if cd_size > len(expected) * CD_ENTRY_MAX or cd_offset + cd_size > size:
        raise ArraysRefused(f"its zip directory ({cd_size} bytes at {cd_offset}) is not one "
                            f"of {len(expected)} arrays")  # fmt: skip


def _members(
    archive: zipfile.ZipFile, expected: Expected, optional: Collection[str] = ()
) -> dict[str, zipfile.ZipInfo]:
    """name -> member, for exactly the expected names, each once and within its bound."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or name not in expected:
            raise ArraysRefused(f"unexpected member {info.filename[:80]!r}; expected "
                                f"{_names(expected)}")  # fmt: skip
        if name in found:
            raise ArraysRefused(f"the member {info.filename!r} appears twice")
        if info.flag_bits & 0x1:
            raise ArraysRefused(f"the member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArraysRefused(f"the member {info.filename!r} is compressed with method "
                                f"{info.compress_type}; numpy stores or deflates")  # fmt: skip
        shape = _shape(name, expected[name])
        bound = _member_bound(shape)
        if info.file_size > bound:
            raise ArraysRefused(f"'{name}' declares {info.file_size} bytes, more than the "
                                f"{bound} an array of shape {shape} can take")  # fmt: skip
        if info.compress_size > _deflated_bound(bound):
            raise ArraysRefused(f"'{name}' holds {info.compress_size} compressed bytes, more "
                                f"than an array of shape {shape} can take")  # fmt: skip
        found[name] = info
    missing = [name for name in expected if name not in found and name not in optional]
    if missing:
        raise ArraysRefused(f"no {' or '.join(repr(m) for m in missing)} array")
    return found


# ---- one member ---------------------------------------------------------------------


def _header(member: IO[bytes], info: zipfile.ZipInfo, name: str,
            spec: tuple[int | None, ...]) -> Header:  # fmt: skip
    """The member's .npy header, read in bounded pieces and checked."""
    magic = _exact(member, npformat.MAGIC_LEN, name)
    if magic[:-2] != npformat.MAGIC_PREFIX:
        raise ArraysRefused(f"'{name}' is not a .npy array")
    version = (magic[-2], magic[-1])
    lengths = {(1, 0): "<H", (2, 0): "<I"}  # 3.0 only adds UTF-8 field names
    if version not in lengths:
        raise ArraysRefused(f"'{name}' uses .npy format {version[0]}.{version[1]}; "
                            "numbers need 1.0 or 2.0")  # fmt: skip
    raw_length = _exact(member, struct.calcsize(lengths[version]), name)
    (length,) = struct.unpack(lengths[version], raw_length)
    if length > MAX_HEADER:
        raise ArraysRefused(f"'{name}' has a .npy header of {length} bytes (at most "
                            f"{MAX_HEADER})")  # fmt: skip
    text = _exact(member, length, name)
    reader = (npformat.read_array_header_1_0 if version == (1, 0)
              else npformat.read_array_header_2_0)  # fmt: skip
    try:
        shape, fortran, dtype = reader(io.BytesIO(raw_length + text), max_header_size=MAX_HEADER)
    except Exception as exc:  # whatever numpy's parser says of a hostile header
        raise ArraysRefused(f"'{name}' has an unreadable .npy header: {_one_line(exc)}") from None
    dtype = np.dtype(dtype)
    if dtype.kind not in KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ArraysRefused(f"'{name}' has type {dtype.str}, expected bool, integers or "
                            "floats")  # fmt: skip
    if dtype.itemsize > MAX_ITEMSIZE:
        raise ArraysRefused(f"'{name}' has type {dtype.str}, wider than {MAX_ITEMSIZE} bytes")
    wanted = _shape(name, spec)
    shape = tuple(int(d) for d in shape)
    if shape != wanted:
        shown = str(shape) if len(shape) <= MAX_DIMS else f"of {len(shape)} dimensions"
        raise ArraysRefused(f"'{name}' has shape {shown[:60]}, expected {wanted}")
    header = Header(name, shape, dtype, bool(fortran), len(magic) + len(raw_length) + length)
    if info.file_size != header.offset + header.nbytes:
        raise ArraysRefused(f"'{name}' holds {info.file_size - header.offset} bytes of data; "
                            f"its shape and type need {header.nbytes}")  # fmt: skip
    return header


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
        with _refusing(f"'{header.name}' cannot be read"):
            chunk = member.read(min(CHUNK, left))
        if not chunk:
            raise ArraysRefused(f"'{header.name}' ends {left} bytes early")
        left -= len(chunk)
        yield chunk
    with _refusing(f"'{header.name}' cannot be read"):
        more = member.read(1)
    if more:
        raise ArraysRefused(f"'{header.name}' holds more data than its shape needs")


def _exact(member: IO[bytes], n: int, name: str) -> bytes:
    with _refusing(f"'{name}' cannot be read"):
        data = member.read(n)
    if len(data) != n:
        raise ArraysRefused(f"'{name}' ends inside its .npy header")
    return data


# ---- helpers ------------------------------------------------------------------------


@contextmanager
def _refusing(what: str) -> Iterator[None]:
    """Any failure to parse the untrusted file (zipfile's, zlib's, struct's) is a
    refusal saying `what`, in one line."""
    try:
        yield
    except ArraysRefused:
        raise
    except Exception as exc:  # zlib.error, struct.error and the like included
        raise ArraysRefused(f"{what}: {_one_line(exc)}") from None


def _shape(name: str, spec: tuple[int | None, ...]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in spec if d is not None)
    if not shape or len(shape) > MAX_DIMS or min(shape) < 0:
        raise ValueError(f"expected shape {spec} for {name!r}: (rows,) or (rows, width)")
    return shape


def _member_bound(shape: tuple[int, ...]) -> int:
    """The largest .npy member an array of this shape can be: magic, length, header."""
    return npformat.MAGIC_LEN + 4 + MAX_HEADER + math.prod(shape) * MAX_ITEMSIZE


def _deflated_bound(size: int) -> int:
    """The most deflate can take to store `size` bytes: its stored blocks' framing."""
    return size + size // 1000 + 64


def _names(expected: Expected) -> str:
    return ", ".join(repr(name) for name in expected)


def _describe(expected: Expected) -> str:
    return ", ".join(f"{name} {_shape(name, spec)}" for name, spec in expected.items())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
