"""Teams of Unix users: who dropped a file decides whose it is.

On a shared mount the operating system already knows who wrote each file, so datarun
has no accounts and no logins: a team is a set of user ids, stored in PostgreSQL, and
the owner of a drop (which only root can change) names its team. Members of an
organizers' team drop datasets, submit for any team and set priorities. With no team
at all, datarun is open, as it was: one user, or people who trust each other.
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass
from typing import Any

from spool import db
from spool.errors import DatarunError
from spool.manifests import NAME_PATTERN


@dataclass(frozen=True)
class User:
    uid: int
    name: str


@dataclass(frozen=True)
class Dropper:
    """Who owns a drop, as far as datarun is concerned."""

    uid: int
    user: str
    challenge: bool  # some team exists: identities are checked
    team: str | None  # the owner's team; None: in none
    organizer: bool  # may drop datasets, submit for any team, choose a priority
    queue: str  # the priority the owner's team is given ("low" without a team)


def user(spec: str) -> User:
    """A user named on the command line: a login name, or a numeric uid (for users
    known only on the machines that mount the spool)."""
    if spec.isdigit():
        uid = int(spec)
        try:
            return User(uid, pwd.getpwuid(uid).pw_name)
        except KeyError:
            return User(uid, spec)
    try:
        return User(pwd.getpwnam(spec).pw_uid, spec)
    except KeyError:
        raise DatarunError(
            f"no user {spec!r} on this machine; give their numeric uid instead"
        ) from None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def dropper(conn: db.Conn, uid: int) -> Dropper:
    """The owner `uid` of a drop. Root and the master's own user (which drops a RAMP
    kit's submissions) are datarun itself: organizers, whether or not in a team."""
    row = db.fetch_one(conn, "dropper", {"uid": uid})
    assert row is not None
    itself = uid in (0, os.geteuid())
    return Dropper(
        uid=uid, user=user_name(uid), challenge=bool(row["challenge"]), team=row["team"],
        organizer=bool(row["organizer"]) or itself, queue=row["queue"] or "low",
    )  # fmt: skip


def add(
    conn: db.Conn, name: str, users: list[User], *, organizer: bool | None = None,
    queue: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Make the team if it is new, set what is given, add the users (each in one team)."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise DatarunError(
            f"{name!r} cannot name a team: use up to 64 letters (a-z, A-Z), digits, '-' and "
            "'_', starting with a letter or digit"
        )
    with conn.transaction():
        team = db.fetch_one(conn, "team_upsert",
                            {"name": name, "organizer": organizer, "queue": queue})  # fmt: skip
        for u in users:
            other = db.fetch_one(conn, "member_team", {"uid": u.uid})
            if other is not None and other["team"] != name:
                raise DatarunError(
                    f"{u.name} (uid {u.uid}) is in team {other['team']!r} already; a user is "
                    f"in one team: `datarun team remove {other['team']} --user {u.name}` first"
                )
            db.execute(conn, "member_insert", {"uid": u.uid, "user_name": u.name, "team": name})
    assert team is not None
    return team


def remove(conn: db.Conn, name: str, users: list[User]) -> list[str]:
    """Remove these users from the team, or (no user named) the team itself; returns
    what was removed. Submissions keep the team they were made under."""
    with conn.transaction():
        if users:
            gone = [db.fetch_one(conn, "member_delete", {"uid": u.uid, "team": name})
                    for u in users]  # fmt: skip
            missing = [u.name for u, row in zip(users, gone, strict=True) if row is None]
            if missing:
                raise DatarunError(f"not in team {name!r}: {', '.join(missing)}")
            return [u.name for u in users]
        if db.fetch_one(conn, "team_delete", {"name": name}) is None:
            raise DatarunError(f"no team {name!r}; `datarun team list` shows them")
        return [name]


def teams(conn: db.Conn) -> list[dict[str, Any]]:
    return db.fetch_all(conn, "team_list")


def organizer_uids(conn: db.Conn) -> list[int]:
    return [int(r["uid"]) for r in db.fetch_all(conn, "organizer_uids")]


def acting_user() -> str:
    """Who runs this command, for the record of what organizers changed."""
    me = user_name(os.geteuid())
    sudo = os.environ.get("SUDO_USER")
    return f"{me} (sudo by {sudo})" if sudo and sudo != me else me


def challenge(conn: db.Conn) -> bool:
    """Whether any team exists: then who drops what is checked, and the spool's folders
    are shared by team (`spool.access`)."""
    row = db.fetch_one(conn, "challenge")
    return bool(row and row["challenge"])


def readers(conn: db.Conn, team: str) -> list[int]:
    """Who reads a team's results: its members and the organizers."""
    return [int(r["uid"]) for r in db.fetch_all(conn, "team_readers", {"team": team})]
