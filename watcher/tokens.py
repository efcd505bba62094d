"""A drop's token in `.staging/`, from its claim to the moment it goes.

    .staging/<token>/origin.json   what the drop is, where it came from, attempts
    .staging/<token>/drop/<name>   the drop as the user made it, untouched
    .staging/<token>/work/         our own copy: bundle/ (checked, hashed), prepared/
    .staging/<token>/storing       the store folder our copy is being moved into
    .staging/<token>/answer/       an answer being delivered (a note beside the drop)

A token appears complete (made as `.new-<token>`, then renamed) before the drop is
renamed into it: that rename is the claim, and of two watchers one wins. Each start
is counted in `origin.json` before any work, so a drop that keeps killing the master
can be set aside; an internal error is counted as a failure instead. The bundle is
stored under an id noted beforehand (`storing`), then its row commits, then the token
is forgotten, drop and all.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spool import bundles
from spool.layout import Spool, stamp, write_atomic
from watcher.drops import NOTES, Kind, Outcome, now

log = logging.getLogger(__name__)

STORING = "storing"  # in a token: the store folder it is being stored into

_tokens = itertools.count()


@dataclass(frozen=True)
class Origin:
    """`origin.json`: what the drop is, where it came from, how often it was tried."""

    kind: Kind
    name: str  # the drop's own name, under drop/
    source: str  # where it was dropped, relative to the spool's root
    hint: str | None = None  # the dataset named by the folder it was dropped into
    starts: int = 0  # processing began this often; a crash leaves its start counted
    failures: int = 0  # internal errors so far
    taken_at: str = ""
    reject_reason: str = ""  # answer with this reason, without reading the drop

    def started(self) -> Origin:
        return replace(self, starts=self.starts + 1)

    def unstarted(self) -> Origin:
        """This start ended without a crash (the machine's fault): not counted."""
        return replace(self, starts=0)

    def failed(self) -> Origin:
        """One more failure, which is not counted as a crash."""
        return replace(self, failures=self.failures + 1, starts=0)

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "hint": self.hint, "name": self.name, "starts": self.starts,
            "failures": self.failures, "source": self.source, "taken_at": self.taken_at,
            "reject_reason": self.reject_reason,
        }  # fmt: skip

    @classmethod
    def read(cls, token: Path) -> Origin | None:
        """The token's record, or None when it is missing or not ours."""
        try:
            data = json.loads((token / "origin.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not {"kind", "name", "source"} <= set(data):
            return None
        try:
            return cls(
                kind=data["kind"], name=data["name"], source=data["source"],
                hint=data.get("hint"), starts=int(data.get("starts", 0)),
                failures=int(data.get("failures", 0)), taken_at=data.get("taken_at", ""),
                reject_reason=data.get("reject_reason", ""),
            )  # fmt: skip
        except (TypeError, ValueError):
            return None


def save(token: Path, origin: Origin) -> None:
    write_atomic(token / "origin.json", json.dumps(origin.record()))


def claim(
    spool: Spool, path: Path, kind: Kind, hint: str | None, reject_reason: str
) -> Path | Outcome:
    """Rename a drop into a new token: the token, or why there is none."""
    marker = bundles.sibling_marker(path)  # another user's is not ours to remove
    if marker is not None:
        with contextlib.suppress(OSError):
            os.unlink(marker)
    name = f"{stamp()}-{os.getpid()}-{next(_tokens)}"
    fresh = spool.staging / f".new-{name}"
    (fresh / "drop").mkdir(parents=True)
    # an answer holds the drop beside its notes: a drop named like one is renamed
    kept = f"{path.name}-drop" if path.name in NOTES else path.name
    origin = Origin(
        kind=kind, hint=hint, name=kept, source=_relative(path, spool.root),
        taken_at=now(), reject_reason=reject_reason,
    )  # fmt: skip
    save(fresh, origin)
    token = spool.staging / name
    fresh.rename(token)
    try:
        path.rename(token / "drop" / kept)
    except FileNotFoundError:
        bundles.remove(token)  # gone meanwhile (another watcher, or its owner)
        return Outcome("gone", path.name, kind)
    except PermissionError:
        bundles.remove(token)
        log.warning("cannot take %s: datarun needs write permission on %s", path, path.parent)
        return Outcome("skipped", path.name, kind, "permission denied")
    return token


def restart(token: Path, origin: Origin) -> Origin:
    """Count this start, then clear what an earlier one left in work/."""
    origin = origin.started()
    save(token, origin)
    bundles.remove(token / "work")
    return origin


def storing(spool: Spool, token: Path, store_path: str) -> str:
    """Note in the token where its drop is about to be stored. Its row not being
    committed (we are here again), a folder noted by an earlier attempt that a
    crash interrupted belongs to nobody: remove it first (ids are never reused)."""
    marker = token / STORING
    if marker.is_file():
        earlier = marker.read_text(encoding="utf-8").strip()
        if earlier and earlier != store_path:
            bundles.remove(spool.absolute(earlier))
            log.info("removed %s, stored by an attempt that did not commit", earlier)
    write_atomic(marker, store_path)
    return store_path


def store(spool: Spool, source: Path, store_path: str, private: tuple[str, ...] = ()) -> Path:
    """Make our checked copy read-only (the `private` parts for the master only),
    then move it to its place in store/: it arrives there as it must stay."""
    target = spool.absolute(store_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    bundles.freeze(source)
    for part in private:
        bundles.private(source / part)
    source.chmod(0o700)  # a folder moved to another parent must be writable (non-root)
    source.rename(target)
    target.chmod(0o555)
    return target


def forget(token: Path) -> None:
    """The drop is registered or answered: remove the token, and all that is left in it."""
    trash = token.with_name(f".trash-{token.name}")
    token.rename(trash)
    bundles.remove(trash)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
