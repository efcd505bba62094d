"""How a runner keeps its executor running: a systemd unit, or a small supervisor.

- root on a systemd machine: a system unit (`/etc/systemd/system`);
- another account whose `systemd --user` manager answers: a user unit
  (`~/.config/systemd/user`), with lingering so that it runs without a login and
  across reboots; logs go to the user's journal;
- otherwise `run.sh`, a `sh` loop that restarts the executor when it dies and forwards
  SIGTERM, started by `provision.supervise`, which holds a lock while it lives (that
  module says why a lock), its pid in `executor.pid`, its output in `executor.log`.

All start `venv/bin/datarun executor` with `DATARUN_CONFIG` naming the 0600 file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provision.ssh import Remote, RemoteError, q

log = logging.getLogger(__name__)

UNIT_NAME = "datarun-executor.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
USER_UNIT_PATH = f".config/systemd/user/{UNIT_NAME}"  # SFTP paths are relative to home
STOP_SECONDS = 60  # the executor gives running folds 30 s (stop_grace_seconds) by default
# `systemctl --user` needs the user's runtime folder; a non-interactive SSH command
# may not have it set even when the manager runs.
USER_ENV = 'export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"; '
SUPERVISE_SOURCE = (Path(__file__).parent / "supervise.py").read_text()

SUPERVISOR = """#!/bin/sh
# Written by datarun provision: runs the executor, starts it again if it dies.
# Started by datarun's supervise step, which holds executor.lock on fd 9 while this runs.
cd "$(dirname "$0")" || exit 1
export DATARUN_CONFIG="$PWD/datarun.toml"
stop() {
    trap - TERM INT
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
    exit 0
}
trap stop TERM INT
while :; do
    ./venv/bin/datarun executor 9<&- &
    child=$!
    wait "$child"
    sleep 2
done
"""


def unit_text(folder: str, user: bool = False) -> str:
    """The systemd unit of an executor installed in `folder` (an absolute path).

    The system unit (root) restarts always. The user unit restarts on failure with a
    growing delay (RestartSteps and RestartMaxDelaySec need systemd 254; older ones
    ignore them and wait RestartSec each time) and gives up after 30 starts in an hour
    (a crash loop then shows as failed in `status` and in the journal, not as running);
    `default.target` is the user manager's, which lingering starts at boot.
    """
    head = "# Written by datarun provision.\n[Unit]\nDescription=datarun executor\n"
    if user:  # the network targets are the system manager's, not a user's
        head += "StartLimitIntervalSec=3600\nStartLimitBurst=30\n"
    else:
        head += "After=network-online.target remote-fs.target\nWants=network-online.target\n"
    service = (
        f"\n[Service]\nWorkingDirectory={folder}\n"
        f"Environment=DATARUN_CONFIG={folder}/datarun.toml\n"
        f"ExecStart={folder}/venv/bin/datarun executor\n"
    )
    if user:
        service += (
            "Restart=on-failure\nRestartSec=5\nRestartSteps=10\nRestartMaxDelaySec=300\n"
            "StandardOutput=journal\nStandardError=journal\n"
            "SyslogIdentifier=datarun-executor\n"
        )
    else:
        service += "Restart=always\nRestartSec=2\n"
    service += "KillSignal=SIGTERM\nTimeoutStopSec=120\n"
    target = "default.target" if user else "multi-user.target"
    return head + service + f"\n[Install]\nWantedBy={target}\n"


class Service(Protocol):
    kind: str
    log_hint: str  # where an admin reads the executor's output

    def files(self) -> dict[str, tuple[bytes, int]]:
        """SFTP path -> (content, mode) that this way of running needs."""

    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None:
        """Stop the executor, or raise `RemoteError` saying why it still runs."""


class Supervisor:
    kind = "supervisor"

    def __init__(self, remote: Remote, base: str, sftp_base: str) -> None:
        self.remote, self.base, self.sftp_base = remote, base, sftp_base
        self.log_hint = f"~/{sftp_base}/executor.log on the runner"

    def _supervise(self, *args: str) -> str:
        return f'"{self.base}/venv/bin/python" -c {q(SUPERVISE_SOURCE)} {" ".join(args)}'

    def files(self) -> dict[str, tuple[bytes, int]]:
        return {f"{self.sftp_base}/run.sh": (SUPERVISOR.encode(), 0o755)}

    def running(self) -> bool:
        code, out, err = self.remote.run(self._supervise("status", f'"{self.base}"'), check=False)
        if code in (0, 1):
            return code == 0
        if code == 127:  # no venv yet: nothing installed, so nothing runs
            return False
        lines = (err.strip() or out.strip()).splitlines() or [f"exit {code}"]
        raise RemoteError(lines[-1][:300])

    def start(self) -> None:
        self.remote.run(self._supervise("start", f'"{self.base}"'))

    def stop(self) -> None:
        self.remote.run(self._supervise("stop", f'"{self.base}"', str(STOP_SECONDS)))


class SystemdUnit:
    def __init__(self, remote: Remote, folder: str, user: bool = False) -> None:
        self.remote, self.folder, self.user = remote, folder, user
        self.kind = "systemd --user" if user else "systemd"
        self.log_hint = f"journalctl {'--user ' if user else ''}-u {UNIT_NAME} on the runner"

    def _systemctl(self, *commands: str) -> str:
        """`systemctl` (`--user`) commands, the user's environment set once before them."""
        flag = " --user" if self.user else ""
        joined = " ".join(c.replace("systemctl", f"systemctl{flag}") for c in commands)
        return f"{USER_ENV}{joined}" if self.user else joined

    def files(self) -> dict[str, tuple[bytes, int]]:
        path = USER_UNIT_PATH if self.user else UNIT_PATH
        return {path: (unit_text(self.folder, self.user).encode(), 0o644)}

    def running(self) -> bool:
        active = self._systemctl(f"systemctl is-active --quiet {UNIT_NAME}")
        return self.remote.run(active, check=False)[0] == 0

    def start(self) -> None:
        # reset-failed: a unit that hit its start limit refuses to start until reset.
        self.remote.run(self._systemctl(f"systemctl reset-failed {UNIT_NAME} 2>/dev/null;",
                                        "systemctl daemon-reload &&",
                                        f"systemctl enable --now {UNIT_NAME}"))  # fmt: skip

    def stop(self) -> None:
        self.remote.run(self._systemctl(f"systemctl stop {UNIT_NAME}"))
        if self.running():
            raise RemoteError(f"{UNIT_NAME} is still active after systemctl stop")


def detect_command(base: str) -> str:
    """What the runner offers: the install folder, root or not, systemd, lingering."""
    return (
        f"cd {base} 2>/dev/null && echo folder=$(pwd); echo uid=$(id -u); "
        "[ -d /run/systemd/system ] && echo systemd=yes; "
        'if [ "$(id -u)" != 0 ]; then '
        f"{USER_ENV}systemctl --user show-environment >/dev/null 2>&1 && echo user_manager=yes; "
        "[ -e /var/lib/systemd/linger/$(id -un) ] && echo linger=yes; fi; true"
    )


@dataclass(frozen=True)
class Detected:
    folder: str | None  # absolute; None before the first apply
    root: bool = False
    systemd: bool = False
    user_manager: bool = False  # `systemctl --user` answers (not root)
    linger: bool = False

    @classmethod
    def parse(cls, out: str) -> Detected:
        seen = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        folder = seen.get("folder", "")
        return cls(folder=folder if folder.startswith("/") else None,
                   root=seen.get("uid") == "0", systemd=seen.get("systemd") == "yes",
                   user_manager=seen.get("user_manager") == "yes",
                   linger=seen.get("linger") == "yes")  # fmt: skip

    @property
    def wants_linger(self) -> bool:
        """A user manager without lingering: enabling it makes the user unit usable."""
        return self.folder is not None and self.user_manager and not self.linger

    @property
    def kind(self) -> str:
        if self.folder is None:
            return "supervisor"
        if self.root and self.systemd:
            return "systemd"
        # Without lingering the user's manager, and the unit, stop at logout.
        if not self.root and self.user_manager and self.linger:
            return "systemd --user"
        return "supervisor"


def detect(remote: Remote, base: str) -> Detected:
    return Detected.parse(remote.run(detect_command(base), check=False)[1])


def enable_linger(remote: Remote) -> str | None:
    """Let the user's manager run without a login; None, or why it could not."""
    code, out, err = remote.run("loginctl enable-linger", check=False)
    if code == 0:
        return None
    lines = (err.strip() or out.strip()).splitlines() or [f"exit {code}"]
    return lines[-1][:200]


def build(remote: Remote, detected: Detected, base: str, sftp_base: str) -> Service:
    if detected.kind == "supervisor" or detected.folder is None:
        return Supervisor(remote, base, sftp_base)
    return SystemdUnit(remote, detected.folder, user=detected.kind == "systemd --user")


def choose(remote: Remote, base: str, sftp_base: str) -> Service:
    """The runner's way of running the executor, as `apply` set it up."""
    return build(remote, detect(remote, base), base, sftp_base)


def others(remote: Remote, chosen: Service, base: str, sftp_base: str) -> list[Service]:
    """Running services of another kind than `chosen` (say, the supervisor an apply
    started before systemd was there): stopped before `chosen` starts, never beside it."""
    if chosen.kind == "supervisor":
        return []
    supervisor = Supervisor(remote, base, sftp_base)
    return [supervisor] if supervisor.running() else []
