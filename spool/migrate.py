"""Schema migrations: numbered `.sql` files applied in order, each in its own transaction.

The whole run holds an advisory lock, so two processes migrating at once apply each
file once. A file is recorded with its checksum: editing an applied migration is
refused rather than silently ignored.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources import files

from spool import db
from spool.errors import DatabaseError, MigrationError

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Status:
    applied: list[int]
    pending: list[Migration]

    @property
    def current(self) -> int:
        return max(self.applied, default=0)


def available() -> list[Migration]:
    """The migrations shipped with this datarun, in order; a gap in numbering is an error."""
    found: list[Migration] = []
    for entry in (files("spool") / "sql" / "migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8"))
            )
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"migration file {entry.name} is not named NNNN_name.sql")
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing (found {migration.version})")
    return found


def _check(applied: dict[int, dict[str, str]], known: list[Migration]) -> list[Migration]:
    by_version = {m.version: m for m in known}
    newest = max(by_version, default=0)
    for version, row in applied.items():
        if version > newest:
            raise MigrationError(
                f"the database schema is at version {max(applied)}, newer than this datarun "
                f"knows ({newest}); upgrade datarun on this machine"
            )
        if row["checksum"] != by_version[version].checksum:
            raise MigrationError(
                f"migration {version:04d}_{row['name']}.sql was changed after it was applied "
                "to this database; restore the file, or add a new migration instead"
            )
    return [m for m in known if m.version not in applied]


def status(conn: db.Conn) -> Status:
    row = db.fetch_one(conn, "migrations_table_exists")
    rows = db.fetch_all(conn, "migrations_applied") if row and row["present"] else []
    applied = {r["version"]: r for r in rows}
    return Status(applied=sorted(applied), pending=_check(applied, available()))


def migrate(url: str) -> list[Migration]:
    """Bring the database of `url` to the newest schema; returns what was applied."""
    done: list[Migration] = []
    with db.connect(url, application_name="datarun migrate") as conn:
        db.execute(conn, "migrations_lock")
        try:
            db.execute(conn, "migrations_table")
            for migration in status(conn).pending:
                try:
                    with conn.transaction():
                        db.execute_script(conn, migration.sql)
                        db.execute(
                            conn,
                            "migrations_record",
                            {
                                "version": migration.version,
                                "name": migration.name,
                                "checksum": migration.checksum,
                            },
                        )
                except DatabaseError as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
                    ) from exc
                log.info("applied migration %04d_%s", migration.version, migration.name)
                done.append(migration)
        finally:
            if not conn.closed:
                db.execute(conn, "migrations_unlock")
    return done
