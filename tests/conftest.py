"""The test harness: one real PostgreSQL server per test session, a template database
built by the migrations, and a fresh database cloned from it for each test that asks.

There is no fake database anywhere. Tests are marked by their folder:
unit (no database, no subprocess), integration (real Postgres, real folders),
e2e (real `datarun` processes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datarun.embedded import EmbeddedServer
from executor.daemon import Executor, ExecutorConfig
from spool import db, migrate
from spool.layout import Spool
from watcher.daemon import Watcher, WatcherConfig
from watcher.intake import IntakeConfig

TEMPLATE = "datarun_template"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for kind in ("unit", "integration", "e2e"):
            if f"{os.sep}{kind}{os.sep}" in str(item.path):
                item.add_marker(kind)


def reachable_tmp(prefix: str) -> Path:
    """A temporary folder the database server user can traverse (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedServer]:
    """The session's server, under a throw-away home, on a port no other test uses."""
    home = reachable_tmp("datarun-test-pg-")
    server = EmbeddedServer(home / "home", port=55432)
    server.up()
    db.ensure_database(server.url(), TEMPLATE)
    migrate.migrate(server.url(TEMPLATE))
    yield server
    server.down()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def database_url(pg_server: EmbeddedServer) -> Iterator[str]:
    """A fresh database with the full schema, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    db.ensure_database(pg_server.url(), name, template=TEMPLATE)
    yield pg_server.url(name)
    db.drop_database(pg_server.url(), name)


@pytest.fixture
def empty_database_url(pg_server: EmbeddedServer) -> Iterator[str]:
    """A fresh database without any schema, for migration tests."""
    name = f"empty_{uuid.uuid4().hex[:16]}"
    db.ensure_database(pg_server.url(), name, template="template1")
    yield pg_server.url(name)
    db.drop_database(pg_server.url(), name)


@pytest.fixture
def conn(database_url: str) -> Iterator[db.Conn]:
    with db.connect(database_url) as connection:
        yield connection


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATARUN_* variable leaks in from the machine; the cwd holds no datarun.toml."""
    for key in list(os.environ):
        if key.upper().startswith("DATARUN_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    layout = Spool(tmp_path / "spool")
    layout.create()
    return layout


def age(path: Path, seconds: float = 60) -> Path:
    """Make a drop look settled: every mtime `seconds` in the past."""
    past = time.time() - seconds
    paths = [path]
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):  # links are not followed
            paths += [Path(folder, name) for name in dirs + files]
    for p in paths:
        os.utime(p, (past, past), follow_symlinks=False)
    return path


def staged(spool: Spool) -> list[Path]:
    """Tokens in .staging (drops being processed); hidden bookkeeping files aside."""
    return sorted(p for p in spool.staging.iterdir() if not p.name.startswith("."))


def drop(source: Path, folder: Path, *, settled: bool = True) -> Path:
    """Move a prepared bundle into an intake folder the way users should: one rename."""
    folder.mkdir(parents=True, exist_ok=True)
    if settled:
        age(source)
    target = folder / source.name
    source.rename(target)
    return target


@pytest.fixture
def make_watcher(spool: Spool, database_url: str) -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def make(**intake: Any) -> Watcher:
        config = WatcherConfig(
            settle_seconds=intake.pop("settle_seconds", 0.3),
            rescan_seconds=intake.pop("rescan_seconds", 1.0),
            poll_seconds=0.2,
            poll=intake.pop("poll", False),
            intake=IntakeConfig(**intake),
        )
        watcher = Watcher(spool, database_url, config)
        made.append(watcher)
        return watcher

    yield make
    for watcher in made:
        watcher.close()


@pytest.fixture
def make_executor(database_url: str, spool: Spool) -> Iterator[Callable[..., Executor]]:
    made: list[Executor] = []

    def make(**overrides) -> Executor:
        config = ExecutorConfig(**{"workers": 2, "timeout_seconds": 60, "heartbeat_seconds": 0.5,
                                   "lease_seconds": 2.0, "poll_seconds": 0.5,
                                   "memory_mb": 300, **overrides})  # fmt: skip
        executor = Executor(database_url, spool, config)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()
