"""The embedded PostgreSQL server: one private server under the home folder.

`up` initialises the data folder on first use, starts the server (which outlives the
caller) and creates the `datarun` database; `down` stops it. Both are idempotent and
serialised by a lock file, and `up` recovers from a server or a caller killed by
SIGKILL (stale pid file, half-made data folder, orphan backends). A data folder that
is not ours, is corrupt, or is of another PostgreSQL major version is refused and
left exactly as it is.

This module is the server (up, down, its URLs and state); the data folder is
`datarun.pgdata`, the pid file `datarun.pidfile`, the binaries and the user that runs
them `datarun.pgbin`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from datarun import pgbin, pidfile
from datarun.pgdata import DB_USER, DataFolder
from spool import db
from spool.errors import EmbeddedServerError
from spool.layout import blocking_ancestor, write_atomic

__all__ = ["DB_NAME", "DB_USER", "EmbeddedServer", "ServerState"]

log = logging.getLogger(__name__)

DB_NAME = "datarun"
START_TIMEOUT = 60
SOCKET_PATH_MAX = 100  # sun_path holds 107 bytes; keep a margin


@dataclass(frozen=True)
class ServerState:
    running: bool
    pid: int | None
    port: int
    socket_dir: Path
    listen: str | None
    data_dir: Path
    log_file: Path


class EmbeddedServer:
    def __init__(
        self,
        home: Path,
        *,
        port: int = 54320,
        listen: str | None = None,
        password: str | None = None,
    ) -> None:
        self.home = home.absolute()
        self.port = port
        self.listen = listen
        self._password = password
        self.data = DataFolder(self.home)
        self.log_file = self.home / "log" / "postgres.log"
        self.password_file = self.home / "db-password"

    # ---- what a caller asks -------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        return self.data.path

    @property
    def marker(self) -> Path:
        return self.data.marker

    @property
    def socket_dir(self) -> Path:
        """`<home>/run`, or a short folder in /tmp when that path is too long for a socket."""
        preferred = self.home / "run"
        if len(str(preferred / f".s.PGSQL.{self.port}")) <= SOCKET_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"datarun-{os.geteuid()}-{digest}"

    def url(self, database: str = DB_NAME) -> str:
        """The local (Unix socket) URL; no password is needed there."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{DB_USER}@/{database}?host={host}&port={self.port}"

    def tcp_url(self, *, reveal: bool = False) -> str:
        """The URL runners on other machines use, when the server listens on TCP."""
        if not self.listen:
            raise EmbeddedServerError(
                "the embedded server listens on its local socket only; set "
                "DATARUN_DB_LISTEN=0.0.0.0 (or db_listen in datarun.toml), then "
                "`datarun db down` and `datarun db up`"
            )
        host = socket.getfqdn() if self.listen in ("*", "0.0.0.0", "::") else self.listen
        secret = quote(self.password(), safe="") if reveal else "****"
        return f"postgresql://{DB_USER}:{secret}@{host}:{self.port}/{DB_NAME}"

    def password(self) -> str:
        """The TCP password: the configured one, else one generated once into the home."""
        if self._password:
            return self._password
        if self.password_file.is_file():
            return self.password_file.read_text(encoding="utf-8").strip()
        value = secrets.token_urlsafe(24)
        write_atomic(self.password_file, value + "\n", mode=0o600)
        return value

    def state(self) -> ServerState:
        found = pidfile.read(self.pgdata)
        running = (
            found.pid is not None
            and found.status == "ready"
            and pidfile.is_our_postmaster(found.pid, self.pgdata)
        )
        return ServerState(
            running=running,
            pid=found.pid if running else None,
            port=found.port if running and found.port else self.port,
            socket_dir=Path(found.socket_dir) if running and found.socket_dir else self.socket_dir,
            listen=(found.listen or None) if running else self.listen,
            data_dir=self.pgdata,
            log_file=self.log_file,
        )

    # ---- lifecycle ----------------------------------------------------------------

    def up(self) -> ServerState:
        """Make sure the server runs and the datarun database exists. Idempotent."""
        self._prepare_home()
        with self._locked() as lock:
            current = self.state()
            if current.running:
                self._warn_if_config_differs(current)
            else:
                ident, bins = self._binaries()
                self.data.ensure(ident, bins, holding=lock)
                self.data.write_settings(
                    ident, port=self.port, listen=self.listen, socket_dir=self.socket_dir
                )
                pidfile.clear_stale(self.pgdata)
                self._start(ident, bins)
            db.ensure_database(self.url(), DB_NAME)
            if self.listen:
                db.set_role_password(self.url(), DB_USER, self.password())
            return self.state()

    def down(self) -> bool:
        """Stop the server (fast shutdown); False when it was not running."""
        if not self.home.is_dir():
            return False
        with self._locked():
            if not self.state().running:
                pidfile.clear_stale(self.pgdata)
                return False
            ident, bins = self._binaries()
            result = pgbin.run(self._pg_ctl(bins, "stop", "-m", "fast"), ident)
            if result.returncode != 0:
                raise EmbeddedServerError(
                    f"the database server did not stop: {pgbin.last_line(result.output)}"
                )
            return True

    # ---- steps --------------------------------------------------------------------

    def _prepare_home(self) -> None:
        blocked = blocking_ancestor(self.home) if pgbin.is_root() else None
        if blocked is not None:
            raise EmbeddedServerError(
                f"the database server runs as user {pgbin.SERVER_USER}, which cannot reach "
                f"{self.home} because {blocked} is private; choose a home it can traverse, "
                "e.g. DATARUN_HOME=/var/lib/datarun"
            )
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot create the home folder {self.home}: {exc}") from exc
        if not pgbin.is_root():
            return
        mode = self.home.stat().st_mode
        if mode & 0o011 != 0o011:
            self.home.chmod(mode | 0o011)  # traverse only; the home itself is ours

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """Hold the lock; yields its descriptor, which `initdb` inherits (see `pgdata`)."""
        with open(self.home / "db.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle.fileno()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _binaries(self) -> tuple[pgbin.RunAs, Path]:
        """Who runs the server, and the bin folder that user can execute."""
        return pgbin.server_identity(), pgbin.server_binaries(self.home)

    def _pg_ctl(self, bins: Path, action: str, *options: str) -> list[str]:
        """`pg_ctl ACTION` on our folder, waiting up to START_TIMEOUT, silently."""
        return [
            str(bins / "pg_ctl"),
            action,
            "-D",
            str(self.pgdata),
            *options,
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-s",
        ]

    def _start(self, ident: pgbin.RunAs, bins: Path) -> None:
        for folder, mode in ((self.log_file.parent, 0o755), (self.socket_dir, 0o700)):
            folder.mkdir(mode=mode, parents=True, exist_ok=True)
            ident.chown(folder)
        cmd = self._pg_ctl(bins, "start", "-l", str(self.log_file))
        deadline = time.monotonic() + 20
        while True:
            offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            result = pgbin.run(cmd, ident, new_session=True)
            if result.returncode == 0:
                log.info("database server started on %s", self.socket_dir)
                return
            tail = _read_from(self.log_file, offset) + result.output
            # backends orphaned by a SIGKILLed server hold its shared memory a moment longer
            if "already exists" in tail or "still in use" in tail:
                pidfile.clear_stale(self.pgdata)
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
            raise EmbeddedServerError(
                f"the database server did not start: {_fatal_line(tail)} (log: {self.log_file})"
            )

    def _warn_if_config_differs(self, current: ServerState) -> None:
        if current.port != self.port or (current.listen or None) != (self.listen or None):
            log.warning(
                "the database server runs with port %s and listen %r, not the configured "
                "port %s and listen %r; `datarun db down` then `datarun db up` applies them",
                current.port,
                current.listen,
                self.port,
                self.listen,
            )


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            return handle.read()
    except OSError:
        return ""


def _fatal_line(text: str) -> str:
    """The server's FATAL message, with the line that explains it when there is one."""
    lines = pgbin.nonblank_lines(text)
    for i, line in enumerate(lines):
        for tag in ("FATAL:", "PANIC:"):
            if tag in line:
                message = line.split(tag, 1)[1].strip()
                before = lines[i - 1] if i else ""
                for cause in ("LOG:", "ERROR:", "DETAIL:"):
                    if cause in before:
                        return f"{before.split(cause, 1)[1].strip()}; {message}"
                return message
    return pgbin.last_line(text)
