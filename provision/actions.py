"""What `datarun provision` does on each runner, all runners in parallel.

On a runner, everything lives in `~/datarun/` (`--remote-dir`): `venv/`, `wheels/`
(uploaded from the master's wheelhouse), `datarun.toml` (mode 0600: the database URL
is a secret, so it never goes on a command line), `home/`, and what keeps the executor
running (`provision.services`: a systemd unit, system or user, or `run.sh` with
`executor.lock`, `executor.pid` and `executor.log`). Every step first looks whether it
is needed, so applying twice changes nothing the second time and says so. One runner's
failure is its own line in the summary; the others go on.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from provision import services
from provision.runners import Runner
from provision.ssh import Remote, RemoteError, q
from provision.wheels import Wheelhouse
from spool.errors import DatarunError

log = logging.getLogger(__name__)


@dataclass
class Options:
    """What every runner gets, the same: built on the master once."""

    database_url: str
    spool: str  # the spool's path on the runners
    known_hosts: Path
    accept_new: bool = False
    identity: Path | None = None
    remote_dir: str = "datarun"
    sshfs: str | None = None  # mount this source at the spool path when it is missing
    dry_run: bool = False
    heartbeat_timeout: float = 120.0
    heartbeat: Callable[[str, float], dict[str, Any] | None] | None = None  # name, since
    tuning: dict[str, float] = field(default_factory=dict)  # the master's lease, heartbeat...


@dataclass
class Report:
    host: str
    ok: bool = True
    state: str = ""
    executors: str = ""
    heartbeat_age: str = ""
    version: str = ""
    changes: list[str] = field(default_factory=list)
    error: str = ""


class Step:
    """Does (or, in a dry run, only tells) what a runner needs."""

    def __init__(self, remote: Remote, report: Report, dry_run: bool) -> None:
        self.remote, self.report, self.dry_run = remote, report, dry_run

    def __call__(self, what: str, action: Callable[[], object]) -> None:
        self.report.changes.append(("would " if self.dry_run else "") + what)
        if not self.dry_run:
            action()


def config_text(runner: Runner, options: Options) -> str:
    lines = ["# Written by datarun provision; it holds a secret: keep it 0600.",
             f"database_url = {json.dumps(options.database_url)}",
             f"spool = {json.dumps(options.spool)}",
             'home = "home"',
             f"workers = {runner.workers}",
             f"queues = {json.dumps(runner.queues)}",
             f"runner_name = {json.dumps(runner.name)}"]  # fmt: skip
    lines += [f"{key} = {value!r}" for key, value in sorted(options.tuning.items())]
    if runner.hard_seconds:
        lines.append(f"fold_timeout_seconds = {runner.hard_seconds}")
    if runner.soft_seconds:
        lines.append(f"fold_cpu_seconds = {runner.soft_seconds}")
    return "\n".join(lines) + "\n"


def _python(remote: Remote) -> str:
    """A python on the runner of the master's version: the wheels are built for it."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    seen: list[str] = []
    for candidate in (f"python{want}", "python3"):
        code, out, _ = remote.run(
            f"{candidate} -c 'import sys, venv, platform; "
            "print(\"%d.%d\" % sys.version_info[:2], platform.machine())'", check=False
        )  # fmt: skip
        if code != 0:
            continue
        version, machine = out.split()
        if version == want and machine == platform.machine():
            return candidate
        seen.append(f"{candidate} is {version} on {machine}")
    found = "; ".join(seen) or "none found"
    raise RemoteError(f"no python {want} with venv on {platform.machine()} here, as on the "
                      f"master ({found}): install python{want} and python{want}-venv")  # fmt: skip


def _restart(service: services.Service) -> None:
    _stop_before_start(service)
    service.start()


def _stop_before_start(service: services.Service) -> None:
    try:
        service.stop()
    except RemoteError as exc:  # starting now would run a second executor beside it
        raise RemoteError(f"{exc} (so not started again)") from None


def _service(remote: Remote, base: str, sftp_base: str, report: Report,
             dry_run: bool) -> services.Service:  # fmt: skip
    """The way to run the executor here; lingering enabled when a user unit needs it."""
    detected = services.detect(remote, base)
    if detected.wants_linger:
        if dry_run:
            report.changes.append("would enable lingering (loginctl enable-linger)")
            detected = replace(detected, linger=True)
        elif (reason := services.enable_linger(remote)) is None:
            report.changes.append("enable lingering (loginctl enable-linger)")
            detected = replace(detected, linger=True)
        else:  # the user unit would stop at logout: the supervisor does not
            report.changes.append(f"no lingering ({reason}): run.sh, not systemd --user")
    return services.build(remote, detected, base, sftp_base)


def _put(remote: Remote, content: bytes, path: str, mode: int) -> None:
    if "/" in path:  # the user unit's folder may not exist yet
        remote.run(f"mkdir -p {q(path.rsplit('/', 1)[0])}")
    remote.put(content, path, mode)


def apply(runner: Runner, options: Options, wheels: Wheelhouse) -> Report:
    report = Report(runner.name)
    base = f"$HOME/{options.remote_dir}"
    sftp_base = options.remote_dir
    with _connect(runner, options) as remote:
        step = Step(remote, report, options.dry_run)
        python = _python(remote)
        _check_spool(remote, options, step)  # before anything changes on the runner
        remote.run(f"mkdir -p {base}/wheels {base}/home && chmod 700 {base}")
        if remote.run(f"test -x {base}/venv/bin/python", check=False)[0] != 0:
            step(f"create a virtual environment ({python})",
                 lambda: remote.run(f"{python} -m venv {base}/venv"))  # fmt: skip
        _upload_wheels(remote, wheels, sftp_base, step)
        changed = _install(remote, wheels, base, sftp_base, step)
        config = config_text(runner, options).encode()
        if remote.read(f"{sftp_base}/datarun.toml") != config:
            changed = True
            step("write datarun.toml (mode 0600)",
                 lambda: remote.put(config, f"{sftp_base}/datarun.toml", 0o600))  # fmt: skip
        service = _service(remote, base, sftp_base, report, options.dry_run)
        for path, (content, mode) in service.files().items():
            if remote.read(path) != content:
                changed = changed or service.kind != "supervisor"  # a unit is read at start
                step(f"write {path.rsplit('/', 1)[-1]}", partial(_put, remote, content, path, mode))
        for other in services.others(remote, service, base, sftp_base):
            step(f"stop the executor ({other.kind}, replaced by {service.kind})",
                 partial(_stop_before_start, other))  # fmt: skip
        if service.running():
            if changed:
                step("restart the executor", lambda: _restart(service))
        else:
            step(f"start the executor ({service.kind})", service.start)
        if not options.dry_run:
            _wait_heartbeat(runner, options, report, service.log_hint,
                            since=time.time() - 5 if report.changes else 0.0)  # fmt: skip
        report.state = "running" if not options.dry_run else "dry run"
        report.version = wheels.datarun_wheel.split("-")[1]
    return _done(report)


def _upload_wheels(remote: Remote, wheels: Wheelhouse, sftp_base: str, step: Step) -> None:
    """The wheels the runner lacks, or holds at another size, uploaded by SFTP."""
    present = remote.listing(f"{sftp_base}/wheels")
    missing = {n: s for n, s in wheels.files().items() if present.get(n) != s}
    if missing:
        size = sum(missing.values()) / 2**20

        def upload() -> None:
            for name in missing:
                remote.put_file(wheels.folder / name, f"{sftp_base}/wheels/{name}")

        step(f"upload {len(missing)} wheels ({size:.0f} MB)", upload)


def _install(remote: Remote, wheels: Wheelhouse, base: str, sftp_base: str,
             step: Step) -> bool:  # fmt: skip
    """Install datarun's wheel and the extras from the uploaded wheels, when the runner's
    `installed.txt` says it has other ones; whether it did (or would)."""
    installed = (remote.read(f"{sftp_base}/installed.txt") or b"").decode().strip()
    wanted = " ".join([wheels.digest, *wheels.extras])  # datarun's wheel and the extras
    if installed == wanted:
        return False
    pip = (f"{base}/venv/bin/python -m pip install --quiet --no-index --find-links "
           f"{base}/wheels")  # fmt: skip
    wheel = f"{base}/wheels/{wheels.datarun_wheel}"

    def install() -> None:
        remote.run(f"{pip} {wheel} " + " ".join(q(e) for e in wheels.extras))
        remote.run(f"{pip} --force-reinstall --no-deps {wheel}")
        remote.put(wanted.encode(), f"{sftp_base}/installed.txt", 0o644)

    step(f"install datarun {wheels.datarun_wheel.split('-')[1]}", install)
    return True


def _done(report: Report) -> Report:
    if not report.changes:
        report.changes.append("nothing to do")
    return report


def _connect(runner: Runner, options: Options) -> Remote:
    return Remote(runner, known_hosts=options.known_hosts, accept_new=options.accept_new,
                  identity=options.identity)  # fmt: skip


def _show_heartbeat(report: Report, row: dict[str, Any]) -> None:
    report.executors = f"{row['count']} ({row['workers']} workers)"
    report.heartbeat_age = f"{row['age']:.1f} s"


def _check_spool(remote: Remote, options: Options, step: Step) -> None:
    spool = q(options.spool)
    looks = f"test -d {spool}/incoming -a -d {spool}/store -a -d {spool}/predictions"
    if remote.run(looks, check=False)[0] != 0:
        if not options.sshfs:
            raise RemoteError(f"the spool is not mounted at {options.spool} (no incoming/, "
                              "store/, predictions/ there); mount it, or give --sshfs")  # fmt: skip
        step(f"mount {options.sshfs} at {options.spool} with sshfs", lambda: remote.run(
            f"mkdir -p {spool} && sshfs {q(options.sshfs)} {spool} -o reconnect,"
            "ServerAliveInterval=15"))  # fmt: skip
        if not options.dry_run:
            remote.run(looks)
    probe = f"{spool}/predictions/.datarun-probe-$$"
    if remote.run(f": > {probe} && rm -f {probe}", check=False)[0] != 0:
        raise RemoteError(f"the spool at {options.spool} is not writable here "
                          "(predictions/ must be)")  # fmt: skip


def _wait_heartbeat(runner: Runner, options: Options, report: Report, hint: str,
                    since: float) -> None:  # fmt: skip
    if options.heartbeat is None:
        return
    deadline = time.monotonic() + options.heartbeat_timeout
    while time.monotonic() < deadline:
        row = options.heartbeat(runner.name, since)
        if row is not None:
            _show_heartbeat(report, row)
            return
        time.sleep(1)
    raise RemoteError(f"no heartbeat from the executor within {options.heartbeat_timeout:.0f} s "
                      f"(see {hint})")  # fmt: skip


def inspect(runner: Runner, options: Options) -> Report:
    report = Report(runner.name)
    base = f"$HOME/{options.remote_dir}"
    with _connect(runner, options) as remote:
        service = services.choose(remote, base, options.remote_dir)
        report.state = ("running" if service.running() else "stopped") + f" ({service.kind})"
        for other in services.others(remote, service, base, options.remote_dir):
            report.state += f", and a {other.kind} running"
        code, out, _ = remote.run(f"{base}/venv/bin/python -c 'import datarun; "
                                  "print(datarun.__version__)'", check=False)  # fmt: skip
        report.version = out.strip() if code == 0 else "not installed"
    if options.heartbeat is not None:
        row = options.heartbeat(runner.name, 0.0)
        if row is not None:
            _show_heartbeat(report, row)
    return report


def stop(runner: Runner, options: Options, restart: bool = False) -> Report:
    report = Report(runner.name)
    base = f"$HOME/{options.remote_dir}"
    with _connect(runner, options) as remote:
        step = Step(remote, report, options.dry_run)
        service = services.choose(remote, base, options.remote_dir)
        live = [service] if service.running() else []
        for running in [*live, *services.others(remote, service, base, options.remote_dir)]:
            stopping = partial(_stop_before_start, running) if restart else running.stop
            step(f"stop the executor ({running.kind})", stopping)
        if restart:
            step(f"start the executor ({service.kind})", service.start)
        report.state = "running" if restart else "stopped"
    if restart and not options.dry_run:
        _wait_heartbeat(runner, options, report, service.log_hint, since=time.time() - 5)
    return _done(report)


def execute(runner: Runner, options: Options, command: str) -> Report:
    """Run an admin's command on a runner, inside its environment (venv first on PATH)."""
    report = Report(runner.name)
    base = f"$HOME/{options.remote_dir}"
    with _connect(runner, options) as remote:
        if options.dry_run:
            report.changes.append(f"would run: {command}")
            return report
        code, out, err = remote.run(f"cd {base} && PATH={base}/venv/bin:$PATH "
                                    f"VIRTUAL_ENV={base}/venv sh -c {q(command)}",
                                    check=False)  # fmt: skip
        tail = (out.strip() or err.strip()).splitlines()[-1:] or [""]
        report.changes.append(f"exit {code}: {tail[0][:200]}")
        if code != 0:
            lines = (err.strip() or out.strip()).splitlines() or [f"exit {code}"]
            report.ok, report.error = False, lines[-1][:300]
    return report


def on_all(runners: list[Runner], action: Callable[[Runner], Report]) -> list[Report]:
    """Every runner at once; a failure is that runner's line, never the others' end."""

    def guarded(runner: Runner) -> Report:
        try:
            return action(runner)
        except (RemoteError, DatarunError) as exc:
            return Report(runner.name, ok=False, state="failed", error=str(exc))
        except Exception as exc:
            log.exception("provisioning %s failed", runner.name)
            return Report(runner.name, ok=False, state="failed",
                          error=f"{type(exc).__name__}: {exc}")  # fmt: skip

    with ThreadPoolExecutor(max_workers=min(16, len(runners))) as pool:
        return list(pool.map(guarded, runners))
