"""How a runner keeps its executor running: a systemd unit, or a small supervisor.

A systemd unit is used when the runner's account is root and systemd runs (it survives
reboots and logouts); otherwise `run.sh`, a `sh` loop started with `setsid nohup` that
restarts the executor when it dies and forwards SIGTERM, its pid in `executor.pid`.
Both start `venv/bin/datarun executor` with `DATARUN_CONFIG` naming the 0600 file.
"""

from __future__ import annotations

from typing import Protocol

from provision.ssh import Remote

UNIT_NAME = "datarun-executor.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"

SUPERVISOR = """#!/bin/sh
# Written by datarun provision: runs the executor, starts it again if it dies.
cd "$(dirname "$0")" || exit 1
export DATARUN_CONFIG="$PWD/datarun.toml"
stop() {
    trap - TERM INT
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
    exit 0
}
trap stop TERM INT
while :; do
    ./venv/bin/datarun executor &
    child=$!
    wait "$child"
    sleep 2
done
"""


def unit_text(folder: str) -> str:
    """The systemd unit of an executor installed in `folder` (an absolute path)."""
    return (
        "# Written by datarun provision.\n[Unit]\nDescription=datarun executor\n"
        "After=network-online.target remote-fs.target\nWants=network-online.target\n\n"
        f"[Service]\nWorkingDirectory={folder}\n"
        f"Environment=DATARUN_CONFIG={folder}/datarun.toml\n"
        f"ExecStart={folder}/venv/bin/datarun executor\n"
        "Restart=always\nRestartSec=2\nKillSignal=SIGTERM\nTimeoutStopSec=120\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


class Service(Protocol):
    kind: str

    def files(self) -> dict[str, tuple[bytes, int]]:
        """SFTP path -> (content, mode) that this way of running needs."""

    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Supervisor:
    kind = "supervisor"

    def __init__(self, remote: Remote, base: str, sftp_base: str) -> None:
        self.remote, self.base, self.sftp_base = remote, base, sftp_base

    def files(self) -> dict[str, tuple[bytes, int]]:
        return {f"{self.sftp_base}/run.sh": (SUPERVISOR.encode(), 0o755)}

    def running(self) -> bool:
        pid = f'"$(cat {self.base}/executor.pid 2>/dev/null)"'
        return self.remote.run(f"kill -0 {pid} 2>/dev/null", check=False)[0] == 0

    def start(self) -> None:
        self.remote.run(f"cd {self.base} && (setsid nohup sh run.sh >> executor.log 2>&1 "
                        "< /dev/null & echo $! > executor.pid)")  # fmt: skip

    def stop(self) -> None:
        pid = f'"$(cat {self.base}/executor.pid 2>/dev/null)"'
        self.remote.run(f"kill -TERM {pid} 2>/dev/null; for i in $(seq 120); do "
                        f"kill -0 {pid} 2>/dev/null || exit 0; sleep 0.5; done; exit 1",
                        check=False)  # fmt: skip


class SystemdUnit:
    kind = "systemd"

    def __init__(self, remote: Remote, folder: str) -> None:
        self.remote, self.folder = remote, folder

    def files(self) -> dict[str, tuple[bytes, int]]:
        return {UNIT_PATH: (unit_text(self.folder).encode(), 0o644)}

    def running(self) -> bool:
        return self.remote.run(f"systemctl is-active --quiet {UNIT_NAME}", check=False)[0] == 0

    def start(self) -> None:
        self.remote.run(f"systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")

    def stop(self) -> None:
        self.remote.run(f"systemctl stop {UNIT_NAME}", check=False)


def choose(remote: Remote, base: str, sftp_base: str) -> Service:
    """systemd for a root account on a systemd machine, else the supervisor."""
    code, out, _ = remote.run(
        f'[ "$(id -u)" = 0 ] && [ -d /run/systemd/system ] && cd {base} 2>/dev/null && pwd',
        check=False,
    )
    if code == 0 and out.strip().startswith("/"):
        return SystemdUnit(remote, out.strip())
    return Supervisor(remote, base, sftp_base)
