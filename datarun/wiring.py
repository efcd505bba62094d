"""From the settings to what datarun runs: the database, the embedded server, and each
daemon's configuration.

Pure wiring, importable without typer: every CLI command goes through these functions,
and a unit test checks that each setting reaches the field it is meant for. The daemons
import scikit-learn, so their modules are imported only by the functions that build
their configurations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from datarun.embedded import EmbeddedServer
from datarun.settings import Settings, load_settings
from spool import db, migrate
from spool.bundles import Limits
from spool.errors import DatarunError

if TYPE_CHECKING:
    from executor.daemon import ExecutorConfig
    from watcher.daemon import WatcherConfig
    from watcher.master import MasterConfig

MB = 2**20


def settings(overrides: Mapping[str, Any]) -> Settings:
    """The settings, with the CLI's options (None: not given) over everything else."""
    return load_settings(**overrides)


def server(s: Settings) -> EmbeddedServer:
    return EmbeddedServer(
        s.home,
        port=s.db_port,
        listen=s.db_listen,
        password=s.db_password.get_secret_value() if s.db_password else None,
    )


def database_url(s: Settings) -> str:
    """The URL of the configured server; the embedded one is started on demand."""
    if s.database_url is not None:
        return s.database_url.get_secret_value()
    embedded = server(s)
    embedded.up()
    return embedded.url()


def schema_ready(url: str) -> None:
    """Refuse to run a daemon against a schema older than this datarun's."""
    with db.connect(url) as conn:
        status = migrate.status(conn)
    if status.pending:
        raise DatarunError(
            f"the database schema is at version {status.current}, this datarun needs "
            f"{status.current + len(status.pending)}: run `datarun init`"
        )


def watcher_config(s: Settings, poll: bool) -> WatcherConfig:
    from watcher.daemon import WatcherConfig
    from watcher.intake import IntakeConfig

    return WatcherConfig(
        settle_seconds=s.settle_seconds,
        rescan_seconds=s.rescan_seconds,
        poll_seconds=s.watch_poll_seconds,
        poll=poll,
        intake=IntakeConfig(
            dataset_limits=Limits(max_bytes=s.max_dataset_mb * MB),
            submission_limits=Limits(max_bytes=s.max_submission_mb * MB, max_files=2_000),
            prepare_timeout=s.prepare_timeout_seconds,
            prepare_memory_mb=s.prepare_memory_mb,
            prepare_file_mb=s.prepare_file_mb,
            wait_for_dataset=s.wait_for_dataset_seconds,
            max_attempts=s.max_attempts,
        ),
    )


def master_config(s: Settings) -> MasterConfig:
    from watcher.master import MasterConfig

    return MasterConfig(
        sweep_seconds=s.sweep_seconds,
        results_seconds=s.sweep_seconds,
        reap_seconds=s.lease_seconds / 2,
        rescan_seconds=s.rescan_seconds,
        lease_seconds=s.lease_seconds,
    )


def executor_config(s: Settings) -> ExecutorConfig:
    from executor.daemon import ExecutorConfig

    return ExecutorConfig(
        workers=s.workers,
        queues=tuple(s.queues.split(",")),
        heartbeat_seconds=s.heartbeat_seconds,
        lease_seconds=s.lease_seconds,
        poll_seconds=s.poll_seconds,
        timeout_seconds=s.fold_timeout_seconds,
        cpu_seconds=s.fold_cpu_seconds,
        memory_mb=s.fold_memory_mb,
        max_processes=s.fold_max_processes,
        log_mb=s.fold_log_mb,
        disk_mb=s.fold_disk_mb,
        network=s.fold_network,
        threads=s.fold_threads,
        stop_grace_seconds=s.stop_grace_seconds,
        shared_folds=s.shared_folds,
        short_fold_seconds=s.short_fold_seconds,
        scratch=s.scratch_dir,
        name=s.runner_name,
    )
