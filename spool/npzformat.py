"""The framing of an untrusted `.npz` parsed within bounds, for `spool.arrays`: the zip's
end record (and its zip64 records), its members, and each member's `.npy` header. Every
field is a claim, checked against what the expected arrays can need before anything it
announces is read or allocated; every refusal is an `ArraysRefused` with a one-line
reason.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from numpy.lib import format as npformat

from spool.errors import DatarunError

Expected = Mapping[str, tuple[int | None, ...]]

KINDS = "biuf"  # bool, signed and unsigned integers, floats: numbers, nothing else
MAX_ITEMSIZE = 8  # float64 / int64; longdouble and complex are not predictions
MAX_HEADER = 4096  # numpy writes 128 bytes for a 2-D array; it accepts up to 10,000
MAX_DIMS = 2

# Zip framing, as zipfile writes it (numpy's savez): a central directory entry (46 +
# name + extra) per member, then the zip64 end record and locator (76) and the end
# record (22).
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


# ---- the zip ------------------------------------------------------------------------


def end_record(handle: IO[bytes], size: int, expected: Expected) -> None:
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


def members(
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
        shape = expected_shape(name, expected[name])
        bound = member_bound(shape)
        if info.file_size > bound:
            raise ArraysRefused(f"'{name}' declares {info.file_size} bytes, more than the "
                                f"{bound} an array of shape {shape} can take")  # fmt: skip
        if info.compress_size > deflated_bound(bound):
            raise ArraysRefused(f"'{name}' holds {info.compress_size} compressed bytes, more "
                                f"than an array of shape {shape} can take")  # fmt: skip
        found[name] = info
    missing = [name for name in expected if name not in found and name not in optional]
    if missing:
        raise ArraysRefused(f"no {' or '.join(repr(m) for m in missing)} array")
    return found


# ---- one member ---------------------------------------------------------------------


def read_header(member: IO[bytes], info: zipfile.ZipInfo, name: str,
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
    wanted = expected_shape(name, spec)
    shape = tuple(int(d) for d in shape)
    if shape != wanted:
        shown = str(shape) if len(shape) <= MAX_DIMS else f"of {len(shape)} dimensions"
        raise ArraysRefused(f"'{name}' has shape {shown[:60]}, expected {wanted}")
    header = Header(name, shape, dtype, bool(fortran), len(magic) + len(raw_length) + length)
    if info.file_size != header.offset + header.nbytes:
        raise ArraysRefused(f"'{name}' holds {info.file_size - header.offset} bytes of data; "
                            f"its shape and type need {header.nbytes}")  # fmt: skip
    return header


def _exact(member: IO[bytes], n: int, name: str) -> bytes:
    with refusing(f"'{name}' cannot be read"):
        data = member.read(n)
    if len(data) != n:
        raise ArraysRefused(f"'{name}' ends inside its .npy header")
    return data


# ---- helpers ------------------------------------------------------------------------


@contextmanager
def refusing(what: str) -> Iterator[None]:
    """Any failure to parse the untrusted file (zipfile's, zlib's, struct's) is a
    refusal saying `what`, in one line."""
    try:
        yield
    except ArraysRefused:
        raise
    except Exception as exc:  # zlib.error, struct.error and the like included
        raise ArraysRefused(f"{what}: {_one_line(exc)}") from None


def expected_shape(name: str, spec: tuple[int | None, ...]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in spec if d is not None)
    if not shape or len(shape) > MAX_DIMS or min(shape) < 0:
        raise ValueError(f"expected shape {spec} for {name!r}: (rows,) or (rows, width)")
    return shape


def member_bound(shape: tuple[int, ...]) -> int:
    """The largest .npy member an array of this shape can be: magic, length, header."""
    return npformat.MAGIC_LEN + 4 + MAX_HEADER + math.prod(shape) * MAX_ITEMSIZE


def deflated_bound(size: int) -> int:
    """The most deflate can take to store `size` bytes: its stored blocks' framing."""
    return size + size // 1000 + 64


def _names(expected: Expected) -> str:
    return ", ".join(repr(name) for name in expected)


def describe_expected(expected: Expected) -> str:
    return ", ".join(f"{name} {expected_shape(name, spec)}" for name, spec in expected.items())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
