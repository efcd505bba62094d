"""Who reads what, applied as the master writes: in a challenge (some team exists)
each submission's results and each answer to a drop are shared with the dropper's
team and the organizers only, and a new dataset's inbox takes drops without letting
anyone list them (`spool.access` sets the modes and ACLs; `spool.teams` knows who is
in which team). In open mode nothing changes: folders keep today's modes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from spool import access, db, teams
from spool.layout import Spool
from watcher.drops import NOTES

log = logging.getLogger(__name__)


def dataset_opened(spool: Spool, conn: db.Conn, name: str) -> None:
    if teams.challenge(conn):
        access.open_inbox(spool, name, teams.organizer_uids(conn))


def submission_folder(
    spool: Spool, conn: db.Conn, folder: Path, team: str, challenge: bool
) -> None:  # fmt: skip
    """Before anything is written into a submission's results folder; `challenge`: as
    the registrar already read it with the dropper (`teams.dropper`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if challenge:
        access.share(folder, teams.readers(conn, team))


def answer_folder(conn: db.Conn, folder: Path) -> None:
    """A rejected or waiting drop, with its note: its dropper's team's and the
    organizers'. The dropper is the owner of the drop inside."""
    owner = _dropper(folder)
    who = teams.dropper(conn, owner) if owner is not None else None
    if (who is not None and not who.challenge) or (who is None and not teams.challenge(conn)):
        return
    access.share(folder, teams.readers(conn, who.team) if who and who.team
                 else teams.organizer_uids(conn))  # fmt: skip


def reshare(spool: Spool, conn: db.Conn) -> int:
    """After teams or organizers changed: every folder shared again with whom it is
    now for. Returns how many folders. The teams are read once."""
    rows = teams.teams(conn)
    organizers = {int(uid) for r in rows if r["organizer"] for uid in r["uids"]}
    readers = {r["name"]: sorted(organizers | {int(uid) for uid in r["uids"]}) for r in rows}
    by_uid = {int(uid): r["name"] for r in rows for uid in r["uids"]}
    access.prepare_spool(spool, sorted(organizers))
    count = sum(len(access.reshare_team(spool, name, who)) for name, who in readers.items())
    for folder in [*spool.rejected.glob("*"), *spool.waiting.glob("*/*")]:
        if folder.is_dir() and not folder.is_symlink():
            owner = _dropper(folder)
            mine = by_uid.get(owner) if owner is not None else None
            access.share(folder, readers[mine] if mine else sorted(organizers))
            count += 1
    return count


def _dropper(answer: Path) -> int | None:
    for entry in answer.iterdir():
        if entry.name not in NOTES:
            return entry.lstat().st_uid
    return None
