"""The `datarun` command as a user runs it: real processes, real servers, real exit codes."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

from tests.e2e.conftest import TESTER
from tests.helpers.cli import run


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_lifecycle_from_the_command_line(env):
    up = run(env, "db", "up")
    assert up.returncode == 0, up.stderr
    assert "database server running" in up.stdout
    status = run(env, "db", "status")
    assert status.returncode == 0 and "running" in status.stdout
    assert "pending: 0001_initial" in status.stdout
    psql = run(env, "db", "psql", "-c", "select 1 as answer")
    assert psql.returncode == 0, psql.stderr
    assert "answer" in psql.stdout and "1 row" in psql.stdout
    applied = run(env, "db", "migrate").stdout.split()
    assert applied[:2] == ["applied", "0001_initial"] and "0002_intake" in applied
    assert "up to date" in run(env, "db", "migrate").stdout
    info = json.loads(run(env, "db", "status", "--json").stdout)
    assert info["running"] and info["schema_version"] >= 2 and info["pending_migrations"] == []
    down = run(env, "db", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    stopped = run(env, "db", "status", "--json")
    assert stopped.returncode == 3 and json.loads(stopped.stdout)["running"] is False


def test_commands_that_need_the_database_start_it(env):
    assert run(env, "db", "psql", "-c", "select 1").returncode == 0
    assert json.loads(run(env, "db", "status", "--json").stdout)["running"]


def test_psql_passes_its_exit_code_through(env):
    bad = run(env, "db", "psql", "-v", "ON_ERROR_STOP=1", "-c", "select nope")
    assert bad.returncode != 0
    assert 'column "nope" does not exist' in bad.stderr


def test_unreachable_database_is_one_line_and_exit_1(env):
    env["DATARUN_DATABASE_URL"] = f"postgresql://alice:topsecret@127.0.0.1:{closed_port()}/dr"
    result = run(env, "db", "status")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("datarun: cannot reach the database at 127.0.0.1:")
    assert "topsecret" not in result.stderr + result.stdout
    verbose = run(env, "-v", "db", "status")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert "topsecret" not in verbose.stderr


def test_external_database_is_used_and_never_started(env, pg_server, database_url):
    env["DATARUN_DATABASE_URL"] = database_url
    refused = run(env, "db", "up")
    assert refused.returncode == 1
    assert "does not start servers it does not own" in refused.stderr
    psql = run(env, "db", "psql", "-tAc", "select current_database()")
    assert psql.stdout.strip() == urlsplit(database_url).path.lstrip("/")
    assert not Path(env["DATARUN_HOME"], "pgdata").exists()


def test_config_shows_sources_and_masks_passwords(env):
    env["DATARUN_DATABASE_URL"] = "postgresql://bob:hunter2@db.example/dr"
    env["DATARUN_MAX_ATTEMPTS"] = "5"
    result = run(env, "config", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["database_url"] == {
        "value": "postgresql://bob:****@db.example/dr",
        "source": "environment",
    }
    assert shown["max_attempts"] == {"value": 5, "source": "environment"}
    assert shown["lease_seconds"]["source"] == "default"
    assert "hunter2" not in result.stdout
    table = run(env, "config")
    assert "hunter2" not in table.stdout and "max_attempts" in table.stdout


def test_bad_setting_is_one_line_and_exit_1(env):
    env["DATARUN_LEASE_SECONDS"] = "forever"
    result = run(env, "config")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "lease_seconds" in result.stderr and "Traceback" not in result.stderr


def test_tcp_url_without_listening_says_how_to_enable_it(env):
    result = run(env, "db", "url", "--tcp")
    assert result.returncode == 1
    assert "DATARUN_DB_LISTEN" in result.stderr


def test_every_command_has_help_with_an_example(env):
    for args in (
        ["config"],
        ["version"],
        ["db", "up"],
        ["db", "down"],
        ["db", "status"],
        ["db", "url"],
        ["db", "psql"],
        ["db", "migrate"],
    ):
        result = run(env, *args, "--help")
        assert result.returncode == 0, args
        assert "Example:" in result.stdout, args


def test_a_normal_user_gets_a_private_server_in_their_own_home(normal_user):
    environ, entry, user_home = normal_user
    up = run(environ, "db", "up", user=TESTER)
    assert up.returncode == 0, up.stderr
    data = user_home / ".local" / "share" / "datarun" / "pgdata"
    assert data.is_dir() and data.stat().st_uid == entry.pw_uid
    pid = int((data / "postmaster.pid").read_text().split()[0])
    assert Path(f"/proc/{pid}").stat().st_uid == entry.pw_uid
    psql = run(environ, "db", "psql", "-tAc", "select current_user", user=TESTER)
    assert psql.stdout.strip() == "datarun", psql.stderr
    assert run(environ, "db", "down", user=TESTER).returncode == 0


def test_home_option_reads_the_configuration_file_in_that_home(env, tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    (given / "datarun.toml").write_text("max_attempts = 5\nlease_seconds = 40\n")
    env_home = Path(env["DATARUN_HOME"])
    env_home.mkdir(parents=True)
    (env_home / "datarun.toml").write_text("max_attempts = 9\n")
    shown = run(env, "--home", str(given), "config", "--json")
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)
    assert values["home"] == {"value": str(given), "source": "argument"}
    assert values["max_attempts"] == {"value": 5, "source": "file"}
    assert values["lease_seconds"] == {"value": 40.0, "source": "file"}
    assert json.loads(run(env, "config", "--json").stdout)["max_attempts"]["value"] == 9
    (given / "datarun.toml").write_text("max_attempts = 0\n")  # errors name that file too
    bad = run(env, "--home", str(given), "config")
    assert bad.returncode == 1 and str(given / "datarun.toml") in bad.stderr, bad.stderr


def test_status_after_db_down_says_the_database_is_down_and_leaves_it_so(env):
    assert run(env, "init").returncode == 0
    assert run(env, "status").returncode == 0
    assert run(env, "db", "down").returncode == 0
    for args in (["status"], ["status", "--json"]):
        result = run(env, *args)
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "datarun: the embedded database server is stopped; start it with `datarun db up` "
            "(`datarun db status` says more)"
        ]
    assert run(env, "db", "status").returncode == 3  # still down: status did not start it
