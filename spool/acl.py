"""POSIX ACLs as Linux stores them: the `system.posix_acl_access` and
`system.posix_acl_default` extended attributes, read and written with `os.getxattr` /
`os.setxattr` (there is no `setfacl` or ACL package to rely on).

The format (the kernel's `posix_acl_xattr_header` and `posix_acl_xattr_entry`, all
little-endian): a u32 version, 2; then one entry per permission: u16 tag, u16 perm
(r=4, w=2, x=1), u32 id (a uid or gid for USER and GROUP, 0xFFFFFFFF otherwise). The
kernel refuses entries out of order (by tag, then id), a missing USER_OBJ, GROUP_OBJ or
OTHER, and named entries without a MASK; `encode` sorts and checks before it does.
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spool.errors import AccessError

VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED = 0xFFFFFFFF  # the id of USER_OBJ, GROUP_OBJ, MASK and OTHER
ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_NAMED = (USER, GROUP)
_NAMES = {USER_OBJ: "user", USER: "user", GROUP_OBJ: "group", GROUP: "group",
          MASK: "mask", OTHER: "other"}  # fmt: skip
# errnos that mean "this filesystem (or mount) keeps no ACLs"
UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


@dataclass(frozen=True, order=True)
class Entry:
    tag: int
    id: int
    perm: int  # 0..7, rwx

    def __str__(self) -> str:
        who = str(self.id) if self.tag in _NAMED else ""
        return f"{_NAMES.get(self.tag, hex(self.tag))}:{who}:{_rwx(self.perm)}"


def _rwx(perm: int) -> str:
    return "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))


def acl(owner: int, group: int, other: int, users: Mapping[int, int] | None = None) -> list[Entry]:
    """The entries of an ACL: the owner's, the owning group's and others' permissions,
    plus named users' (uid -> perm). With named users, the mask is the union of their
    and the group's permissions (nothing named is cut back by it)."""
    entries = [Entry(USER_OBJ, UNDEFINED, owner), Entry(GROUP_OBJ, UNDEFINED, group),
               Entry(OTHER, UNDEFINED, other)]  # fmt: skip
    named = dict(users or {})
    entries += [Entry(USER, uid, perm) for uid, perm in named.items()]
    if named:
        mask = group
        for perm in named.values():
            mask |= perm
        entries.append(Entry(MASK, UNDEFINED, mask))
    return sorted(entries)


def encode(entries: Iterable[Entry]) -> bytes:
    """The xattr value of these entries, sorted as the kernel wants them; AccessError
    for an ACL it would refuse."""
    ordered = sorted(entries)
    _check(ordered)
    return _HEADER.pack(VERSION) + b"".join(_ENTRY.pack(e.tag, e.perm, e.id) for e in ordered)


def _check(entries: list[Entry]) -> None:
    tags = [e.tag for e in entries]
    for e in entries:
        if e.tag not in _NAMES or not 0 <= e.perm <= 7:
            raise AccessError(f"invalid ACL entry: tag {e.tag:#x}, perm {e.perm}")
        if (e.tag in _NAMED) != (e.id != UNDEFINED) or not 0 <= e.id <= UNDEFINED:
            raise AccessError(f"invalid id {e.id} in the ACL entry {e}")
    for required in (USER_OBJ, GROUP_OBJ, OTHER):
        if tags.count(required) != 1:
            raise AccessError(
                f"an ACL needs exactly one {_NAMES[required]}:: entry: {describe(entries)}"
            )
    if tags.count(MASK) > 1 or (tags.count(MASK) == 0 and any(t in _NAMED for t in tags)):
        raise AccessError(f"an ACL with named entries needs one mask: {describe(entries)}")
    keys = [(e.tag, e.id) for e in entries]
    if len(set(keys)) != len(keys):
        raise AccessError(f"an ACL names the same user or group twice: {describe(entries)}")


def decode(data: bytes) -> list[Entry]:
    """The entries of an xattr value; AccessError if it is not a version 2 ACL."""
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
        raise AccessError(f"an ACL of {len(data)} bytes is not a header and whole entries")
    (version,) = _HEADER.unpack_from(data)
    if version != VERSION:
        raise AccessError(f"ACL version {version}, not {VERSION}")
    return [Entry(tag, ident, perm)
            for tag, perm, ident in _ENTRY.iter_unpack(data[_HEADER.size :])]  # fmt: skip


def describe(entries: Iterable[Entry] | None) -> str:
    """As getfacl's short form: user::rwx,user:1001:r-x,group::---,mask::r-x,other::---"""
    return "none" if entries is None else ",".join(str(e) for e in entries)


def read(path: int | str | Path, *, default: bool = False) -> list[Entry] | None:
    """The access (or default) ACL of an open descriptor or a path (links not
    followed); None when it has none beyond its mode."""
    try:
        data = os.getxattr(path, DEFAULT if default else ACCESS, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA or exc.errno in UNSUPPORTED:
            return None
        raise
    return decode(data)


def write(fd: int, entries: Iterable[Entry] | None, *, default: bool = False) -> None:
    """Set (or, with None, remove) the access or default ACL of an open descriptor.
    Setting the access ACL also sets the mode's permission bits (group = the mask)."""
    name = DEFAULT if default else ACCESS
    if entries is None:
        try:
            os.removexattr(fd, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA and exc.errno not in UNSUPPORTED:
                raise
        return
    os.setxattr(fd, name, encode(entries))


def supported(path: Path) -> bool:
    """Does the filesystem of the folder `path` keep POSIX ACLs? Tried on a probe file
    with a named entry (what only real ACL support stores); on the folder itself when
    no probe can be made there."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".acl-probe-", dir=path)
    except OSError:
        try:
            os.getxattr(path, ACCESS)
        except OSError as exc:
            return exc.errno not in UNSUPPORTED
        return True
    try:
        write(fd, acl(6, 0, 0, {os.geteuid(): 4}))
        return True
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            return False
        raise
    finally:
        os.close(fd)
        os.unlink(probe)
