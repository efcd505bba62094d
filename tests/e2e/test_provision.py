"""`datarun provision` against real sshd: two runners on 127.0.0.1, each its own user.

Each "runner" is a Debian sshd on its own port with its own host key, logging in a user
of its own, so the two runners' homes, virtual environments and executors are apart as
on two machines. The master is a real `datarun master` on an embedded server that
listens on TCP with a password, as runners need.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spool import db
from tests.conftest import age, reachable_tmp
from tests.helpers import bundles as B
from tests.helpers.cli import DATARUN

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SECRET = "pw-never-shown-7f3a"


@dataclass
class Host:
    user: str
    port: int
    home: Path
    key: Path  # the host key (private)

    @property
    def name(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"


@dataclass
class Lab:
    base: Path
    client_key: Path
    hosts: list[Host]
    env: dict[str, str]
    url: str  # the master's local URL

    def provision(self, *args: str, runners: Path | None = None) -> subprocess.CompletedProcess:
        command, rest = args[0], args[1:]
        return subprocess.run(
            [*DATARUN, "provision", command, str(runners or self.base / "runners.txt"), *rest,
             "--identity", str(self.client_key)],
            env=self.env, capture_output=True, text=True, timeout=900, cwd="/",
        )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _runner_user(name: str, home: Path) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        _sh("useradd", "--system", "--user-group", "--shell", "/bin/sh", "--home-dir",
            str(home), name)  # fmt: skip
    # `*`: no password, but not locked (sshd refuses keys of locked accounts).
    _sh("usermod", "--home", str(home), "--password", "*", name)


def _start_sshd(base: Path, host: Host) -> subprocess.Popen:
    config = base / f"sshd_{host.port}.conf"
    config.write_text(
        f"Port {host.port}\nListenAddress 127.0.0.1\nHostKey {host.key}\n"
        f"PidFile {base}/sshd_{host.port}.pid\nAllowUsers {host.user}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin no\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )  # fmt: skip
    log = open(base / f"sshd_{host.port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", host.port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    reason = (base / f"sshd_{host.port}.log").read_text().strip().splitlines()[-1:] or ["?"]
    pytest.skip(f"sshd cannot be started here: {reason[0]}")


def _wait(check, timeout: float, what: str, lab: Lab | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            _diagnosis(lab) if lab else ""
        )
        time.sleep(0.3)


def _diagnosis(lab: Lab) -> str:
    with db.connect(lab.url) as conn:
        jobs = conn.execute("SELECT id, state, executor_id, error FROM jobs").fetchall()
    logs = [(lab.base / "master.log")] + [h.home / "datarun" / "executor.log" for h in lab.hosts]
    tails = "".join(f"\n--- {p}\n" + "\n".join(p.read_text().splitlines()[-30:])
                    for p in logs if p.is_file())  # fmt: skip
    return f"\njobs: {jobs}\nexecutors: {_executors(lab)}{tails}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if not Path(SSHD).is_file():
        pytest.skip("sshd is not installed (apt-get install openssh-server; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("two runner users are needed, and only root can create them and run "
                    "an sshd that logs them in (CI runs as root)")  # fmt: skip
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    base = reachable_tmp("datarun-test-ssh-")
    client_key = base / "client_key"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key))
    hosts: list[Host] = []
    procs: list[subprocess.Popen] = []
    for i in (1, 2):
        user, home = f"datarun-runner{i}", base / f"runner{i}"
        _runner_user(user, home)
        (home / ".ssh").mkdir(parents=True)
        shutil.copy(f"{client_key}.pub", home / ".ssh" / "authorized_keys")
        entry = pwd.getpwnam(user)
        for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        key = base / f"host{i}_ed25519"
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        host = Host(user, _free_port(), home, key)
        hosts.append(host)
        procs.append(_start_sshd(base, host))
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DATARUN_")}
    env.update(DATARUN_HOME=str(base / "master"), DATARUN_DB_LISTEN="127.0.0.1",
               DATARUN_DB_PORT=str(_free_port()), DATARUN_DB_PASSWORD=SECRET,
               DATARUN_HEARTBEAT_SECONDS="1", DATARUN_LEASE_SECONDS="15",
               DATARUN_POLL_SECONDS="0.5", DATARUN_SWEEP_SECONDS="0.5",
               DATARUN_RESCAN_SECONDS="2", COLUMNS="250")  # fmt: skip
    master = None
    try:
        subprocess.run([*DATARUN, "init"], env=env, check=True, capture_output=True, cwd="/")
        # The spool is shared with the runners' users: they read store/, write predictions/.
        spool = base / "master" / "spool"
        (base / "master").chmod(0o755)
        _sh("chmod", "-R", "a+rX", str(spool))
        (spool / "predictions").chmod(0o1777)
        url = subprocess.run([*DATARUN, "db", "url"], env=env, check=True, capture_output=True,
                             text=True, cwd="/").stdout.strip()  # fmt: skip
        log = open(base / "master.log", "w")  # noqa: SIM115
        master = subprocess.Popen([*DATARUN, "-v", "master"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd="/")  # fmt: skip
        (base / "runners.txt").write_text(
            "# two runners, one fold at a time each\n"
            + "".join(f"{h.name}  1  high,low  300\n" for h in hosts)
        )
        yield Lab(base, client_key, hosts, env, url)
    finally:
        if master is not None:
            master.send_signal(signal.SIGTERM)
            master.wait(timeout=60)
        for host in hosts:
            subprocess.run(["pkill", "-KILL", "-u", host.user], check=False)
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run([*DATARUN, "db", "down"], env=env, capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _executors(lab: Lab) -> list[dict]:
    with db.connect(lab.url) as conn:
        return conn.execute("SELECT * FROM executors ORDER BY id").fetchall()


def _drop_iris_and(lab: Lab, names: list[str]) -> None:
    spool = lab.base / "master" / "spool"
    work = reachable_tmp("datarun-test-ssh-drop-")
    if not (spool / "incoming" / "submissions" / "iris").is_dir():
        age(B.dataset(work, n_splits=4)).rename(spool / "incoming" / "datasets" / "iris")
        _wait((spool / "incoming" / "submissions" / "iris").is_dir, 60, "iris")
    for i, name in enumerate(names):
        root = B.submission(work, name=name, variant=i)
        age(root).rename(spool / "incoming" / "submissions" / "iris" / name)
    shutil.rmtree(work, ignore_errors=True)


def _jobs(lab: Lab) -> list[dict]:
    with db.connect(lab.url) as conn:
        return conn.execute(
            "SELECT j.state, e.host FROM jobs j LEFT JOIN executors e ON e.id = j.executor_id"
        ).fetchall()


def test_apply_starts_heartbeating_executors_that_run_folds_and_is_idempotent(lab):
    first = lab.provision("apply", "--accept-new-host-keys")
    assert first.returncode == 0, first.stdout + first.stderr
    for host in lab.hosts:
        assert host.name in first.stdout
        config = host.home / "datarun" / "datarun.toml"
        assert config.stat().st_mode & 0o777 == 0o600
        assert pwd.getpwuid(config.stat().st_uid).pw_name == host.user
    assert first.stdout.count("install datarun") == 2
    assert first.stdout.count("start the executor (supervisor)") == 2
    live = [e for e in _executors(lab) if e["state"] == "running"]
    assert sorted(e["host"] for e in live) == sorted(h.name for h in lab.hosts)

    _drop_iris_and(lab, ["one", "two"])
    _wait(lambda: (j := _jobs(lab)) and all(r["state"] == "scored" for r in j) and len(j) == 8,
          240, "the folds run on the runners", lab)  # fmt: skip
    assert {r["host"] for r in _jobs(lab)} == {h.name for h in lab.hosts}
    status = lab.base / "master" / "spool" / "results" / "iris" / "one.v1" / "status.json"
    _wait(lambda: status.is_file() and '"scored"' in status.read_text(), 60, "scores")

    again = lab.provision("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("nothing to do") == 2, again.stdout
    assert [e["id"] for e in _executors(lab) if e["state"] == "running"] == [e["id"] for e in live]
    for out in (first, again):
        assert SECRET not in out.stdout + out.stderr
    for host in lab.hosts:
        assert SECRET not in (host.home / "datarun" / "executor.log").read_text()


def test_exec_installs_a_package_into_the_runners_environment(lab):
    check = "python -c 'import six; print(six.__version__)'"
    assert lab.provision("exec", check).returncode == 1
    installed = lab.provision("exec", "pip install --quiet six")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    after = lab.provision("exec", check)
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.count("exit 0") == 2


def test_status_then_stop_then_dry_run(lab):
    status = lab.provision("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("running") >= 2
    stopped = lab.provision("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout.count("stop the executor") == 2
    assert not [e for e in _executors(lab) if e["state"] == "running"]
    for host in lab.hosts:
        left = subprocess.run(["pgrep", "-u", host.user, "-f", "datarun"], capture_output=True)
        assert left.returncode == 1, left.stdout
    dry = lab.provision("restart", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.count("would start the executor") == 2
    assert not [e for e in _executors(lab) if e["state"] == "running"]


def test_an_unreachable_port_and_a_wrong_host_key_fail_only_their_own_line(lab):
    good, tampered = lab.hosts
    closed = _free_port()
    runners = lab.base / "mixed.txt"
    runners.write_text(f"{good.name}\n{tampered.name}\n{good.user}@127.0.0.1:{closed}\n"
                       f"nobody@127.0.0.1:{good.port}\n")  # fmt: skip
    known = lab.base / "master" / "known_hosts"
    original = known.read_text()
    impostor = lab.base / "impostor"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor))
    forged = [line for line in original.splitlines() if f"]:{tampered.port} " not in line]
    forged.append(f"[127.0.0.1]:{tampered.port} " + " ".join(
        Path(f"{impostor}.pub").read_text().split()[:2]))  # fmt: skip
    known.write_text("\n".join(forged) + "\n")
    try:
        result = lab.provision("status", runners=runners)
    finally:
        known.write_text(original)
    assert result.returncode == 1
    lines = {line.split(": ", 1)[0]: line for line in result.stdout.splitlines()
             if "@127.0.0.1:" in line.split(" ", 1)[0]}  # fmt: skip
    assert good.name not in lines  # it answered: it has no error line
    assert f"{good.name} │ stopped" in result.stdout
    assert "host key mismatch" in lines[tampered.name]
    assert lines[tampered.name].count("SHA256:") == 2  # offered and remembered
    assert "unreachable" in lines[f"{good.user}@127.0.0.1:{closed}"]
    assert "authentication refused for nobody" in lines[f"nobody@127.0.0.1:{good.port}"]
    assert "3 of 4 runners failed" in result.stdout + result.stderr


def test_an_unknown_host_key_is_refused_unless_accepted(lab):
    known = lab.base / "master" / "known_hosts"
    original = known.read_text()
    known.write_text("")
    try:
        refused = lab.provision("status")
        assert refused.returncode == 1
        # Each runner's error line (the table, unwrapped when piped, may show it too).
        starts = tuple(f"{h.name}: unknown host key ssh-ed25519 SHA256:" for h in lab.hosts)
        unknown = [line for line in refused.stdout.splitlines() if line.startswith(starts)]
        assert len(unknown) == 2, refused.stdout
        assert known.read_text() == ""
        accepted = lab.provision("status", "--accept-new-host-keys")
        assert accepted.returncode == 0, accepted.stdout
        assert sorted(known.read_text().splitlines()) == sorted(original.splitlines())
    finally:
        known.write_text(original)


def test_a_missing_spool_fails_before_anything_changes(lab):
    configs = {h.user: (h.home / "datarun" / "datarun.toml").read_bytes() for h in lab.hosts}
    result = lab.provision("apply", "--spool", "/nowhere/spool")
    assert result.returncode == 1
    for host in lab.hosts:
        assert f"{host.name}: the spool is not mounted at /nowhere/spool" in result.stdout
    for host in lab.hosts:
        assert (host.home / "datarun" / "datarun.toml").read_bytes() == configs[host.user]


# A stand-in for a supervisor the runner's account cannot signal (started by root by
# hand, say): it holds the runner's supervisor lock, as a supervisor does.
HOLD_LOCK = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
    "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)"
)


def _supervisors(host: Host) -> list[int]:
    """The `sh run.sh` processes of a runner's user."""
    uid = pwd.getpwnam(host.user).pw_uid
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and entry.stat().st_uid == uid
                and ((entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sh", b"run.sh"])
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _lock_file(host: Host) -> Path:
    lock = host.home / "datarun" / "executor.lock"
    if not lock.exists():
        lock.touch(mode=0o600)
        entry = pwd.getpwnam(host.user)
        os.chown(lock, entry.pw_uid, entry.pw_gid)
    return lock


def test_a_pid_file_naming_another_live_process_is_not_taken_for_the_supervisor(lab):
    host = lab.hosts[0]
    assert not _supervisors(host)
    entry = pwd.getpwnam(host.user)
    # The pid the file names now belongs to another process of the same user: one the
    # runner's account could signal, as a reused pid would be.
    stranger = subprocess.Popen(["sleep", "300"], user=entry.pw_uid, group=entry.pw_gid)
    try:
        (host.home / "datarun" / "executor.pid").write_text(f"{stranger.pid}\n")
        status = lab.provision("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"{host.name} │ stopped (supervisor)" in status.stdout
        stopped = lab.provision("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert stopped.stdout.count("nothing to do") == 2
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_a_failed_stop_is_its_runners_line_and_restart_starts_no_second_supervisor(lab):
    host, other = lab.hosts
    assert not _supervisors(host)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(_lock_file(host))],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        (host.home / "datarun" / "executor.pid").write_text(f"{holder.pid}\n")
        cannot = f"cannot stop the supervisor (pid {holder.pid}, user root): not permitted"
        stopped = lab.provision("stop")
        assert stopped.returncode == 1, stopped.stdout + stopped.stderr
        assert f"{host.name}: {cannot}; it is still running" in stopped.stdout
        assert "1 of 2 runners failed" in stopped.stdout + stopped.stderr
        status = lab.provision("status")
        assert f"{host.name} │ running (supervisor)" in status.stdout

        restarted = lab.provision("restart")
        assert restarted.returncode == 1, restarted.stdout + restarted.stderr
        assert f"{host.name}: {cannot}; it is still running (so not started again)" in (
            restarted.stdout)  # fmt: skip
        assert not _supervisors(host)  # no second supervisor beside the one it cannot stop
        assert len(_supervisors(other)) == 1  # the other runner restarted
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()

    # With nothing in the way, restart replaces each runner's supervisor by one new one.
    before = {h.user: _supervisors(h) for h in lab.hosts}
    restarted = lab.provision("restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert restarted.stdout.count("start the executor (supervisor)") == 2
    for h in lab.hosts:
        [pid] = _supervisors(h)
        assert pid not in before[h.user]
        assert int((h.home / "datarun" / "executor.pid").read_text()) == pid
    stopped = lab.provision("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(_supervisors(h) for h in lab.hosts)
