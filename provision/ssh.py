"""One SSH session to a runner (paramiko): key authentication, host keys checked.

Host keys are checked against the user's ~/.ssh/known_hosts and datarun's own
`<home>/known_hosts`. An unknown key is refused, with its fingerprint, unless the admin
accepts new keys for a first contact (then it is remembered in datarun's file); a key
that differs from the remembered one is always refused. Secrets never travel on a
command line: files are written through SFTP, created with their final mode.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import stat
import threading
from pathlib import Path
from typing import Any

import paramiko

from provision.runners import Runner
from spool.errors import DatarunError

CONNECT_TIMEOUT = 10
_REMEMBER_LOCK = threading.Lock()


class RemoteError(DatarunError):
    """Something on one runner failed; the message is that host's line in the summary."""


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Policy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    def __init__(self, accept_new: bool, remember: Path) -> None:
        self.accept_new = accept_new
        self.remember = remember

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.accept_new:
            raise RemoteError(
                f"unknown host key {key.get_name()} {fingerprint(key)}: check it, then run "
                "again with --accept-new-host-keys to remember it"
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        # Runners are provisioned in parallel threads: append, never rewrite, the file.
        with _REMEMBER_LOCK:
            self.remember.parent.mkdir(parents=True, exist_ok=True)
            with self.remember.open("a") as handle:
                handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class Remote:
    def __init__(
        self, runner: Runner, *, known_hosts: Path, accept_new: bool = False,
        identity: Path | None = None,
    ) -> None:  # fmt: skip
        self.runner = runner
        self.client = paramiko.SSHClient()
        user_known = Path.home() / ".ssh" / "known_hosts"
        if user_known.is_file():
            self.client.load_system_host_keys(str(user_known))
        if known_hosts.is_file():
            self.client.load_host_keys(str(known_hosts))
        self.client.set_missing_host_key_policy(_Policy(accept_new, known_hosts))
        self.identity = identity

    def __enter__(self) -> Remote:
        r = self.runner
        try:
            self.client.connect(
                r.host, port=r.port, username=r.user, timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
                key_filename=str(self.identity) if self.identity else None,
                allow_agent=True, look_for_keys=True,
            )  # fmt: skip
        except paramiko.BadHostKeyException as exc:
            offered = f"{exc.key.get_name()} {fingerprint(exc.key)}"
            raise RemoteError(
                f"host key mismatch: the host offers {offered}, not the remembered "
                f"{fingerprint(exc.expected_key)}; refused (if the host was reinstalled, remove "
                "its line from the known_hosts file)"
            ) from None
        except paramiko.AuthenticationException:
            raise RemoteError(
                f"authentication refused for {r.user} (key authentication only)"
            ) from None
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            if isinstance(exc, RemoteError):
                raise
            raise RemoteError(f"unreachable: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def run(
        self, command: str, *, check: bool = True, timeout: float = 600
    ) -> tuple[int, str, str]:
        """Run a shell command; its exit code, stdout and stderr (decoded)."""
        try:
            _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            code = stdout.channel.recv_exit_status()
        except (TimeoutError, paramiko.SSHException, OSError) as exc:
            raise RemoteError(f"the command failed to run: {exc}") from None
        if check and code != 0:
            last = (err.strip() or out.strip()).splitlines()[-1:] or [f"exit {code}"]
            raise RemoteError(last[0][:300])
        return code, out, err

    def sftp(self) -> paramiko.SFTPClient:
        return self.client.open_sftp()

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write a file, created with its final mode before any byte is in it."""
        with self.sftp() as sftp:
            try:
                tmp = f"{path}.datarun-tmp"
                with sftp.open(tmp, "wb") as handle:
                    sftp.chmod(tmp, mode)
                    handle.write(data)
                sftp.posix_rename(tmp, path)
            except OSError as exc:
                raise RemoteError(_os_reason(exc, path)) from None

    def put_file(self, local: Path, path: str) -> None:
        with self.sftp() as sftp:
            try:
                sftp.put(str(local), path + ".datarun-tmp")
                sftp.posix_rename(path + ".datarun-tmp", path)
            except OSError as exc:
                raise RemoteError(_os_reason(exc, path)) from None

    def read(self, path: str) -> bytes | None:
        with self.sftp() as sftp:
            try:
                with sftp.open(path, "rb") as handle:
                    data: bytes = handle.read()
                    return data
            except OSError:
                return None

    def listing(self, folder: str) -> dict[str, int]:
        """name -> size of the regular files of a remote folder (empty if none)."""
        with self.sftp() as sftp:
            try:
                return {e.filename: int(e.st_size or 0) for e in sftp.listdir_attr(folder)
                        if e.st_mode is not None and stat.S_ISREG(e.st_mode)}  # fmt: skip
            except OSError:
                return {}


def _os_reason(exc: OSError, path: str) -> str:
    text = str(exc).lower()
    if "no space" in text or getattr(exc, "errno", None) == 28:
        return f"the runner's disk is full (writing {path})"
    return f"cannot write {path}: {exc}"


def q(value: Any) -> str:
    return shlex.quote(str(value))
