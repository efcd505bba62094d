"""Who may drop what: the owner of a drop decides its team (`spool.teams`), organizers
alone drop datasets and choose priorities, and a dataset's phase and quotas hold for
participants (`spool.rules`). With no team registered, everyone is let in as before.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spool import db, rules, teams
from spool.errors import BundleError
from spool.manifests import SUBMISSION_MANIFEST, SubmissionManifest
from spool.registry import DatasetRow, Owner
from spool.teams import Dropper


@dataclass(frozen=True)
class Admitted:
    """Under which team and priority a submission is queued, and who dropped it."""

    team: str
    queue: str
    owner: Owner


def dropper(conn: db.Conn, drop: Path) -> Dropper:
    """The drop's owner as the filesystem records it: renaming does not change it, and
    only root can give a file away."""
    info = drop.lstat()
    who = teams.dropper(conn, info.st_uid)
    if who.challenge and not who.organizer and stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        # A hard link to someone else's archive would be taken as theirs.
        raise BundleError(f"{drop.name}: a file with other hard links; drop a copy of it")
    return who


def _member(who: Dropper) -> str:
    return f"{who.user} (uid {who.uid})"


def admit_dataset(who: Dropper) -> None:
    if who.challenge and not who.organizer:
        raise BundleError(
            f"only organizers drop datasets, and {_member(who)} is not one; ask an organizer "
            "(`datarun team list` shows them)"
        )


def admit_dropper(who: Dropper) -> None:
    """Before a submission is even unpacked: is its owner one of the participants?"""
    if who.challenge and who.team is None and not who.organizer:
        raise BundleError(
            f"{_member(who)} is in no team of this challenge; ask an organizer to add you "
            f"(`datarun team add TEAM --user {who.user}`), then drop it again"
        )


def admit_submission(who: Dropper, manifest: SubmissionManifest | None) -> Admitted:
    """The team and priority a submission is queued under, refused when the manifest
    names another team than its owner's."""
    asked_team = manifest.team if manifest else ""
    asked_queue = manifest.priority if manifest and "priority" in manifest.model_fields_set \
        else None  # fmt: skip
    owner = Owner(who.uid, who.user)
    if not who.challenge:
        return Admitted(asked_team, asked_queue or "low", owner)
    if who.organizer:  # submits for any team (a baseline, a team's late fix)
        return Admitted(asked_team or who.team or "", asked_queue or who.queue, owner)
    team = who.team or ""
    if asked_team and asked_team != team:
        raise BundleError(
            f"{SUBMISSION_MANIFEST}: team: says {asked_team!r}, but {_member(who)}, who "
            f"dropped it, is in team {team!r}; remove 'team' (your team is taken from who "
            "drops the bundle)"
        )
    notes: tuple[str, ...] = ()
    if asked_queue is not None and asked_queue != who.queue:
        notes = (f"{SUBMISSION_MANIFEST}: priority {asked_queue!r} was not taken: organizers "
                 f"set priorities; queued at {who.queue!r}, your team's",)  # fmt: skip
    return Admitted(team, who.queue, Owner(who.uid, who.user, notes))


def admit_now(conn: db.Conn, who: Dropper, dataset: DatasetRow, team: str) -> None:
    """The dataset's phase and the team's quotas, at the moment of registering; they
    hold in open mode too (a course's deadline), for all but root and datarun itself."""
    if not who.organizer:
        rules.check(conn, dataset.id, dataset.rules(), team, datetime.now(UTC))
