"""What a submission cannot do from its fold, when the executor is root: fork without
end, write anywhere but its work folder, reach the database or the network, read the
test labels (from files or from memory). Plus a gigabyte of output, capped. Each fold
fails with its own reason; good folds run."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.sandbox import SANDBOX_USER
from spool.layout import Spool
from tests.conftest import reachable_tmp
from tests.helpers import bundles as B
from tests.integration.test_executor import drain, hostile, job_rows, register

pytestmark = pytest.mark.chaos

root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="folds run as the sandbox user only when the executor is root"
)

FORKS = """import os, time
        while True:
            if os.fork() == 0:
                os.setsid()  # out of the fold's session and process group
                time.sleep(30)
                os._exit(0)"""

SCRIBBLES = """import os
        worked = []
        for path in {paths!r}:
            try:
                with open(os.path.join(path, 'planted.txt'), 'w') as handle:
                    handle.write('x')
                worked.append(path)
            except OSError:
                pass
        raise RuntimeError(f'writes that worked: {{worked}}')"""

CALLS = """import socket
        made = []
        for family, address in {targets!r}:
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(tuple(address) if family == socket.AF_INET else address)
                made.append(address)
            except OSError:
                pass
        raise RuntimeError(f'connections made: {{made}}')"""

PEEKS = """import gc, pandas
        seen = []
        for path in {paths!r}:
            try:
                with open(path, 'rb') as handle:
                    handle.read(1)
                seen.append(path)
            except OSError:
                pass
        for o in gc.get_objects():  # the zygote's data, inherited: the test rows' labels?
            if isinstance(o, pandas.DataFrame) and 'target' in o.columns and len(o) == 30:
                seen.append('memory')
        raise RuntimeError(f'labels seen: {{seen}}')"""

LITTERS = """import os
        for folder in ('/tmp', '/var/tmp', '/dev/shm'):
            with open(os.path.join(folder, 'datarun-litter-' + str(os.getpid())), 'w') as f:
                f.write('for the next fold of this user')
        flag = [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')]
        raise RuntimeError(f'littered; {flag[0].split()[1]}')"""

SHOUTS = """import sys
        for _ in range(1024):
            sys.stdout.write('x' * 2**20)
        raise RuntimeError('said a gigabyte')"""


@pytest.fixture
def spool() -> Iterator[Spool]:
    """A spool that other users may enter, as on a real mount: so a refusal below comes
    from the store's own permissions, not from a private temporary folder above it."""
    base = reachable_tmp("datarun-test-sandbox-")
    layout = Spool(base / "spool")
    layout.create()
    yield layout
    shutil.rmtree(base, ignore_errors=True)


def sandbox_processes() -> list[int]:
    """Live processes of the sandbox users (zombies aside: they await pid 1)."""
    uids = {u.pw_uid for u in pwd.getpwall() if u.pw_name.startswith(f"{SANDBOX_USER}-")}
    found = []
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or os.stat(f"/proc/{entry}").st_uid not in uids:
                continue
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


@root_only
def test_a_fork_bomb_writes_and_connections_are_refused(
    spool, make_watcher, make_executor, database_url, pg_server, tmp_path
):
    listener = socket.create_server(("127.0.0.1", 0))  # a database port on this machine
    port = listener.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end
            accepted.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    stored = spool.root / "store" / "submissions"
    db_socket = str(pg_server.socket_dir / ".s.PGSQL.55432")
    targets = [(int(socket.AF_INET), ("127.0.0.1", port)), (int(socket.AF_UNIX), db_socket)]
    paths = [str(p) for p in (*[stored / str(i) for i in range(1, 5)], stored,
                              spool.store / "datasets" / "1", spool.predictions,
                              spool.results, spool.incoming_submissions, spool.root)]  # fmt: skip
    dataset = spool.store / "datasets" / "1"
    secrets = [str(dataset / "bundle" / "train.csv"),
               str(dataset / "prepared" / "test_labels.parquet")]  # fmt: skip
    subs = {"good": B.CLASSIFIER, "forks": hostile(FORKS),
            "peeks": hostile(PEEKS.format(paths=secrets)), "litters": hostile(LITTERS),
            "scribbles": hostile(SCRIBBLES.format(paths=paths)),
            "calls": hostile(CALLS.format(targets=targets))}  # fmt: skip
    register(spool, make_watcher, tmp_path, subs)
    drain(make_executor(timeout_seconds=20, max_processes=20))
    reasons: dict[str, set[str]] = {}
    for row in job_rows(database_url):
        reasons.setdefault(row["name"], set()).add(row["error"] or row["state"])
    assert reasons == {
        "good": {"predicted"},
        "forks": {"BlockingIOError: [Errno 11] Resource temporarily unavailable"},
        "scribbles": {"RuntimeError: writes that worked: []"},
        "calls": {"RuntimeError: connections made: []"},
        "peeks": {"RuntimeError: labels seen: []"},
        "litters": {"RuntimeError: littered; 1"},  # and no_new_privs is set
    }
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):  # removed before the user's next fold
        assert not list(Path(folder).glob("datarun-litter-*")), folder
    assert all(Path(path).is_file() for path in secrets)  # there, for the master only
    assert not accepted
    assert not list(spool.root.rglob("planted.txt"))
    assert sandbox_processes() == []  # the bomb's sleepers went with their fold
    listener.close()


def test_a_gigabyte_of_output_is_capped_in_the_log(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path, {"shouts": hostile(SHOUTS), "good": B.CLASSIFIER})
    drain(make_executor(timeout_seconds=120, log_mb=1))
    rows = job_rows(database_url)
    assert {r["error"] or r["state"] for r in rows} == {"RuntimeError: said a gigabyte",
                                                        "predicted"}  # fmt: skip
    for row in rows:
        if row["name"] == "shouts":
            log = spool.root / row["log_path"]
            assert 2**20 <= log.stat().st_size < 2**20 + 2000
            assert "output capped" in log.read_text()[-300:]
            assert log.read_text().startswith("RuntimeError: said a gigabyte")
