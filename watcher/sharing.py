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


def submission_folder(spool: Spool, conn: db.Conn, folder: Path, team: str) -> None:
    """Before anything is written into a submission's results folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if teams.challenge(conn):
        access.share(folder, teams.readers(conn, team))


def answer_folder(conn: db.Conn, folder: Path) -> None:
    """A rejected or waiting drop, with its note: its dropper's team's and the
    organizers'. The dropper is the owner of the drop inside."""
    if not teams.challenge(conn):
        return
    owner = _dropper(folder)
    team = teams.team_of_uids(conn).get(owner) if owner is not None else None
    readers = teams.readers(conn, team) if team else teams.organizer_uids(conn)
    access.share(folder, readers)


def reshare(spool: Spool, conn: db.Conn) -> int:
    """After teams or organizers changed: every folder shared again with whom it is
    now for. Returns how many folders."""
    access.prepare_spool(spool, teams.organizer_uids(conn))
    count = 0
    for row in teams.teams(conn):
        count += len(access.reshare_team(spool, row["name"], teams.readers(conn, row["name"])))
    by_uid = teams.team_of_uids(conn)
    organizers = teams.organizer_uids(conn)
    answers = [*spool.rejected.glob("*"), *spool.waiting.glob("*/*")]
    for folder in answers:
        if folder.is_dir() and not folder.is_symlink():
            owner = _dropper(folder)
            mine = by_uid.get(owner) if owner is not None else None
            access.share(folder, teams.readers(conn, mine) if mine else organizers)
            count += 1
    return count


def _dropper(answer: Path) -> int | None:
    for entry in answer.iterdir():
        if entry.name not in NOTES:
            return entry.lstat().st_uid
    return None
