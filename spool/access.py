"""Who reads what in the spool: modes and POSIX ACLs, so that the teams of a challenge,
who share one spool, never read each other's work (docs/architecture.md, "Who reads
what").

The master's user owns the spool's folders, and a file's owner may set its ACLs: none
of this needs root. Callers pass uids (organizers, a team's members); nothing here
reads the database. A spool that was never prepared keeps today's modes.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from spool import acl
from spool.acl import Entry, decode, describe, encode, supported
from spool.errors import AccessError, AclUnsupported
from spool.layout import Spool, blocking_ancestor

__all__ = [
    "decode", "describe", "encode", "open_inbox", "prepare_spool", "reshare_team", "share",
    "supported",
]  # fmt: skip

log = logging.getLogger(__name__)

RX, RWX = 5, 7
INBOX_MODE = 0o1733  # anyone may create, nobody else may list, rename or remove
PRIVATE = "private"  # results/<dataset>/private/: the organizers' only


def share(folder: Path, readers: Sequence[int]) -> None:
    """Make `folder` its owner's (0700), readable and traversable by exactly these
    users: named entries r-x, replacing any earlier ones (a member removed from a team
    loses access at once). Files inside keep their modes: the folder gates them."""
    owner = _owner(folder)
    _apply(folder, 0o700, {uid: RX for uid in _uids(readers) if uid != owner}, None)


def reshare_team(spool: Spool, team: str, readers: Sequence[int]) -> list[Path]:
    """`share` every results folder of `team` (`results/*/<team>.*`) with `readers`,
    after its membership changed. Returns the folders."""
    if not team or "." in team or "/" in team or team.startswith("."):
        raise AccessError(f"{team!r} is not a team's name (no '.' or '/', not empty)")
    shared = []
    for dataset in _folders(spool.results):
        for folder in _folders(dataset):
            parts = folder.name.split(".")  # <team>.<name>.v<N>: names hold no '.'
            if len(parts) == 3 and parts[0] == team:
                share(folder, readers)
                shared.append(folder)
    log.info("results of team %s shared with %d users: %d folders", team, len(readers),
             len(shared))  # fmt: skip
    return shared


def open_inbox(spool: Spool, dataset_name: str, organizers: Sequence[int]) -> None:
    """A registered dataset's inbox, `incoming/submissions/<dataset>/` (participants
    create, nobody lists, organizers read), and its public `results/<dataset>/`
    (its `private/` the organizers' only, when there is one). Made if missing."""
    if not dataset_name or "/" in dataset_name or dataset_name.startswith("."):
        raise AccessError(f"{dataset_name!r} is not a dataset's name")
    organizers = _uids(organizers)
    inbox = spool.incoming_submissions / dataset_name
    inbox.mkdir(exist_ok=True)
    _apply(inbox, INBOX_MODE, {uid: RWX for uid in organizers}, _drop_default(spool, organizers))
    results = spool.results / dataset_name
    results.mkdir(parents=True, exist_ok=True)
    _apply(results, 0o755, {}, None)
    if (results / PRIVATE).is_dir() and not (results / PRIVATE).is_symlink():
        share(results / PRIVATE, organizers)


def prepare_spool(
    spool: Spool, organizers: Sequence[int], *, runners: Sequence[int] | None = None
) -> None:
    """Set every fixed folder's mode and ACLs, each existing dataset's inbox and
    results folder included. Idempotent, and cheap (a few dozen system calls per
    dataset): run it again whenever the organizers change. `runners`: users besides
    the master who read `predictions/` (default: `datarun-kit`, who scores RAMP kits,
    when this process is root)."""
    spool.create()
    if not supported(spool.root):
        raise AclUnsupported(
            f"the spool's filesystem ({spool.root}) keeps no POSIX ACLs, which keep the "
            "teams apart: mount it with ACLs (ext4 and xfs have them by default; NFS v4, "
            "or v3 with NFSACL) or move the spool to a filesystem that has them"
        )
    organizers = _uids(organizers)
    for top in (spool.root / "incoming", spool.results, spool.rejected, spool.waiting):
        _apply(top, 0o755, {}, None)  # traversed by everyone on the way to their own
    # Datarun's and its runners' only: runners read and write as the folder's group.
    # Organizers "see everything": the code and predictions too (not a dataset's
    # private parts, its test labels: those are the master's alone, `bundles.private`).
    _private(spool.store, organizers)
    _private(spool.predictions,
             [*(_kit_reader() if runners is None else _uids(runners)), *organizers])  # fmt: skip
    _apply(spool.staging, 0o700, {}, None)
    default = _drop_default(spool, organizers)
    org_rwx = {uid: RWX for uid in organizers}
    _apply(spool.incoming_datasets, 0o700, org_rwx, default)
    _apply(spool.incoming_submissions, INBOX_MODE, org_rwx, default)
    for results in _folders(spool.results):
        inbox = spool.incoming_submissions / results.name
        if inbox.is_dir() and not inbox.is_symlink():  # registration made both
            open_inbox(spool, results.name, organizers)
        elif (results / PRIVATE).is_dir() and not (results / PRIVATE).is_symlink():
            share(results / PRIVATE, organizers)
    blocked = blocking_ancestor(spool.root / "x")
    if blocked is not None:
        log.warning("users cannot reach the spool: %s is not traversable by others", blocked)
    log.info("spool %s prepared for %d organizers", spool.root, len(organizers))


# ---- helpers -------------------------------------------------------------------------


def _private(folder: Path, readers: Iterable[int]) -> None:
    """Others lose every right; the owner keeps all and the group what it had (runners
    in the spool's group still read, and write where they did)."""
    mode = (folder.stat().st_mode & 0o070) | 0o700
    owner = _owner(folder)
    _apply(folder, mode, {uid: RX for uid in readers if uid != owner}, None)


def _drop_default(spool: Spool, organizers: Sequence[int]) -> list[Entry]:
    """The default ACL of the drop folders: what a user creates in them is readable by
    its creator, the organizers and the master (which must copy it), nobody else;
    the umask does not apply under a default ACL."""
    named = {uid: RWX for uid in organizers}
    master = _owner(spool.root)
    if master != 0:  # root reads everything anyway
        named[master] = RWX
    return acl.acl(RWX, 0, 0, named)


def _apply(folder: Path, mode: int, users: Mapping[int, int], default: list[Entry] | None) -> None:
    """Set a folder's mode (special bits included), its access ACL (named `users`, or
    none), and its default ACL (or none), through a descriptor: a link is refused."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(folder, flags)
    except OSError as exc:
        raise AccessError(f"cannot open the spool folder {folder}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)  # first: an ACL set afterwards keeps the sticky bit
        bits = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
        acl.write(fd, acl.acl(*bits, users) if users else None)
        acl.write(fd, default, default=True)
    except OSError as exc:
        raise _failed(folder, exc, users) from exc
    finally:
        os.close(fd)


def _failed(folder: Path, exc: OSError, users: Mapping[int, int]) -> AccessError:
    wanted = describe(acl.acl(7, 0, 0, users)) if users else "no ACL"
    if exc.errno in acl.UNSUPPORTED:
        return AclUnsupported(
            f"cannot give {folder} the ACL {wanted}: its filesystem keeps no POSIX ACLs "
            f"({exc.strerror}); mount it with ACLs (NFS v4, or v3 with NFSACL) or move "
            "the spool to a filesystem that has them"
        )
    if exc.errno == errno.EPERM:
        return AccessError(
            f"cannot set the permissions of {folder}: only its owner (uid "
            f"{_owner(folder)}) or root may; run this as the spool's owner"
        )
    return AccessError(f"cannot set the permissions of {folder} ({wanted}): {exc.strerror}")


def _kit_reader() -> list[int]:
    """A root master scores RAMP kits as `datarun-kit`, in a root that binds
    predictions/: that user must traverse it."""
    from spool import kitsandbox

    ids = kitsandbox.kit_ids()
    return [] if ids is None else [ids[0]]


def _owner(path: Path) -> int:
    return path.lstat().st_uid


def _uids(uids: Iterable[int]) -> list[int]:
    found = sorted({int(uid) for uid in uids})
    bad = [uid for uid in found if not 0 <= uid < acl.UNDEFINED]
    if bad:
        raise AccessError(f"not a uid: {bad[0]}")
    return found


def _folders(parent: Path) -> list[Path]:
    """The visible folders of `parent` (not links), sorted."""
    try:
        children = sorted(parent.iterdir())
    except FileNotFoundError:
        return []
    return [c for c in children if not c.name.startswith(".") and c.is_dir()
            and not c.is_symlink()]  # fmt: skip
