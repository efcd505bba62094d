"""The one exception tree of datarun.

Every error a user can cause or meet is a `DatarunError`; the CLI prints its message
on one line and exits 1. This module is a leaf: every layer may import it.
"""

from __future__ import annotations


class DatarunError(Exception):
    """Base of every error datarun reports to its user."""


class ConfigError(DatarunError):
    """A setting or the configuration file is invalid."""


class DatabaseError(DatarunError):
    """The database refused or failed a statement."""


class Conflict(DatabaseError):
    """A unique constraint refused a row; `constraint` names it."""

    def __init__(self, message: str, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class Deadlock(DatabaseError):
    """The server broke a lock cycle by rolling this statement back: nothing of it
    happened, so the same statement may run again."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached (down, wrong host, wrong credentials)."""


class MigrationError(DatabaseError):
    """The schema cannot be brought to the version this datarun expects."""


class EmbeddedServerError(DatarunError):
    """The embedded PostgreSQL server cannot be set up, started or stopped."""


class DataFolderRefused(EmbeddedServerError):
    """The database folder is foreign, corrupt or of another PostgreSQL version; it is kept."""


class BundleError(DatarunError):
    """A dropped bundle is invalid. Each line of the message names the file, the field and
    what was expected; it is what REJECTED.txt tells the user."""


class BundleWaiting(DatarunError):
    """A submission names a dataset that is not registered yet; it waits for it."""


class AccessError(DatarunError):
    """A spool folder's permissions (its mode, its POSIX ACLs) cannot be read or set as
    datarun needs, or an ACL is malformed."""


class AclUnsupported(AccessError):
    """The filesystem of a spool folder keeps no POSIX ACLs."""
