"""A dataset's leaderboard files, public and private (`spool.leaderboards` says which
rows each holds).

    results/<dataset>/leaderboard.csv|html           the public leaderboard
    results/<dataset>/private/leaderboard.csv|html   every submission, every score, picks

Open mode (no team registered): the public files are what they always were, every
submission with its test mean and bagged scores. Challenge mode: one row per team, its
pick, and no test score anywhere in the public files (not in a column, not in the page's
charts, which draw validation scores only) until the dataset closes or is revealed;
then the picks ranked by their test score. The private files are written in both modes:
one code path, and organizers' tools find them whatever the mode; in open mode they
show nothing the public files do not, besides each team's pick.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from spool import access, db, leaderboards, teams
from spool.layout import Spool, write_atomic, write_changed
from watcher import html

log = logging.getLogger(__name__)

COLUMNS = ["rank", "submission", "team", "state", "folds_scored", "folds", "metric",
           "valid_mean", "valid_std", "test_mean", "bagged_valid", "bagged_test"]  # fmt: skip
TEST_COLUMNS = {"test_mean", "bagged_test"}
PICK_COLUMNS = ["pick", "final_rank"]  # the private file's, after COLUMNS


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def board_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The rows as CSV; an unranked submission (failed, not yet scored) has no rank."""
    fields = {"submission": "label", "folds_scored": "scored"}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_cell(r[fields.get(c, c)]) for c in columns])
    return buffer.getvalue()


def _boards(metric: str, phase: leaderboards.Phase) -> tuple[html.Board, html.Board]:
    """The public page's and the private page's columns and ranking sentence."""
    m = f"<b>{escape(metric)}</b>"
    if not phase.challenge:
        public = html.Board()  # open mode: as always, every submission, every score
    elif phase.revealed:
        public = html.Board(ranking=f"Each team's pick, its best submission by the mean "
                            f"validation {m}, ranked by its mean test {m}")  # fmt: skip
    else:
        public = html.Board(ranking=f"Each team's best submission, ranked by the mean "
                            f"validation {m} over folds; the test scores are published "
                            "when the challenge closes", test=False)  # fmt: skip
    private = html.Board(title="private leaderboard", picks=True,
                         ranking=f"Private: every submission, ranked by the mean validation "
                         f"{m}; final rank: each team's pick by its mean test {m}")  # fmt: skip
    return public, private


def write(spool: Spool, database: db.Database, dataset: str, found: dict[str, Any] | None) -> None:
    """Write the dataset's public and private files; `found`: its row (dataset_for_folds)."""
    # One transaction, so one now(): the phase and the rows agree. The public rows are
    # written and dropped before the private ones are read: a board of 10,000
    # submissions is the master's largest allocation, so it never holds both.
    with database.transaction() as conn:
        phase = leaderboards.phase(conn, dataset) or leaderboards.OPEN
        fold_rows = db.fetch_all(conn, "leaderboard_fold_scores", {"dataset": dataset})
        error_rows = db.fetch_all(conn, "leaderboard_errors", {"dataset": dataset})
        organizers = teams.organizer_uids(conn) if phase.challenge else None
        folds: dict[str, dict[int, float]] = defaultdict(dict)
        for r in fold_rows:  # validation scores only
            folds[r["label"]][int(r["fold"])] = r["value"]
        del fold_rows
        metric = found["metrics"][0] if found else "score"
        public_page, private_page = _boards(metric, phase)
        page: dict[str, Any] = {
            "metric": metric, "errors": {r["label"]: r["error"] for r in error_rows},
            "updated": datetime.now(UTC),
            "n_folds": int(found["summary"].get("n_folds") or 0) if found else 0,
            "lower_is_better": bool(found["lower_is_better"]) if found else False,
        }  # fmt: skip
        public = leaderboards.public(conn, dataset)
        shown = {r["label"] for r in public}  # the scale of the charts: only what is shown
        columns = COLUMNS if phase.test_public else [c for c in COLUMNS if c not in TEST_COLUMNS]
        folder = spool.results / dataset
        write_atomic(folder / "leaderboard.html",
                     html.render(dataset, rows=public, board=public_page, **page,
                                 folds={k: v for k, v in folds.items() if k in shown}))  # fmt: skip
        write_changed(folder / "leaderboard.csv", board_csv(public, columns))
        del public, shown
        private = leaderboards.private(conn, dataset)
        secret = private_folder(spool, dataset, organizers)
        write_atomic(secret / "leaderboard.html",
                     html.render(dataset, rows=private, folds=dict(folds), board=private_page,
                                 **page))  # fmt: skip
        write_changed(secret / "leaderboard.csv", board_csv(private, COLUMNS + PICK_COLUMNS))
    with database.transaction() as conn:  # a later close or reveal is then found again
        db.execute(conn, "leaderboard_written",
                   {"dataset": dataset, "revealed": phase.test_public})  # fmt: skip


def private_folder(spool: Spool, dataset: str, organizers: list[int] | None) -> Path:
    """results/<dataset>/private/, made 0700 (in a challenge, shared with the
    organizers) when it is made; an existing one keeps its mode and ACLs (`datarun team`
    shares it again when the organizers change)."""
    folder = spool.private_results(dataset)
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another writer made it meanwhile
        else:
            folder.chmod(0o700)  # whatever the umask
            if organizers is not None:
                access.share(folder, organizers)
    return folder


def revealed_due(database: db.Database) -> dict[str, list[dict[str, Any]]]:
    """Datasets whose test scores became public or private since their files were last
    written, each with its submissions (their files show test scores or not, too)."""
    with database.connection() as conn:
        due = db.fetch_all(conn, "leaderboards_revealed_due")
        return {str(r["name"]): db.fetch_all(conn, "dataset_submissions", {"dataset": r["name"]})
                if r["written"] else [] for r in due}  # fmt: skip
