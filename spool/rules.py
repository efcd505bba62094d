"""A dataset's phase and quotas: when it takes submissions, and how many per team.

They come from `dataset.toml` (top-level `opens_at`, `closes_at`, `submissions_per_day`,
`min_minutes_between`) or from an organizer (`datarun dataset set`), who may change
them on a registered dataset; each change is recorded with who made it and when.
Organizers are held to none of them. A day is a UTC calendar day, as on Kaggle: the
count starts again at midnight UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from spool import db
from spool.errors import BundleError, DatarunError
from spool.manifests import RULES as SETTINGS
from spool.manifests import Rules

__all__ = ["SETTINGS", "Recent", "Rules", "change", "check", "of", "parse_changes", "refusal"]


@dataclass(frozen=True)
class Recent:
    """A team's submissions to a dataset: how many today (UTC), and the latest."""

    today: int
    last_at: datetime | None


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def refusal(rules: Rules, recent: Recent, now: datetime) -> str | None:
    """Why a participant's submission is not accepted now, and when one will be; None
    when it is."""
    if rules.opens_at and now < rules.opens_at:
        return f"this dataset opens for submissions at {_when(rules.opens_at)}; drop it again then"
    if rules.closes_at and now >= rules.closes_at:
        return (f"this dataset closed for submissions at {_when(rules.closes_at)}; no more "
                "submissions are accepted")  # fmt: skip
    per_day = rules.submissions_per_day
    if per_day is not None and recent.today >= per_day:
        midnight = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1),
                                    datetime.min.time(), UTC)  # fmt: skip
        return (f"your team has made its {per_day} submission(s) of today (UTC) to this "
                f"dataset; the next is accepted from {_when(midnight)}")  # fmt: skip
    gap = rules.min_minutes_between
    if gap and recent.last_at is not None and now < recent.last_at + timedelta(minutes=gap):
        return (f"your team's last submission to this dataset was at {_when(recent.last_at)}; "
                f"submissions are at least {gap} minute(s) apart, so the next is accepted "
                f"from {_when(recent.last_at + timedelta(minutes=gap))}")  # fmt: skip
    return None


def of(row: dict[str, Any]) -> Rules:
    """A dataset row's rules (the columns of 0011_participants.sql)."""
    return Rules(**{key: row.get(key) for key in SETTINGS})


def check(conn: db.Conn, dataset_id: int, rules: Rules, team: str, now: datetime) -> None:
    """Refuse (BundleError) a participant's submission outside the dataset's phase or
    quotas. Duplicates and refused drops never became rows, so they do not count."""
    if rules == Rules():
        return
    row = db.fetch_one(conn, "team_recent", {"dataset_id": dataset_id, "team": team,
                                             "day": now.astimezone(UTC).date()})  # fmt: skip
    assert row is not None
    reason = refusal(rules, Recent(int(row["today"]), row["last_at"]), now)
    if reason is not None:
        raise BundleError(reason)


def parse_changes(assignments: list[str]) -> dict[str, Any]:
    """`key=value` pairs from the command line; `key=` or `key=none` removes a rule."""
    changes: dict[str, Any] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or key not in SETTINGS:
            raise DatarunError(
                f"{text!r}: expected SETTING=VALUE, the setting one of {', '.join(SETTINGS)} "
                "(e.g. closes_at=2026-12-24T18:00:00Z, submissions_per_day=5)"
            )
        value = value.strip()
        changes[key] = None if value.lower() in ("", "none") else value
    return changes


def change(
    conn: db.Conn, dataset: str, assignments: list[str], changed_by: str
) -> Rules:  # fmt: skip
    """Apply an organizer's changes to a registered dataset's rules, checked as a whole
    and recorded one row per setting changed; returns the rules now in force."""
    changes = parse_changes(assignments)
    with conn.transaction():
        row = db.fetch_one(conn, "dataset_rules_for_update", {"name": dataset})
        if row is None:
            raise DatarunError(f"no dataset {dataset!r}; `datarun status` lists them")
        before = of(row)
        try:
            after = Rules(**{**before.rules().model_dump(), **changes})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "rules"
            raise DatarunError(f"{where}: {first['msg']}") from None
        db.execute(conn, "dataset_rules_update", {"id": row["id"], **after.model_dump()})
        for key in SETTINGS:
            old, new = getattr(before, key), getattr(after, key)
            if old != new:
                db.execute(conn, "dataset_change_insert", {
                    "dataset_id": row["id"], "setting": key, "changed_by": changed_by,
                    "old_value": None if old is None else str(old),
                    "new_value": None if new is None else str(new),
                })  # fmt: skip
    return after
