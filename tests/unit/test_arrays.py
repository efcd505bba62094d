"""spool.arrays: hostile .npz files are refused from their size, zip directory and .npy
headers, before anything near what they declare is read or allocated. Real files only."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib import format as npformat

from spool import arrays, npzformat
from spool.arrays import ArraysRefused

pytestmark = [pytest.mark.chaos, pytest.mark.filterwarnings("ignore:Duplicate name")]

EXPECTED = {"train": (120, 3), "test": (30, 3)}
TWO_GB = (89_478_486, 3)  # float64: 2 GiB


def npy(shape, descr: str = "<f8", body: bytes | None = None, fortran: bool = False,
        version: int = 1) -> bytes:  # fmt: skip
    """A .npy member: a real header saying `shape` and `descr`, then `body` (by default
    the zeros the header asks for)."""
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    write = npformat.write_array_header_1_0 if version == 1 else npformat.write_array_header_2_0
    write(out, header)
    if body is None:
        body = bytes(int(np.prod(shape)) * np.dtype(descr).itemsize)
    return out.getvalue() + body


def npz(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def good(path: Path) -> Path:
    return npz(path, {"train.npy": npy((120, 3)), "test.npy": npy((30, 3))})


def refused(path, expected=EXPECTED, **kw) -> str:
    with pytest.raises(ArraysRefused) as info:
        arrays.load(path, expected, **kw)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    return message


def rchar() -> int:
    """Bytes this process has read through read(2) and the like, from the kernel."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_what_numpy_writes_loads_the_same(tmp_path):
    rng = np.random.default_rng(0)
    train = np.asfortranarray(rng.random((120, 3)).astype(">f4"))
    test = rng.integers(-5, 5, (30, 3)).astype(np.int16)
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, train=train, test=test)
        assert path.stat().st_size <= arrays.size_needed(EXPECTED)
        got = arrays.load(path, EXPECTED)
        with np.load(path) as theirs:
            for name in EXPECTED:
                assert got[name].dtype == theirs[name].dtype
                assert np.array_equal(got[name], theirs[name])
        assert got["train"].flags.f_contiguous
        heads = arrays.headers(path, EXPECTED, verify=True)
        assert heads["train"].fortran_order and heads["test"].dtype == np.int16
        assert arrays.read_bytes(path, EXPECTED) == path.read_bytes()


def test_one_dimension_for_regression(tmp_path):
    path = tmp_path / "r.npz"
    np.savez(path, train=np.arange(10.0))
    assert arrays.load(path, {"train": (10, None)})["train"].tolist() == list(range(10))
    assert "has shape (10,), expected (10, 1)" in refused(path, {"train": (10, 1)})


def test_a_header_declaring_2_gb_is_refused_before_any_allocation(tmp_path):
    path = npz(tmp_path / "big.npz", {"train.npy": npy(TWO_GB, body=b"\0" * 64),
                                      "test.npy": npy((30, 3))})  # fmt: skip
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        message = refused(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == f"'train' has shape {TWO_GB}, expected (120, 3)"
    assert peak < 1 << 20


def test_the_expected_shape_with_a_short_or_long_body_is_refused(tmp_path):
    short = npz(tmp_path / "s.npz", {"train.npy": npy((120, 3), body=b"\0" * 100),
                                     "test.npy": npy((30, 3))})  # fmt: skip
    assert "'train' holds 100 bytes of data; its shape and type need 2880" in refused(short)
    long = npz(tmp_path / "l.npz", {"train.npy": npy((120, 3), body=b"\0" * 2888),
                                    "test.npy": npy((30, 3))})  # fmt: skip
    assert "'train' holds 2888 bytes of data" in refused(long)


def raw_zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip written by hand: (name, deflated stream, CRC, declared size) per member, so
    that what the directory declares can differ from what the stream holds."""
    out, central = bytearray(), bytearray()
    for name, stream, crc, size in entries:
        offset, raw = len(out), name.encode()
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, zipfile.ZIP_DEFLATED, 0, 0,
                           crc, len(stream), size, len(raw), 0) + raw + stream  # fmt: skip
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, zipfile.ZIP_DEFLATED,
                               0, 0, crc, len(stream), size, len(raw), 0, 0, 0, 0, 0,
                               offset) + raw  # fmt: skip
    end = npzformat.EOCD.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central),
                              len(out), 0)  # fmt: skip
    return bytes(out + central + end)


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def test_a_compressed_member_declaring_a_huge_size_is_refused_unread(tmp_path):
    test = npy((30, 3))
    member = npy((120, 3))
    path = tmp_path / "c.npz"
    path.write_bytes(
        raw_zip(
            [
                ("train.npy", deflated(member), zlib.crc32(member), 2 * 2**30),
                ("test.npy", deflated(test), zlib.crc32(test), len(test)),
            ]
        )
    )
    assert "'train' declares 2147483648 bytes, more than the" in refused(path)


def test_a_deflated_bomb_is_read_no_further_than_its_declared_size(tmp_path):
    """The stream expands to 4 MB; the member declares the bytes the array needs (and
    their CRC): zipfile stops there, and so do we."""
    member, test = npy((120, 3)), npy((30, 3))
    stream = deflated(member + bytes(4 << 20))
    path = tmp_path / "bomb.npz"
    path.write_bytes(
        raw_zip(
            [
                ("train.npy", stream, zlib.crc32(member), len(member)),
                ("test.npy", deflated(test), zlib.crc32(test), len(test)),
            ]
        )
    )
    assert path.stat().st_size <= arrays.size_needed(EXPECTED)
    tracemalloc.start()
    try:
        got = arrays.load(path, EXPECTED)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got["train"].shape == (120, 3) and peak < 4 << 20


def test_object_arrays_and_pickles_are_refused_from_the_header(tmp_path):
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    path = npz(tmp_path / "o.npz", {"train.npy": npy((120, 3), "|O", body=payload),
                                    "test.npy": npy((30, 3))})  # fmt: skip
    assert "'train' has type |O, expected bool, integers or floats" in refused(path)
    assert not marker.exists()
    for descr, why in [("<U1", "has type <U1"), ("<c16", "has type <c16"),
                       ("<f16", "wider than 8 bytes"), ("|V8", "has type |V8")]:  # fmt: skip
        path = npz(tmp_path / "t.npz", {"train.npy": npy((120, 3), descr),
                                        "test.npy": npy((30, 3))})  # fmt: skip
        assert why in refused(path), descr


def test_names_members_and_framing(tmp_path):
    assert "no 'test' array" in refused(npz(tmp_path / "a.npz", {"train.npy": npy((120, 3))}))
    extra = {"train.npy": npy((120, 3)), "x.npy": npy((30, 3))}
    assert "unexpected member 'x.npy'" in refused(npz(tmp_path / "b.npz", extra))
    twice = tmp_path / "c.npz"
    with zipfile.ZipFile(twice, "w") as archive:
        archive.writestr("train.npy", npy((120, 3)))
        archive.writestr("train.npy", npy((120, 3)))
    assert "'train.npy' appears twice" in refused(twice)
    many = npz(tmp_path / "d.npz", {f"m{i}.npy": b"" for i in range(40)})
    assert "it holds 40 arrays; expected 'train', 'test'" in refused(many)
    commented = good(tmp_path / "e.npz")
    with zipfile.ZipFile(commented, "a") as archive:
        archive.comment = b"hello"
    assert "no zip end record at its end" in refused(commented)
    garbage = tmp_path / "f.npz"
    garbage.write_bytes(b"not an npz")
    assert "too short for a zip" in refused(garbage)
    garbage.write_bytes(b"x" * 1000)
    assert "no zip end record" in refused(garbage)
    bad_header = npz(tmp_path / "g.npz", {"train.npy": npy((120, 3))[:8] + b"\xff\xff",
                                          "test.npy": npy((30, 3))})  # fmt: skip
    assert "'train' has a .npy header of 65535 bytes" in refused(bad_header)
    v2 = npz(tmp_path / "h.npz", {"train.npy": npy((120, 3), version=2),
                                  "test.npy": npy((30, 3))})  # fmt: skip
    assert arrays.load(v2, EXPECTED)["train"].shape == (120, 3)
    v3 = npz(tmp_path / "i.npz", {"train.npy": b"\x93NUMPY\x03\x00" + npy((120, 3))[8:],
                                  "test.npy": npy((30, 3))})  # fmt: skip
    assert "uses .npy format 3.0" in refused(v3)
    text = npy((120, 3))
    broken = text[:10] + text[10:].replace(b"'shape'", b"'shap_'")
    bad = npz(tmp_path / "j.npz", {"train.npy": broken, "test.npy": npy((30, 3))})
    assert "'train' has an unreadable .npy header" in refused(bad)


def test_a_zip64_end_record_is_read_and_checked(tmp_path):
    """numpy writes zip64 end records for archives past 4 GB; built here by hand."""

    def zip64(path: Path, entries: int) -> Path:
        data = good(tmp_path / "plain.npz").read_bytes()
        eocd = data[-22:]
        _, _, _, _, _, size, offset, _ = npzformat.EOCD.unpack(eocd)
        body = data[:-22]
        record = npzformat.ZIP64_EOCD.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                                           size, offset)  # fmt: skip
        locator = npzformat.ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, len(body), 1)
        end = npzformat.EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, size, offset, 0)
        path.write_bytes(body + record + locator + end)
        return path

    fine = zip64(tmp_path / "z.npz", 2)
    assert zipfile.ZipFile(fine).namelist() == ["train.npy", "test.npy"]
    assert arrays.load(fine, EXPECTED)["test"].shape == (30, 3)
    assert "it holds 1000000000 arrays" in refused(zip64(tmp_path / "y.npz", 10**9))


def test_a_sparse_file_of_1_gb_is_refused_by_size_without_being_read(tmp_path):
    path = good(tmp_path / "sparse.npz")
    with open(path, "r+b") as handle:
        handle.truncate(1 << 30)
    before = rchar()
    for read in (arrays.load, arrays.headers, arrays.read_bytes):
        with pytest.raises(ArraysRefused, match=r"the file is 1073741824 bytes, more than"):
            read(path, EXPECTED)
    assert rchar() - before < 1 << 20
    with open(path, "rb") as handle, pytest.raises(ArraysRefused, match="1073741824 bytes"):
        arrays.read_bytes(handle, EXPECTED)  # an open file object: the same


def test_links_fifos_and_folders_are_not_followed_or_read(tmp_path):
    target = good(tmp_path / "target.npz")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    assert "cannot open link.npz" in refused(link)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo)  # and does not block on the writer
    (tmp_path / "folder.npz").mkdir()
    assert "not a regular file" in refused(tmp_path / "folder.npz")


def test_read_bytes_relative_to_a_folder_descriptor(tmp_path):
    good(tmp_path / "pred.npz")
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = arrays.read_bytes("pred.npz", EXPECTED, dir_fd=folder)
        (tmp_path / "link").symlink_to(tmp_path / "pred.npz")
        with pytest.raises(ArraysRefused, match="cannot open link"):
            arrays.read_bytes("link", EXPECTED, dir_fd=folder)
    finally:
        os.close(folder)
    assert data == (tmp_path / "pred.npz").read_bytes()
    corrupt = bytearray(data)
    corrupt[corrupt.index(b"PK\x03\x04") + 200] ^= 0xFF  # inside train's data: bad CRC
    (tmp_path / "bad.npz").write_bytes(bytes(corrupt))
    assert "'train' cannot be read: Bad CRC-32" in refused(tmp_path / "bad.npz")
    with pytest.raises(ArraysRefused, match="Bad CRC-32"):
        arrays.read_bytes(tmp_path / "bad.npz", EXPECTED)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 3000), width=st.sampled_from([None, 1, 2, 7]),
       dtype=st.sampled_from(["<f8", ">f8", "<f4", "<i8", "|u1", "|b1", "<f2"]),
       compressed=st.booleans(), test=st.booleans())  # fmt: skip
def test_every_file_numpy_writes_fits_in_size_needed(tmp_path_factory, rows, width, dtype,
                                                     compressed, test):  # fmt: skip
    rng = np.random.default_rng(rows)
    expected = {"train": arrays.shape_of(rows, width)}
    if test:
        expected["test"] = arrays.shape_of(rows // 2 + 1, width)
    kind = np.dtype(dtype)
    saved = {}  # random bytes: incompressible, deflate's worst case
    for name, spec in expected.items():
        shape = npzformat.expected_shape(name, spec)
        raw = rng.integers(0, 2 if kind.kind == "b" else 256, int(np.prod(shape)) * kind.itemsize,
                           dtype=np.uint8)  # fmt: skip
        saved[name] = raw.view(kind).reshape(shape)
    path = tmp_path_factory.mktemp("n") / "p.npz"
    (np.savez_compressed if compressed else np.savez)(path, **saved)
    assert path.stat().st_size <= arrays.size_needed(expected)
    got = arrays.load(path, expected)
    for name, array in saved.items():
        assert got[name].tobytes() == array.tobytes() and got[name].dtype == array.dtype


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cut=st.integers(0, 3000), flip=st.integers(0, 3000))
def test_whatever_bytes_arrive_the_answer_is_arrays_or_a_refusal(tmp_path_factory, data, cut,
                                                                  flip):  # fmt: skip
    base = bytearray(good(tmp_path_factory.mktemp("f") / "g.npz").read_bytes())
    candidates = [bytes(data), bytes(base[:cut]), bytes(base[:cut]) + bytes(data)]
    if flip < len(base):
        base[flip] ^= 0x5A
        candidates.append(bytes(base))
    for blob in candidates:
        try:
            got = arrays.load(io.BytesIO(blob), EXPECTED)
        except ArraysRefused as exc:
            assert "\n" not in str(exc)
        else:
            assert {k: v.shape for k, v in got.items()} == {"train": (120, 3), "test": (30, 3)}
