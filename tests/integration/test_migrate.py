from __future__ import annotations

import os
import threading

import pytest

from spool import db, migrate
from spool.errors import DatabaseError, MigrationError
from tests.helpers import schema


def applied_rows(url: str) -> list[dict]:
    with db.connect(url) as conn:
        return db.fetch_all(conn, "migrations_applied")


def test_migrate_applies_every_file_in_order_and_records_it(empty_database_url):
    done = migrate.migrate(empty_database_url)
    assert [m.version for m in done] == [m.version for m in migrate.available()]
    rows = applied_rows(empty_database_url)
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, m.checksum) for m in migrate.available()
    ]
    with db.connect(empty_database_url) as conn:
        tables = {
            r["table_name"]
            for r in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'public'"
            ).fetchall()
        }
    assert {"datasets", "submissions", "jobs", "scores", "executors", "events"} <= tables


def test_rerunning_migrate_is_a_no_op(empty_database_url):
    migrate.migrate(empty_database_url)
    before = applied_rows(empty_database_url)
    assert migrate.migrate(empty_database_url) == []
    assert applied_rows(empty_database_url) == before
    with db.connect(empty_database_url) as conn:
        assert migrate.status(conn).pending == []


def test_concurrent_migrations_apply_each_file_once(empty_database_url):
    results: list[list[migrate.Migration]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate.migrate(empty_database_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migrate.available())]
    assert len(applied_rows(empty_database_url)) == len(migrate.available())


def test_an_edited_applied_migration_is_refused(empty_database_url):
    migrate.migrate(empty_database_url)
    with db.connect(empty_database_url) as conn:
        conn.execute("update datarun_migrations set checksum = 'x' where version = 1")
    with pytest.raises(MigrationError, match="0001_initial.sql was changed after it was applied"):
        migrate.migrate(empty_database_url)


def test_a_database_newer_than_this_datarun_is_refused(empty_database_url):
    migrate.migrate(empty_database_url)
    with db.connect(empty_database_url) as conn:
        conn.execute("insert into datarun_migrations values (999, 'future', 'x')")
    with pytest.raises(MigrationError, match="newer than this datarun"):
        migrate.migrate(empty_database_url)


def test_a_failing_migration_rolls_back_and_names_its_file(empty_database_url, monkeypatch):
    good = migrate.available()
    bad = migrate.Migration(len(good) + 1, "broken", "create table half (x int); select 1/0;")
    monkeypatch.setattr(migrate, "available", lambda: [*good, bad])
    with pytest.raises(MigrationError, match=rf"{bad.version:04d}_broken.sql failed: .*by zero"):
        migrate.migrate(empty_database_url)
    with db.connect(empty_database_url) as conn:
        assert conn.execute("select to_regclass('half') as t").fetchone()["t"] is None
        assert migrate.status(conn).current == len(good)


DATASET = (
    "insert into datasets (name, kind, workflow, metrics, n_folds, content_hash, store_path)"
    " values (%s, 'native', 'classifier', '{accuracy}', 2, %s, '/s') returning id"
)


def test_schema_constraints_hold(conn):
    """The guarantees later issues lean on: one job per (submission, fold), scores once."""
    ds = conn.execute(DATASET, ["iris", "h1"]).fetchone()["id"]
    sub = conn.execute(
        "insert into submissions (dataset_id, name, content_hash, store_path)"
        " values (%s, 'rf', 'h2', '/s') returning id",
        [ds],
    ).fetchone()["id"]
    job = conn.execute(
        "insert into jobs (submission_id, fold, queue) values (%s, 0, 'high')"
        " returning id, priority",
        [sub],
    ).fetchone()
    assert job["priority"] == 0
    with pytest.raises(Exception, match="duplicate key"):
        conn.execute("insert into jobs (submission_id, fold, queue) values (%s, 0, 'low')", [sub])
    conn.execute("insert into scores values (%s, 'valid', 'accuracy', 0.9)", [job["id"]])
    with pytest.raises(Exception, match="duplicate key"):
        conn.execute("insert into scores values (%s, 'valid', 'accuracy', 0.8)", [job["id"]])
    with pytest.raises(Exception, match="jobs_check"):
        conn.execute("update jobs set state = 'running' where id = %s", [job["id"]])
    with pytest.raises(Exception, match="datasets_name_check"):
        conn.execute(DATASET, ["../x", "h3"])


def test_database_errors_are_translated(conn):
    with pytest.raises(DatabaseError, match="database error"):
        db.execute_script(conn, "select * from no_such_table")


def test_the_migrations_produce_the_schema_snapshot(empty_database_url):
    """spool/sql/schema.sql is what the migrations make, to the character."""
    migrate.migrate(empty_database_url)
    made = schema.dump(empty_database_url)
    if os.environ.get("DATARUN_WRITE_SCHEMA") == "1":
        schema.SNAPSHOT.write_text(made, encoding="utf-8")
    assert schema.SNAPSHOT.read_text(encoding="utf-8") == made, (
        "spool/sql/schema.sql differs from what the migrations make: rewrite it with "
        "DATARUN_WRITE_SCHEMA=1 python -m pytest tests/integration/test_migrate.py -k snapshot"
    )
