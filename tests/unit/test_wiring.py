"""datarun.wiring: every setting reaches the daemon field it is meant for.

The settings below differ from their defaults and from each other, so a setting wired
to the wrong field, or not wired at all, changes the configuration that is compared.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from datarun import wiring
from datarun.settings import Settings
from executor.daemon import ExecutorConfig
from spool.bundles import Limits
from watcher.daemon import WatcherConfig
from watcher.intake import IntakeConfig
from watcher.master import MasterConfig

MB = 2**20


@pytest.fixture
def s(clean_env: Path) -> Settings:
    return wiring.settings(
        {
            "home": clean_env / "home",
            "db_port": 55001,
            "db_listen": "127.0.0.2",
            "db_password": "pw",
            "lease_seconds": 41.0,
            "heartbeat_seconds": 7.0,
            "poll_seconds": 3.5,
            "rescan_seconds": 11.0,
            "sweep_seconds": 1.5,
            "max_attempts": 5,
            "settle_seconds": 2.5,
            "watch_poll_seconds": 0.75,
            "wait_for_dataset_seconds": 600.0,
            "prepare_timeout_seconds": 123.0,
            "prepare_memory_mb": 1111,
            "prepare_file_mb": 2222,
            "max_dataset_mb": 333,
            "max_submission_mb": 44,
            "workers": 6,
            "queues": "low,high",
            "fold_timeout_seconds": 99.0,
            "fold_cpu_seconds": 88.0,
            "fold_memory_mb": 777,
            "fold_max_processes": 17,
            "fold_log_mb": 2.5,
            "fold_disk_mb": 555,
            "fold_network": True,
            "fold_threads": 3,
            "stop_grace_seconds": 12.0,
            "shared_folds": 3,
            "short_fold_seconds": 0.25,
            "runner_name": "runner@example:22",
            "scratch_dir": clean_env / "scratch",
            "database_url": None,  # None is "not given", as from the CLI
        }
    )


def test_executor_config_takes_every_fold_and_timing_setting(s: Settings, clean_env: Path):
    config = wiring.executor_config(s)
    assert config == ExecutorConfig(
        workers=6,
        queues=("low", "high"),
        heartbeat_seconds=7.0,
        lease_seconds=41.0,
        poll_seconds=3.5,
        timeout_seconds=99.0,
        cpu_seconds=88.0,
        memory_mb=777,
        max_processes=17,
        log_mb=2.5,
        disk_mb=555,
        network=True,
        threads=3,
        stop_grace_seconds=12.0,
        shared_folds=3,
        short_fold_seconds=0.25,
        scratch=clean_env / "scratch",
        name="runner@example:22",
    )
    # every field but the probed isolation comes from a setting, none left at its default
    defaults = ExecutorConfig()
    left = [f.name for f in fields(config) if getattr(config, f.name) == getattr(defaults, f.name)]
    assert left == ["isolation"]


def test_watcher_config_takes_the_intake_settings(s: Settings):
    for poll in (False, True):
        assert wiring.watcher_config(s, poll) == WatcherConfig(
            settle_seconds=2.5,
            rescan_seconds=11.0,
            poll_seconds=0.75,
            poll=poll,
            intake=IntakeConfig(
                dataset_limits=Limits(max_bytes=333 * MB),
                submission_limits=Limits(max_bytes=44 * MB, max_files=2_000),
                prepare_timeout=123.0,
                prepare_memory_mb=1111,
                prepare_file_mb=2222,
                wait_for_dataset=600.0,
                max_attempts=5,
            ),
        )


def test_master_config_reaps_at_half_the_lease(s: Settings):
    assert wiring.master_config(s) == MasterConfig(
        sweep_seconds=1.5,
        results_seconds=1.5,
        reap_seconds=20.5,
        rescan_seconds=11.0,
        lease_seconds=41.0,
    )


def test_the_embedded_server_is_the_settings_one(s: Settings, clean_env: Path):
    server = wiring.server(s)
    assert (server.home, server.port, server.listen) == (clean_env / "home", 55001, "127.0.0.2")


def test_a_configured_database_url_is_used_as_is_and_nothing_is_started(clean_env: Path):
    url = "postgresql://u:secret@db.example:5433/datarun"
    s = wiring.settings({"home": clean_env / "home", "database_url": url})
    assert wiring.database_url(s) == url
    assert not (clean_env / "home").exists()  # no embedded server was made
