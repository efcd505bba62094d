"""The POSIX ACL xattr format: entries sorted as the kernel wants, the mask, round trips,
and the ACLs the kernel would refuse refused first."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spool import acl
from spool.acl import GROUP, GROUP_OBJ, MASK, OTHER, UNDEFINED, USER, USER_OBJ, Entry
from spool.errors import AccessError, DatarunError


def test_the_bytes_are_the_kernels_format():
    data = acl.encode(acl.acl(7, 0, 0, {1001: 5}))
    # version 2, then (tag u16, perm u16, id u32) little-endian, sorted by tag then id
    assert data == struct.pack(
        "<I" + "HHI" * 5, 2, 0x01, 7, UNDEFINED, 0x02, 5, 1001, 0x04, 0, UNDEFINED,
        0x10, 5, UNDEFINED, 0x20, 0, UNDEFINED,
    )  # fmt: skip


def test_entries_are_sorted_by_tag_then_id():
    shuffled = [Entry(OTHER, UNDEFINED, 0), Entry(USER, 2000, 5), Entry(MASK, UNDEFINED, 7),
                Entry(GROUP, 10, 4), Entry(USER, 1000, 7), Entry(GROUP_OBJ, UNDEFINED, 0),
                Entry(USER_OBJ, UNDEFINED, 7)]  # fmt: skip
    decoded = acl.decode(acl.encode(shuffled))
    assert [(e.tag, e.id) for e in decoded] == [
        (USER_OBJ, UNDEFINED), (USER, 1000), (USER, 2000), (GROUP_OBJ, UNDEFINED),
        (GROUP, 10), (MASK, UNDEFINED), (OTHER, UNDEFINED),
    ]  # fmt: skip


def test_the_mask_covers_named_users_and_the_group():
    entries = acl.acl(7, 1, 0, {5: 4, 6: 2})
    assert Entry(MASK, UNDEFINED, 7) in entries
    assert (
        acl.describe(entries) == "user::rwx,user:5:r--,user:6:-w-,group::--x,mask::rwx,other::---"
    )


def test_without_named_users_there_is_no_mask():
    assert [e.tag for e in acl.acl(7, 5, 0)] == [USER_OBJ, GROUP_OBJ, OTHER]


@given(
    st.integers(0, 7), st.integers(0, 7), st.integers(0, 7),
    st.dictionaries(st.integers(0, UNDEFINED - 1), st.integers(0, 7), max_size=20),
)  # fmt: skip
def test_round_trip(owner, group, other, users):
    entries = acl.acl(owner, group, other, users)
    assert acl.decode(acl.encode(entries)) == entries


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([Entry(USER_OBJ, UNDEFINED, 7), Entry(OTHER, UNDEFINED, 0)], "group::"),
        ([*acl.acl(7, 0, 0), Entry(USER, 5, 5)], "mask"),
        ([*acl.acl(7, 0, 0, {5: 5}), Entry(USER, 5, 7)], "twice"),
        ([*acl.acl(7, 0, 0), Entry(OTHER, UNDEFINED, 1)], "other::"),
        ([*acl.acl(7, 0, 0, {5: 5})[:-1], Entry(OTHER, UNDEFINED, 8)], "perm 8"),
        ([*acl.acl(7, 0, 0, {5: 5}), Entry(GROUP, UNDEFINED, 5)], "invalid id"),
        ([*acl.acl(7, 0, 0), Entry(0x40, UNDEFINED, 5)], "tag 0x40"),
    ],
)  # fmt: skip
def test_what_the_kernel_would_refuse_is_refused(entries, why):
    with pytest.raises(AccessError, match=why):
        acl.encode(entries)


@pytest.mark.parametrize(
    "data", [b"", b"\x02\x00\x00", struct.pack("<I", 1), struct.pack("<IHH", 2, 1, 7)]
)
def test_malformed_bytes_are_a_datarun_error(data):
    with pytest.raises(DatarunError):
        acl.decode(data)


def test_describe_names_every_entry():
    entries = sorted([*acl.acl(7, 3, 1, {42: 5}), Entry(GROUP, 7, 4)])
    assert acl.describe(entries) == (
        "user::rwx,user:42:r-x,group::-wx,group:7:r--,mask::rwx,other::--x"
    )
    assert acl.describe(None) == "none"


def test_a_teams_folders_are_its_labels_only(tmp_path: Path) -> None:
    """`lions.forest.v1` is team lions'; `lions.v1` (a submission named lions, without a
    team) and `lionsx.forest.v1` are not."""
    from spool import access
    from spool.layout import Spool

    spool = Spool(tmp_path / "spool")
    for name in ("lions.forest.v1", "lions.v1", "lionsx.forest.v1"):
        (spool.results / "iris" / name).mkdir(parents=True)
    shared = access.reshare_team(spool, "lions", [54321])
    assert [p.name for p in shared] == ["lions.forest.v1"]
    assert acl.Entry(acl.USER, 54321, 5) in (acl.read(shared[0]) or [])
    assert acl.read(spool.results / "iris" / "lions.v1") is None
