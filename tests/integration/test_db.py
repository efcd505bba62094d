from __future__ import annotations

import socket

import pytest

from datarun.embedded import EmbeddedServer
from spool import db
from spool.errors import DatabaseUnavailable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_gives_one_line_naming_the_host_with_password_masked():
    url = f"postgresql://alice:topsecret@127.0.0.1:{closed_port()}/datarun"
    with pytest.raises(DatabaseUnavailable) as err:
        db.connect(url)
    message = str(err.value)
    assert "127.0.0.1" in message
    assert "topsecret" not in message and "****" in message
    assert "\n" not in message


def test_unknown_host_is_named():
    with pytest.raises(DatabaseUnavailable, match="no-such-host.invalid"):
        db.connect("postgresql://u:pw@no-such-host.invalid/datarun")


def test_wrong_database_name_is_reported(pg_server: EmbeddedServer):
    with pytest.raises(DatabaseUnavailable, match='database "nope" does not exist'):
        db.connect(pg_server.url("nope"))


def test_pool_reports_an_unreachable_server_in_one_line():
    url = f"postgresql://u:pw@127.0.0.1:{closed_port()}/datarun"
    with pytest.raises(DatabaseUnavailable, match="127.0.0.1"):
        db.Database(url).open()


def test_pool_transaction_commits_and_rolls_back(database_url):
    with db.Database(database_url, name="test") as pool:
        with pool.transaction() as conn:
            db.execute_script(conn, "create table t (x int); insert into t values (1)")
        with pytest.raises(RuntimeError), pool.transaction() as conn:
            conn.execute("insert into t values (2)")
            raise RuntimeError("boom")
        with pool.connection() as conn:
            assert [r["x"] for r in conn.execute("select x from t").fetchall()] == [1]


def test_ensure_database_is_idempotent(pg_server: EmbeddedServer):
    name = "idem_db"
    try:
        assert db.ensure_database(pg_server.url(), name) is True
        assert db.ensure_database(pg_server.url(), name) is False
    finally:
        db.drop_database(pg_server.url(), name)
