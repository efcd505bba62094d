"""Fair share within a priority, against a real watcher and database: claims
interleave teams, so one team's flood does not hold back another team's submission."""

from __future__ import annotations

from pathlib import Path

from spool import db, jobs, migrate
from spool.layout import Spool
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.helpers.cli import in_process


def drop_submissions(spool: Spool, where: Path, team: str, count: int, *, first: int = 0,
                     queue: str = "low") -> None:  # fmt: skip
    manifest = f'team = "{team}"\npriority = "{queue}"\n'
    for i in range(first, first + count):
        root = B.submission(where, name=f"{team}{i:03d}", manifest=manifest, variant=i)
        drop(root, spool.incoming_submissions / "iris")


def claim_order(url: str, n: int) -> list[tuple[int, str]]:
    """The (job, submission name) of the next `n` jobs claimed, one claim at a time,
    as an executor serving both queues claims them."""
    with db.connect(url) as conn:
        executor = jobs.register_executor(conn, host="here", pid=1, queues=["high", "low"],
                                          workers=1, version="test", limits={})  # fmt: skip
        order = []
        for _ in range(n):
            [job] = jobs.claim(conn, executor, ["high", "low"], 1, {})
            row = conn.execute("select s.name from submissions s join jobs j"
                               " on j.submission_id = s.id where j.id = %s",
                               (job.id,)).fetchone()  # fmt: skip
            assert row is not None
            order.append((job.id, row["name"]))
        return order


def names(order: list[tuple[int, str]]) -> list[str]:
    return [name for _, name in order]


def registered_iris(spool: Spool, make_watcher, tmp_path: Path):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)  # three folds
    assert [o.result for o in watcher.run_once()] == ["registered"]
    return watcher


def test_a_teams_flood_does_not_hold_back_another_teams_submission(
    spool: Spool, make_watcher, database_url: str, tmp_path: Path
):
    watcher = registered_iris(spool, make_watcher, tmp_path)
    drop_submissions(spool, tmp_path / "a", "a", 200)
    assert {o.result for o in watcher.run_once()} == {"registered"}
    drop_submissions(spool, tmp_path / "b", "b", 1)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    # a's first submission (three folds), then b's, then a's next ones
    got = names(claim_order(database_url, 12))
    assert got == ["a000"] * 3 + ["b000"] * 3 + ["a001"] * 3 + ["a002"] * 3, got


def test_a_new_team_joins_at_the_turn_being_served_and_a_team_at_its_next(
    spool: Spool, make_watcher, database_url: str, tmp_path: Path
):
    watcher = registered_iris(spool, make_watcher, tmp_path)
    drop_submissions(spool, tmp_path / "a", "a", 4)  # turns 1, 2, 3, 4
    drop_submissions(spool, tmp_path / "b", "b", 2)  # turns 1, 2
    watcher.run_once()
    first = names(claim_order(database_url, 6))
    assert first == ["a000"] * 3 + ["b000"] * 3, first
    # turn 2 is being served: c joins it; a comes after its last (5), b after its (3)
    drop_submissions(spool, tmp_path / "c", "c", 1)
    drop_submissions(spool, tmp_path / "a2", "a", 1, first=4)
    drop_submissions(spool, tmp_path / "b2", "b", 1, first=2)
    watcher.run_once()
    later = names(claim_order(database_url, 21))[::3]  # one per submission
    assert later == ["a001", "b001", "c000", "a002", "b002", "a003", "a004"], later


def test_high_priority_still_goes_first_and_a_given_back_job_keeps_its_turn(
    spool: Spool, make_watcher, database_url: str, tmp_path: Path
):
    watcher = registered_iris(spool, make_watcher, tmp_path)
    drop_submissions(spool, tmp_path / "a", "a", 3)
    drop_submissions(spool, tmp_path / "b", "b", 1, queue="high")
    watcher.run_once()
    with db.connect(database_url) as conn:
        executor = jobs.register_executor(conn, host="here", pid=2, queues=["high", "low"],
                                          workers=1, version="test", limits={})  # fmt: skip
        claimed = [jobs.claim(conn, executor, ["high", "low"], 1, {})[0] for _ in range(4)]
        jobs.requeue(conn, claimed[3].id, claimed[3].attempt, executor, "its runner died")
    assert [c.submission for c in claimed] == ["b000"] * 3 + ["a000"], claimed
    again = claim_order(database_url, 3)
    assert again[0][0] == claimed[3].id, again  # back at the head, ahead of a001
    assert names(again) == ["a000"] * 3, again


SUBMISSIONS = """
insert into datasets (name, kind, workflow, metrics, n_folds, content_hash, store_path)
values ('iris', 'native', 'classifier', '{accuracy}', 2, 'h', 'x');
insert into submissions (dataset_id, name, team, content_hash, store_path)
values (1, 'a0', 'a', 'h0', 'x'), (1, 'a1', 'a', 'h1', 'x'), (1, 'a2', 'a', 'h2', 'x'),
       (1, 'b0', 'b', 'h3', 'x');
insert into jobs (submission_id, fold, queue)
select s, f, 'low' from generate_series(1, 4) s, generate_series(0, 1) f order by s, f;
"""
IN_TURN = """
select s.name from jobs j join submissions s on s.id = j.submission_id
where j.state = 'queued' order by j.priority, j.turn, j.id
"""


def test_jobs_queued_before_the_upgrade_take_turns_by_team(empty_database_url, monkeypatch):
    every = migrate.available()
    monkeypatch.setattr(migrate, "available", lambda: every[:9])
    migrate.migrate(empty_database_url)  # the schema before fair share
    monkeypatch.undo()
    with db.connect(empty_database_url) as conn:
        conn.execute(SUBMISSIONS)
    migrate.migrate(empty_database_url)
    with db.connect(empty_database_url) as conn:
        rows = conn.execute(IN_TURN).fetchall()
        turns = conn.execute("select team, last_turn from team_turns order by team").fetchall()
    assert [r["name"] for r in rows] == ["a0", "a0", "b0", "b0", "a1", "a1", "a2", "a2"]
    assert [(t["team"], t["last_turn"]) for t in turns] == [("a", 3), ("b", 1)]


def test_an_organizer_moves_a_submission_to_the_high_queue(
    spool: Spool, make_watcher, database_url: str, tmp_path: Path
):
    """`datarun retry SUB --priority high`: its waiting folds go first, at a turn of the
    high queue, and its row says so; a finished fold stays where it is."""
    watcher = registered_iris(spool, make_watcher, tmp_path)
    drop_submissions(spool, tmp_path / "a", "a", 5)
    drop_submissions(spool, tmp_path / "b", "b", 2)
    assert {o.result for o in watcher.run_once()} == {"registered"}
    with db.connect(database_url) as conn:
        [late] = conn.execute("select id from submissions where name = 'b001'").fetchall()
        [first] = conn.execute("select min(id) as id from jobs where submission_id = %s",
                               (late["id"],)).fetchall()  # fmt: skip
        conn.execute("update jobs set state = 'failed', error = 'x' where id = %s",
                     (first["id"],))  # fmt: skip
    out = in_process(spool.root, database_url, tmp_path / "home", "retry", "iris/b.b001.v1",
                     "--priority", "high")  # fmt: skip
    assert "1 failed job(s) queued again" in out and "3 waiting job(s) now in the high" in out
    assert names(claim_order(database_url, 4)) == ["b001"] * 3 + ["a000"]
    with db.connect(database_url) as conn:
        row = conn.execute("select queue from submissions where id = %s", (late["id"],)).fetchone()
        assert row is not None and row["queue"] == "high"
    out = in_process(spool.root, database_url, tmp_path / "home", "retry", "--dataset", "iris",
                     "--priority", "high", code=1)  # fmt: skip
    assert "--priority moves one submission" in out
