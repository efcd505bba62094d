"""`datarun logs`: each fold's log under its header, every one ending its last line."""

from __future__ import annotations

from datarun import admin
from tests.conftest import drop
from tests.helpers import bundles as B


def test_a_log_cut_short_still_ends_its_line(spool, conn, tmp_path, make_watcher):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    watcher.run_once()
    drop(B.submission(tmp_path / "s"), spool.incoming_submissions / "iris")
    watcher.run_once()
    jobs = conn.execute("select id, submission_id from jobs order by fold").fetchall()
    assert len(jobs) == 3
    cut = spool.root / "cut.log"
    cut.write_text("training...\nKilled after 3600 s, mid-li")  # no final line break
    conn.execute("update jobs set log_path = 'cut.log' where id = %s", [jobs[0]["id"]])
    text = admin.logs(conn, spool, job=None, submission=jobs[0]["submission_id"])
    assert text.endswith("\n")
    assert "mid-li\n\n== iris/" in text  # the next header starts a line of its own
    assert text.count("(no log yet)\n") == 2
