"""Public and private leaderboards: which one a reader may see, and the reveal.

In challenge mode (a team is registered) the public leaderboard shows each team's pick,
its best submission by validation score, and no test score until the dataset's
`closes_at` has passed or an organizer ran `datarun reveal`; then the picks are ranked
by their test score. The private leaderboard, every submission with every score, is for
organizers. With no team (open mode) the public leaderboard is every submission with
every score, as datarun always showed it. Migration 0012 holds the views.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spool import db, teams
from spool.errors import DatarunError

log = logging.getLogger(__name__)

TEST_COLUMNS = ("test_mean", "bagged_test")  # what the public must not see before reveal


@dataclass(frozen=True)
class Phase:
    challenge: bool  # a team is registered
    revealed: bool  # closes_at has passed, or an organizer revealed the test scores

    @property
    def test_public(self) -> bool:
        """Whether anyone may see the test scores of this dataset now."""
        return self.revealed or not self.challenge


OPEN = Phase(challenge=False, revealed=False)


@dataclass(frozen=True)
class Revealed:
    dataset: str
    revealed_at: datetime
    changed: bool  # False: it had been revealed before, at revealed_at


def phase(conn: db.Conn, dataset: str) -> Phase | None:
    """The dataset's phase now; None for an unknown dataset."""
    row = db.fetch_one(conn, "leaderboard_phase", {"dataset": dataset})
    if row is None:
        return None
    return Phase(challenge=bool(row["challenge"]), revealed=bool(row["revealed"]))


def public(conn: db.Conn, dataset: str) -> list[dict[str, Any]]:
    """The public leaderboard's rows, best first (unranked last)."""
    return db.fetch_all(conn, "public_leaderboard_of", {"dataset": dataset})


def private(conn: db.Conn, dataset: str) -> list[dict[str, Any]]:
    """Every submission with every score, and each team's pick (organizers only)."""
    return db.fetch_all(conn, "private_leaderboard_of", {"dataset": dataset})


def reveal(conn: db.Conn, dataset: str, by: str | None = None) -> Revealed:
    """Publish the dataset's test scores now: `revealed_at`, a row in dataset_changes
    and an event, in one transaction. The master's next results pass finds the dataset
    (`leaderboards_revealed_due`) and rewrites its public files."""
    who = by or teams.acting_user()
    with conn.transaction():
        row = db.fetch_one(conn, "dataset_reveal", {"dataset": dataset, "changed_by": who})
        if row is None:
            raise DatarunError(f"no dataset named {dataset!r} (see `datarun status`)")
        if row["changed"]:
            detail = {"revealed_at": row["revealed_at"].isoformat(), "by": who}
            db.execute(conn, "event_insert", {
                "kind": "dataset_revealed", "dataset_id": row["id"], "submission_id": None,
                "message": f"the test scores of {dataset} are public",
                "detail": json.dumps(detail),
            })  # fmt: skip
            # Followers of registrations (the demo, benchmarks) see it as they see those.
            db.execute(conn, "event_notify", {"payload": json.dumps(
                {"kind": "dataset_revealed", "dataset_id": row["id"]})})  # fmt: skip
    if row["changed"]:
        log.info("the test scores of %s are revealed", dataset)
    return Revealed(dataset, row["revealed_at"], bool(row["changed"]))
