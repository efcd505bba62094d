"""A deadlock the server breaks by rolling back a worker's settle statement: raised as
`Deadlock` (psycopg's DeadlockDetected is an OperationalError too, which once hid it),
and the settle runs again, so the fold's completion is not lost."""

from __future__ import annotations

import threading
import time

from spool import db, jobs
from spool.errors import Deadlock
from spool.jobs import Outcome

SEED = """
insert into datasets (name, kind, workflow, metrics, n_folds, content_hash, store_path)
values ('d', 'native', 'classifier', '{accuracy}', 2, 'h', 'x');
insert into submissions (dataset_id, name, content_hash, store_path)
values (1, 's', 'h', 'x');
insert into jobs (submission_id, fold, queue) values (1, 0, 'low'), (1, 1, 'low');
"""


def test_a_deadlock_between_two_sessions_is_raised_as_deadlock(database_url):
    first, second = db.connect(database_url), db.connect(database_url)
    first.execute("create table pair (id int primary key); insert into pair values (1), (2)")
    failures: list[BaseException] = []

    def cross(conn: db.Conn, mine: int, theirs: int, ready: threading.Barrier) -> None:
        try:
            with db.translated(database_url, conn), conn.transaction():
                conn.execute("select 1 from pair where id = %s for update", [mine])
                ready.wait()
                conn.execute("select 1 from pair where id = %s for update", [theirs])
        except BaseException as exc:  # what the test looks at
            failures.append(exc)

    ready = threading.Barrier(2)
    threads = [threading.Thread(target=cross, args=(first, 1, 2, ready)),
               threading.Thread(target=cross, args=(second, 2, 1, ready))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    first.close()
    second.close()
    assert len(failures) == 1 and isinstance(failures[0], Deadlock), failures


def test_a_settle_rolled_back_by_a_deadlock_runs_again_and_completes(database_url, conn):
    conn.execute(SEED)
    me = jobs.register_executor(conn, host="h", pid=7, queues=["low"], workers=1,
                                version="x", limits={})  # fmt: skip
    a, b = jobs.claim(conn, me, ["low"], 2)
    other = db.connect(database_url)
    # the other session never looks for the deadlock: the settle's session finds it and
    # is the one rolled back (were it the other, the test would fail at its second lock)
    other.execute("set deadlock_timeout = '60s'")
    settled: list[jobs.Settled] = []
    with other.transaction():
        other.execute("select 1 from jobs where id = %s for update", [b.id])
        worker = threading.Thread(target=lambda: settled.append(jobs.settle(
            conn, me, [(a, Outcome(prediction_path="a")), (b, Outcome(prediction_path="b"))],
            ["low"], 0)))  # fmt: skip
        worker.start()
        time.sleep(0.3)  # the settle holds a and waits for b; this session now wants a
        other.execute("select 1 from jobs where id = %s for update", [a.id])
    other.close()
    worker.join(timeout=30)
    assert settled and settled[0].refused == [], settled
    states = conn.execute("select state from jobs order by id").fetchall()
    assert [r["state"] for r in states] == ["predicted", "predicted"]
