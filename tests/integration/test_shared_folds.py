"""Short folds of one submission share a warm child (issue 18): one claim brings them,
one sandboxed child runs them in turn, each is published and completed on its own
attempt; a crash fails only the fold it happened in; submissions never share."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from executor.daemon import Executor
from spool import db, jobs
from spool.jobs import Outcome
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.helpers.waiting import running, wait_for

# Counts the folds this process ran: 1 in a fresh child, 2, 3... in a shared one.
COUNTING = """
import builtins
from sklearn.linear_model import LogisticRegression


class Classifier:
    def __init__(self):
        self.model = LogisticRegression(max_iter=500)

    def fit(self, X, y):
        builtins.ran = getattr(builtins, "ran", 0) + 1
        print(f"{NAME}: fold number {builtins.ran} of this process")
        CRASH
        self.model.fit(X, y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)
"""


def counting(name: str, crash: str = "pass") -> str:
    return COUNTING.replace("NAME", repr(name)).replace("CRASH", crash)


def register(spool, make_watcher, tmp_path: Path, submissions: dict[str, str],
             folds: int = 5, short_folds: bool = False) -> None:  # fmt: skip
    watcher = make_watcher()
    dataset = B.dataset(tmp_path / "d", n_splits=folds, scores='["accuracy"]')
    if short_folds:  # the organizer says so: shared from a submission's first fold
        toml = dataset / "dataset.toml"
        toml.write_text(toml.read_text().replace("[cv]\n", "[cv]\nshort_folds = true\n"))
    drop(dataset, spool.incoming_datasets)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    for name, code in submissions.items():
        root = tmp_path / "subs" / name
        root.mkdir(parents=True)
        (root / "classifier.py").write_text(code)
        drop(root, spool.incoming_submissions / "iris")
    assert all(o.result == "registered" for o in watcher.run_once())


def folds(url: str) -> list[dict]:
    """Each job with its fold's metadata (the child it ran in) and log."""
    with db.connect(url) as conn:
        rows = conn.execute(
            "select j.id, j.fold, j.state, j.attempts, j.error, j.log_path, s.name"
            " from jobs j join submissions s on s.id = j.submission_id order by j.id"
        ).fetchall()
    return rows


def meta(spool, row: dict) -> dict:
    return json.loads((spool.root / row["log_path"]).with_suffix(".json").read_text())


def log_of(spool, row: dict) -> str:
    return (spool.root / row["log_path"]).read_text()


def drain(executor: Executor) -> int:
    total = 0
    while ran := executor.run_once():
        total += ran
    return total


def test_short_folds_of_one_submission_run_in_one_child_each_with_its_own_log(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path, {"a": counting("a")})
    executor = make_executor(workers=1)
    assert executor.run_once() == 1  # nothing known yet: the first fold alone
    assert executor.run_once() == 4  # it was short: the four others in one claim
    rows = folds(database_url)
    assert [r["state"] for r in rows] == ["predicted"] * 5
    children = [meta(spool, r)["child"] for r in rows]
    assert children[0] != children[1] and len(set(children[1:])) == 1
    for i, row in enumerate(rows[1:], start=1):
        text = log_of(spool, row)
        assert f"a: fold number {i} of this process" in text  # one warm process
        assert text.count("fold number") == 1  # and the fold's own output only
    assert "fold number 1 of" in log_of(spool, rows[0])


def test_long_folds_keep_a_child_each(spool, make_watcher, make_executor, database_url,
                                      tmp_path):  # fmt: skip
    register(spool, make_watcher, tmp_path, {"a": counting("a")}, folds=3)
    executor = make_executor(workers=2, short_fold_seconds=1e-9)  # every fold is long
    assert executor.run_once() == 2
    assert executor.run_once() == 1
    rows = folds(database_url)
    assert [r["state"] for r in rows] == ["predicted"] * 3
    assert len({meta(spool, r)["child"] for r in rows}) == 3
    assert all("fold number 1 of this process" in log_of(spool, r) for r in rows)


def test_two_submissions_never_share_a_child(spool, make_watcher, make_executor, database_url,
                                             tmp_path):  # fmt: skip
    register(spool, make_watcher, tmp_path, {"a": counting("a"), "b": counting("b")}, folds=4)
    assert drain(make_executor(workers=2)) == 8
    rows = folds(database_url)
    assert {r["state"] for r in rows} == {"predicted"}
    by_child: dict[str, set[str]] = {}
    for row in rows:
        by_child.setdefault(meta(spool, row)["child"], set()).add(row["name"])
        other = "b" if row["name"] == "a" else "a"
        assert f"{other}: fold" not in log_of(spool, row)
    assert all(len(names) == 1 for names in by_child.values()), by_child
    assert len(by_child) < 8  # and some did share


def test_a_crash_in_a_shared_child_fails_that_fold_and_the_others_run_again(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    # the second fold of each process dies: in a shared child, that one alone fails
    crash = "if builtins.ran == 2:\n            import os; os._exit(3)"
    register(spool, make_watcher, tmp_path, {"a": counting("a", crash)})
    executor = make_executor(workers=1)
    assert executor.run_once() == 1  # fold 0 alone, short
    assert executor.run_once() == 4  # folds 1-4: 1 ran, 2 crashed the child, 3-4 unrun
    rows = folds(database_url)
    assert [r["state"] for r in rows] == ["predicted", "predicted", "failed", "queued", "queued"]
    assert rows[2]["error"] == "exited with code 3 before writing its predictions"
    assert [r["attempts"] for r in rows[3:]] == [0, 0]  # handed back: not counted
    assert drain(executor) == 2  # 3 and 4 again in a new child, where 4 is its second
    rows = folds(database_url)
    assert [r["state"] for r in rows] == ["predicted", "predicted", "failed", "predicted",
                                          "failed"]  # fmt: skip
    assert "fold number 2 of this process" in log_of(spool, rows[2])
    with db.connect(database_url) as conn:
        outcomes = conn.execute(
            "select outcome from attempts where job_id = %s order by id", [rows[3]["id"]]
        ).fetchall()
    assert [o["outcome"] for o in outcomes] == ["handed back", "predicted"]


def test_a_fold_past_its_timeout_in_a_shared_child_fails_alone(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    hang = "if builtins.ran == 2:\n            while True: pass"
    register(spool, make_watcher, tmp_path, {"a": counting("a", hang)}, folds=4)
    executor = make_executor(workers=1, timeout_seconds=3)
    assert executor.run_once() == 1
    assert executor.run_once() == 3  # 1 ran, 2 hung (its own 3 s), 3 unrun
    rows = folds(database_url)
    assert [r["state"] for r in rows] == ["predicted", "predicted", "failed", "queued"]
    assert rows[2]["error"] == "timeout after 3 s"
    assert drain(executor) == 1
    assert folds(database_url)[3]["state"] == "predicted"


def test_an_earlier_fold_cannot_leave_a_later_folds_results(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    # The first fold of each process fills every output folder a later fold could
    # have with results that claim success; a later fold then exits at once, with 0.
    # Each fold's folder is made afresh at its start: nothing planted is collected.
    plant = """if builtins.ran == 1:
            import json, os
            for i in range(1, 50):
                os.makedirs(f'.datarun-{i}.1', exist_ok=True)
                with open(f'.datarun-{i}.1/result.json', 'w') as out:
                    out.write(json.dumps({'ok': True}))
                with open(f'.datarun-{i}.1/pred.npz', 'wb') as out:
                    out.write(b'PK')
        else:
            import os; os._exit(0)"""
    register(spool, make_watcher, tmp_path, {"a": counting("a", plant)}, folds=3)
    executor = make_executor(workers=1)
    assert executor.run_once() == 1  # fold 0: plants (in its own child), then trains
    assert executor.run_once() == 2  # fold 1 plants again and trains, fold 2 exits
    rows = folds(database_url)
    assert [r["state"] for r in rows] == ["predicted", "predicted", "failed"]
    assert rows[2]["error"] == "exited with code 0 before writing its predictions"


def test_short_by_the_dataset_shares_from_the_first_fold_and_a_long_one_gives_back_the_rest(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    slow = "if builtins.ran == 1:\n            import time; time.sleep(1.5)"
    register(spool, make_watcher, tmp_path, {"a": counting("a"), "b": counting("b", slow)},
             folds=3, short_folds=True)  # fmt: skip
    executor = make_executor(workers=1)
    assert executor.run_once() == 3  # a: all its folds in one claim, one child
    rows = [r for r in folds(database_url) if r["name"] == "a"]
    assert [r["state"] for r in rows] == ["predicted"] * 3
    assert len({meta(spool, r)["child"] for r in rows}) == 1
    # b's first fold sleeps past a second: the two others go back at once, not
    # counted, and, b known long now, run in a child each
    assert executor.run_once() == 3
    rows = [r for r in folds(database_url) if r["name"] == "b"]
    assert [(r["state"], r["attempts"]) for r in rows] == [
        ("predicted", 1), ("queued", 0), ("queued", 0)]  # fmt: skip
    assert drain(executor) == 2
    rows = [r for r in folds(database_url) if r["name"] == "b"]
    assert [r["state"] for r in rows] == ["predicted"] * 3
    assert len({meta(spool, r)["child"] for r in rows}) == 3


def test_a_worker_completes_a_fold_and_claims_its_next_in_one_transaction(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path, {"a": counting("a")}, folds=3)
    with db.connect(database_url) as conn:  # each change of a job's state, and its transaction
        conn.execute(
            "create table seen (job bigint, state text, xact xid8);"
            "create function seen() returns trigger language plpgsql as $$ begin"
            " insert into seen values (new.id, new.state, pg_current_xact_id()); return new;"
            " end $$;"
            "create trigger seen after update of state on jobs for each row"
            " execute function seen();"
        )
    executor = make_executor(workers=1, shared_folds=1)  # a child per fold
    executor.start()
    stop = threading.Event()
    worker = threading.Thread(target=executor._work, args=(stop,))
    worker.start()
    try:
        with db.connect(database_url) as conn:
            for _ in range(600):
                found = conn.execute("select count(*) as n from jobs where state = 'predicted'")
                if found.fetchone() == {"n": 3}:
                    break
                stop.wait(0.1)
    finally:
        stop.set()
        worker.join()
    with db.connect(database_url) as conn:
        seen = conn.execute("select job, state, xact from seen order by xact, job").fetchall()
    by_xact: dict[int, list[tuple[int, str]]] = {}
    for row in seen:
        by_xact.setdefault(int(row["xact"]), []).append((row["job"], row["state"]))
    ids = sorted({r["job"] for r in seen})
    assert list(by_xact.values()) == [
        [(ids[0], "running")],
        [(ids[0], "predicted"), (ids[1], "running")],
        [(ids[1], "predicted"), (ids[2], "running")],
        [(ids[2], "predicted")],
    ]


def test_a_late_completion_is_refused_in_the_statement_that_claims_the_next(
    spool, make_watcher, database_url, conn, tmp_path
):
    register(spool, make_watcher, tmp_path, {"a": counting("a"), "b": counting("b")}, folds=3)
    me = jobs.register_executor(conn, host="h", pid=7, queues=["low"], workers=1,
                                version="x", limits={})  # fmt: skip
    [a0] = jobs.claim(conn, me, ["low"], 1)
    assert jobs.requeue(conn, a0.id, a0.attempt, me, "lost") == "queued"  # say, reaped
    settled = jobs.settle(conn, me, [(a0, Outcome(prediction_path="x"))], ["low"], 1)
    assert settled.refused == [a0]  # that attempt is over: its result is not taken
    assert [(j.id, j.attempt) for j in settled.claimed] == [(a0.id, a0.attempt + 1)]
    row = conn.execute("select state, prediction_path from jobs where id = %s", [a0.id])
    assert row.fetchone() == {"state": "running", "prediction_path": None}


def test_a_short_submissions_claim_brings_its_own_folds_only_and_keeps_the_turns(
    spool, make_watcher, database_url, conn, tmp_path
):
    register(spool, make_watcher, tmp_path, {"a": counting("a"), "b": counting("b")}, folds=3)
    me = jobs.register_executor(conn, host="h", pid=7, queues=["low"], workers=1,
                                version="x", limits={})  # fmt: skip
    [a0] = jobs.claim(conn, me, ["low"], 1, sharing=jobs.Sharing(folds=8))
    assert (a0.fold, a0.shared) == (0, False)  # nothing known of a yet: its first alone
    # a's first fold was short (seen here): the next claim brings a's other folds
    sharing = jobs.Sharing(folds=8, short_seconds=1.0, short=frozenset({a0.submission_id}))
    a_folds = jobs.claim(conn, me, ["low"], 1, sharing=sharing)
    claimed = a_folds
    assert [(j.submission, j.fold, j.shared) for j in claimed] == [
        ("a", 1, True), ("a", 2, True)]  # fmt: skip
    # b's turn comes next, not a's given back folds (nor would it bring a's)
    [b0] = jobs.claim(conn, me, ["low"], 1)
    assert (b0.submission, b0.fold, b0.shared) == ("b", 0, False)
    assert jobs.complete(conn, b0, me, Outcome(prediction_path="x", train_seconds=2.5))
    # one of b's folds took 2.5 s: b's folds are long, a claim brings one
    claimed = jobs.claim(conn, me, ["low"], 1, sharing=sharing)
    assert [(j.submission, j.fold, j.shared) for j in claimed] == [("b", 1, False)]
    # and a submission this executor knows long (`long`) is claimed one fold at a time
    for job in a_folds:
        assert jobs.hand_back(conn, job, me)  # back at the head: a's turn came first
    long = jobs.Sharing(folds=8, long=frozenset({a0.submission_id}))
    assert [(j.submission, j.fold) for j in jobs.claim(conn, me, ["low"], 1, sharing=long)] == [
        ("a", 1)]  # fmt: skip


def test_a_stopping_worker_completes_its_fold_and_claims_nothing(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    nap = "import time; time.sleep(1)"
    register(spool, make_watcher, tmp_path, {"a": counting("a", nap)}, folds=2)
    executor = make_executor(workers=1, shared_folds=1)
    executor.start()
    stop = threading.Event()
    worker = threading.Thread(target=executor._work, args=(stop,))
    worker.start()
    try:
        with db.connect(database_url) as conn:
            for _ in range(300):
                found = conn.execute("select count(*) as n from jobs where state = 'running'")
                if found.fetchone() == {"n": 1}:
                    break
                stop.wait(0.02)
    finally:
        stop.set()  # while its first fold runs
        worker.join()
    assert [(r["state"], r["attempts"]) for r in folds(database_url)] == [
        ("predicted", 1), ("queued", 0)]  # fmt: skip


def test_an_idle_worker_takes_half_the_folds_a_shared_child_has_not_started(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    # folds of about 0.3 s: short, so all 8 are claimed into one child; the other worker
    # has nothing left to claim, and half of those not started are given to it
    slow = counting("a").replace("self.model.fit(X, y)", "time.sleep(0.3); self.model.fit(X, y)")
    register(spool, make_watcher, tmp_path, {"a": "import time\n" + slow}, folds=8,
             short_folds=True)  # fmt: skip
    with running(make_executor(workers=2)):
        wait_for(lambda: all(r["state"] == "predicted" for r in folds(database_url)), 60,
                 "the 8 folds")  # fmt: skip
    rows = folds(database_url)
    assert [(r["state"], r["attempts"]) for r in rows] == [("predicted", 1)] * 8  # not counted
    children = [meta(spool, r)["child"] for r in rows]
    assert len(set(children)) >= 2, children  # the idle worker ran some beside the first
    assert children[0] == children[1]  # the first child kept its next folds
    lent = [r for r, child in zip(rows, children, strict=True) if child != children[0]]
    assert lent and all(r["fold"] > rows[1]["fold"] for r in lent)  # the last ones
    with db.connect(database_url) as conn:
        back = conn.execute("select count(*) as n from attempts where outcome = 'handed back'")
        assert back.fetchone()["n"] >= len(lent)
