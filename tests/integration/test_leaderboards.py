"""Public and private leaderboards (issue 17): in challenge mode the public files, view and
`datarun leaderboard` show each team once, its best submission by validation, and no
test score until the dataset closes or `datarun reveal`; then the picks ranked by their
test score. Registration is real (watcher); the scores are planted in the tables the
master fills, so that a team's best validation submission is not its best test one and
the test ranking differs from the validation ranking."""

from __future__ import annotations

import csv
import json
import os
import pwd
import stat
import time
from pathlib import Path

import pytest

from spool import db
from spool.layout import Spool
from tests.helpers.cli import in_process
from tests.integration.test_fair_share import drop_submissions, registered_iris
from watcher.results import Results
from watcher.sweeper import Sweeper

# name -> (valid mean, test mean) of accuracy. Picks by validation: a000 (a's best valid,
# not its best test), b000 (tied with b001 on validation: the earlier), c000. Validation
# ranks them a, c, b; test ranks them b, c, a. Best test per team would give b, a, c.
PLANTED = {
    "a000": (0.90, 0.70123), "a001": (0.85, 0.95321),
    "b000": (0.80, 0.88457), "b001": (0.80, 0.60789), "b002": (0.70, 0.99135),
    "c000": (0.88, 0.80246),
}  # fmt: skip
PICKS = {"a": "a.a000.v1", "b": "b.b000.v1", "c": "c.c000.v1"}
BY_VALID = ["a.a000.v1", "c.c000.v1", "b.b000.v1"]
BY_TEST = ["b.b000.v1", "c.c000.v1", "a.a000.v1"]
STEP = [-0.01, 0.0, 0.01]  # fold k's score: the mean + STEP[k]


def planted_test_values() -> list[float]:
    """Every test number planted: means, bagged, each fold's."""
    out = []
    for _, test in PLANTED.values():
        out += [test, test + 0.00222] + [test + s for s in STEP]
    return out


def plant(url: str) -> None:
    """Every fold scored, with the PLANTED means; the results files count as written,
    so that a results pass rewrites only the leaderboards owed."""
    with db.connect(url) as conn, conn.transaction():
        subs = conn.execute("select id, name from submissions").fetchall()
        for sub in subs:
            valid, test = PLANTED[sub["name"]]
            conn.execute("update jobs set state = 'scored', scored_at = now()"
                         " where submission_id = %s", (sub["id"],))  # fmt: skip
            for job in conn.execute("select id, fold from jobs where submission_id = %s",
                                    (sub["id"],)).fetchall():  # fmt: skip
                for split, mean in (("valid", valid), ("test", test)):
                    conn.execute("insert into scores (job_id, split, metric, value)"
                                 " values (%s, %s, 'accuracy', %s)",
                                 (job["id"], split, mean + STEP[job["fold"]]))  # fmt: skip
            for split, mean, bagged in (("valid", valid, valid + 0.00111),
                                        ("test", test, test + 0.00222)):  # fmt: skip
                conn.execute("insert into score_summaries values (%s, %s, 'accuracy', 3, %s,"
                             " 0.01)", (sub["id"], split, mean))  # fmt: skip
                conn.execute("insert into bagged_scores (submission_id, split, metric, value,"
                             " n_folds) values (%s, %s, 'accuracy', %s, 3)",
                             (sub["id"], split, bagged))  # fmt: skip
        conn.execute("update submissions s set results_at = (select max(updated_at) from jobs"
                     " where submission_id = s.id)")  # fmt: skip


def challenge(spool: Spool, make_watcher, tmp_path: Path, url: str, teams: bool = True) -> None:
    watcher = registered_iris(spool, make_watcher, tmp_path)
    for team, count in (("a", 2), ("b", 3), ("c", 1)):
        drop_submissions(spool, tmp_path / team, team, count)
        assert {o.result for o in watcher.run_once()} == {"registered"}  # b000 before b001
    plant(url)
    if teams:
        with db.connect(url) as conn:
            conn.execute("insert into teams (name) values ('a'), ('b'), ('c')")


def results_writer(spool: Spool, database: db.Database) -> Results:
    writer = Results(spool, database, Sweeper(spool, database))
    # planted scores have no prediction files to bag: their bagged scores are planted too
    writer._bagged = lambda sub, jobs: [  # type: ignore[method-assign]
        ("valid", "accuracy", 0.5), ("test", "accuracy", 0.25)]  # fmt: skip
    return writer


def results(spool: Spool, url: str) -> int:
    """One pass of the master's results job, without any leaderboard owed beforehand."""
    database = db.Database(url).open()
    writer = results_writer(spool, database)
    try:
        return writer.refresh_once()
    finally:
        writer.sweeper.close()
        database.close()


def write_boards(spool: Spool, url: str) -> None:
    database = db.Database(url).open()
    sweeper = Sweeper(spool, database)
    try:
        Results(spool, database, sweeper).write_leaderboard("iris")
    finally:
        sweeper.close()
        database.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def view(url: str, name: str) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(f"select * from {name} where dataset = 'iris'"
                            " order by rank, label").fetchall()  # fmt: skip


def cli(spool: Spool, url: str, tmp_path: Path, *args: str) -> str:
    return in_process(spool.root, url, tmp_path / "home", *args)


def no_test_score(text: str) -> None:
    for value in planted_test_values():
        assert repr(value) not in text and f"{value:.4f}" not in text, value


def assert_hidden(spool: Spool, url: str, tmp_path: Path) -> None:
    """The public files, view and command: one row per team, its pick, no test score."""
    board = read_csv(spool.results / "iris" / "leaderboard.csv")
    assert [(r["rank"], r["submission"]) for r in board] == [("1", BY_VALID[0]),
        ("2", BY_VALID[1]), ("3", BY_VALID[2])]  # fmt: skip
    assert "test_mean" not in board[0] and "bagged_test" not in board[0]
    page = (spool.results / "iris" / "leaderboard.html").read_text()
    csv_text = (spool.results / "iris" / "leaderboard.csv").read_text()
    for text in (page, csv_text):
        no_test_score(text)
    assert "test mean" not in page and "bagged test" not in page
    shown = [line.split('"')[0] for line in page.split('data-submission="')[1:]]
    assert shown == BY_VALID
    assert page.count("<circle") == 9  # the three picks' validation folds
    rows = view(url, "public_leaderboard")
    assert [(r["rank"], r["label"]) for r in rows] == [(1, BY_VALID[0]), (2, BY_VALID[1]),
                                                       (3, BY_VALID[2])]  # fmt: skip
    assert all(r["test_mean"] is None and r["bagged_test"] is None for r in rows)
    shown_json = json.loads(cli(spool, url, tmp_path, "leaderboard", "iris", "--json"))
    assert [r["label"] for r in shown_json] == BY_VALID
    assert all("test_mean" not in r and "bagged_test" not in r for r in shown_json)
    no_test_score(cli(spool, url, tmp_path, "leaderboard", "iris"))


def write_team_files(spool: Spool, url: str) -> None:
    """What the master writes when a submission's jobs change (planted here)."""
    database = db.Database(url).open()
    try:
        writer = results_writer(spool, database)
        with database.connection() as conn:
            rows = db.fetch_all(conn, "dataset_submissions", {"dataset": "iris"})
        for row in rows:
            writer.write_submission(row["id"], row["changed_at"])
    finally:
        database.close()


def team_files(spool: Spool) -> list[Path]:
    """Each submission's status.json and scores.csv, which its team reads."""
    folders = [p for p in (spool.results / "iris").iterdir() if p.is_dir() and p.name != "private"]
    assert len(folders) == len(PLANTED)
    return [f / name for f in folders for name in ("status.json", "scores.csv")]


def assert_team_files(spool: Spool, *, test_shown: bool) -> None:
    """A team's own files hold its test scores only once they are public."""
    for path in team_files(spool):
        text = path.read_text()
        if path.name == "scores.csv":
            assert (",test," in text) == test_shown, path
        else:
            status = json.loads(text)
            assert ("test" in status["mean"]) == test_shown, path
            assert status["test_scores_public"] == test_shown
            assert all(bool(f["scores"]["test"]) == test_shown for f in status["folds"])
            assert ("test" in status["bagged"]) == test_shown
            if not test_shown:
                no_test_score(text)


def assert_revealed(spool: Spool, url: str) -> None:
    """The public files and view: the picks ranked by their test score, with it."""
    board = read_csv(spool.results / "iris" / "leaderboard.csv")
    assert [(r["rank"], r["submission"]) for r in board] == [("1", BY_TEST[0]),
        ("2", BY_TEST[1]), ("3", BY_TEST[2])]  # fmt: skip
    for r in board:
        name = r["submission"].split(".")[1]
        # the planted means, or the same recomputed from the fold scores
        assert (float(r["valid_mean"]), float(r["test_mean"])) == pytest.approx(PLANTED[name])
    page = (spool.results / "iris" / "leaderboard.html").read_text()
    shown = [line.split('"')[0] for line in page.split('data-submission="')[1:]]
    assert shown == BY_TEST and "test mean" in page and "0.8846" in page
    rows = view(url, "public_leaderboard")
    assert [(r["rank"], r["label"]) for r in rows] == list(enumerate(BY_TEST, 1))
    for r in rows:
        assert r["test_mean"] == pytest.approx(PLANTED[r["label"].split(".")[1]][1])


def test_challenge_public_private_and_reveal(spool, make_watcher, database_url, tmp_path):
    challenge(spool, make_watcher, tmp_path, database_url)
    write_boards(spool, database_url)
    assert_hidden(spool, database_url, tmp_path)

    # private: every submission, every score, and the picks
    secret = spool.private_results("iris")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o700
    private = read_csv(secret / "leaderboard.csv")
    assert len(private) == len(PLANTED)
    for r in private:
        assert float(r["test_mean"]) == PLANTED[r["submission"].split(".")[1]][1]
    assert {r["submission"] for r in private if r["pick"] == "true"} == set(PICKS.values())
    assert {r["submission"]: r["final_rank"] for r in private if r["final_rank"]} == {
        label: str(i + 1) for i, label in enumerate(BY_TEST)}  # fmt: skip
    page = (secret / "leaderboard.html").read_text()
    assert all(f"{test:.4f}" in page for _, test in PLANTED.values())
    rows = view(database_url, "private_leaderboard")
    assert len(rows) == len(PLANTED) and all(r["test_mean"] is not None for r in rows)
    shown = json.loads(cli(spool, database_url, tmp_path, "leaderboard", "iris", "--private",
                           "--json"))  # fmt: skip
    assert {r["label"] for r in shown if r["pick"]} == set(PICKS.values())
    assert len(shown) == len(PLANTED) and all(r["test_mean"] is not None for r in shown)
    assert "0.9532" in cli(spool, database_url, tmp_path, "leaderboard", "iris", "--private")

    # the reveal: the master's next results pass publishes it, nothing else owed
    assert results(spool, database_url) == 0
    assert_hidden(spool, database_url, tmp_path)
    write_team_files(spool, database_url)
    assert_team_files(spool, test_shown=False)
    said = cli(spool, database_url, tmp_path, "reveal", "iris")
    assert "the test scores are public" in said
    assert "already revealed" in cli(spool, database_url, tmp_path, "reveal", "iris")
    with db.connect(database_url) as conn:
        changes = conn.execute("select * from dataset_changes").fetchall()
        revealed = conn.execute("select revealed_at from datasets").fetchone()
    assert [(c["setting"], c["changed_by"]) for c in changes] == [
        ("revealed_at", pwd.getpwuid(os.geteuid()).pw_name)
    ]
    assert changes[0]["new_value"] is not None and revealed["revealed_at"] is not None
    results(spool, database_url)
    assert_revealed(spool, database_url)
    assert_team_files(spool, test_shown=True)
    with db.connect(database_url) as conn:  # written once: no longer due
        assert db.fetch_all(conn, "leaderboards_revealed_due") == []


def test_a_dataset_that_closes_while_the_master_runs_is_published(
    spool, make_watcher, database_url, tmp_path
):
    challenge(spool, make_watcher, tmp_path, database_url)
    with db.connect(database_url) as conn:
        conn.execute("update datasets set closes_at = now() + interval '1 hour'")
    results(spool, database_url)  # never written: written at once, hidden
    assert_hidden(spool, database_url, tmp_path)
    results(spool, database_url)  # nothing owed, none due: nothing rewritten
    assert_hidden(spool, database_url, tmp_path)
    with db.connect(database_url) as conn:  # the close is a second away, nothing else moves
        conn.execute("update datasets set closes_at = now() + interval '1 second'")
    time.sleep(1.5)  # closes_at passes
    results(spool, database_url)
    assert_revealed(spool, database_url)


def test_a_dataset_closed_in_the_past_is_published(spool, make_watcher, database_url, tmp_path):
    challenge(spool, make_watcher, tmp_path, database_url)
    with db.connect(database_url) as conn:
        conn.execute("update datasets set closes_at = now() - interval '1 day'")
    results(spool, database_url)  # due at once: the first pass writes it revealed
    assert_revealed(spool, database_url)


def test_open_mode_shows_every_submission_and_every_score(
    spool, make_watcher, database_url, tmp_path
):
    challenge(spool, make_watcher, tmp_path, database_url, teams=False)
    write_boards(spool, database_url)
    board = read_csv(spool.results / "iris" / "leaderboard.csv")
    assert list(board[0]) == ["rank", "submission", "team", "state", "folds_scored", "folds",
                              "metric", "valid_mean", "valid_std", "test_mean",
                              "bagged_valid", "bagged_test"]  # fmt: skip
    assert len(board) == len(PLANTED)
    old = view(database_url, "leaderboard")
    new = view(database_url, "public_leaderboard")
    assert [{k: r[k] for k in new[0]} for r in old] == new  # the view of old, same order
    assert [r["submission"] for r in board] == [r["label"] for r in new]
    for r in board:
        name = r["submission"].split(".")[1]
        assert (float(r["valid_mean"]), float(r["test_mean"])) == PLANTED[name]
    page = (spool.results / "iris" / "leaderboard.html").read_text()
    assert all(f"{test:.4f}" in page for _, test in PLANTED.values())
    assert page.count("<circle") == 3 * len(PLANTED)
    write_team_files(spool, database_url)
    assert_team_files(spool, test_shown=True)

    with db.connect(database_url) as conn:  # the first team: every file hides them at once
        conn.execute("insert into teams (name) values ('a'), ('b'), ('c')")
    results(spool, database_url)
    assert_hidden(spool, database_url, tmp_path)
    assert_team_files(spool, test_shown=False)
