"""Settings: one model read from `DATARUN_*` variables and an optional `datarun.toml`.

Precedence, highest first: explicit arguments (the CLI's options), environment variables,
the configuration file, defaults. The configuration file is the one `DATARUN_CONFIG`
names, else `./datarun.toml`, else `<home>/datarun.toml` (the home given as an argument,
`--home`, else `DATARUN_HOME`, else the default); none is required.
This module is a leaf: daemons receive a `Settings` object, they never read the
environment themselves.
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from spool.errors import ConfigError
from spool.urls import mask_url

log = logging.getLogger(__name__)

ENV_PREFIX = "DATARUN_"
CONFIG_NAME = "datarun.toml"

Source = Literal["argument", "environment", "file", "default"]


def default_home() -> Path:
    """Root gets a system place the database server user can reach; others a private one."""
    if os.geteuid() == 0:
        return Path("/var/lib/datarun")
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "datarun"


def config_file(environ: dict[str, str] | None = None, home: Path | None = None) -> Path | None:
    """The configuration file in effect, or None when there is none. `home` is the one
    given as an argument (`datarun --home`), which outranks DATARUN_HOME here as well."""
    env = os.environ if environ is None else environ
    named = env.get(ENV_PREFIX + "CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV_PREFIX}CONFIG names {path}, which is not a file")
        return path
    local = Path.cwd() / CONFIG_NAME
    if local.is_file():
        return local
    if home is None and env.get(ENV_PREFIX + "HOME"):
        home = Path(env[ENV_PREFIX + "HOME"])
    in_home = (home.expanduser() if home is not None else default_home()) / CONFIG_NAME
    return in_home if in_home.is_file() else None


# The file load_settings chose (a 1-tuple: it may be None), for the settings source below:
# pydantic calls it with no way to pass arguments through.
_chosen_file: ContextVar[tuple[Path | None] | None] = ContextVar("datarun_config", default=None)


class Settings(BaseSettings):
    """Everything an admin can set. Field docs are shown by `datarun config`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
    )

    home: Path = Field(
        default_factory=default_home,
        description="datarun's own folder: the embedded database, its logs, runner configs",
    )
    spool: Path | None = Field(
        default=None, description="the shared spool folder (default: <home>/spool)"
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL; unset means the embedded server under <home>",
    )
    db_port: int = Field(
        default=54320, ge=1024, le=65535, description="port of the embedded server"
    )
    db_listen: str | None = Field(
        default=None,
        description="TCP address the embedded server also listens on, for runners "
        "(e.g. 0.0.0.0); unset means the local socket only",
    )
    db_password: SecretStr | None = Field(
        default=None,
        description="password for TCP clients of the embedded server "
        "(default: generated, kept in <home>/db-password)",
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="an executor silent for this long loses its jobs"
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="how often executors heartbeat")
    poll_seconds: float = Field(
        default=2.0, gt=0, description="executors' polling fallback when NOTIFY is missed"
    )
    rescan_seconds: float = Field(
        default=10.0, gt=0, description="how often the watcher rescans the spool"
    )
    sweep_seconds: float = Field(
        default=1.0, gt=0, description="how often the sweeper scores new predictions"
    )
    max_attempts: int = Field(
        default=3, ge=1, description="a fold job is failed after this many lost leases"
    )
    settle_seconds: float = Field(
        default=2.0, gt=0, description="a drop unchanged this long is complete (no marker)"
    )
    watch_poll_seconds: float = Field(
        default=1.0, gt=0, description="scan interval of `datarun master --poll`"
    )
    wait_for_dataset_seconds: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="a submission for an unknown dataset waits this long, then is rejected",
    )
    prepare_timeout_seconds: float = Field(
        default=300.0, gt=0, description="time allowed to read a dataset and compute its folds"
    )
    prepare_memory_mb: int | None = Field(
        default=4096, ge=64, description="memory preparing a dataset may add to what it starts with"
    )
    prepare_file_mb: int | None = Field(
        default=4096, ge=1, description="the largest file preparing a dataset may write"
    )
    max_dataset_mb: int = Field(default=2048, ge=1, description="cap on a dataset bundle")
    workers: int = Field(default=2, ge=1, le=256, description="folds an executor runs at once")
    queues: str = Field(
        default="high,low",
        pattern=r"^(high|low)(,(high|low))?$",
        description="the queues an executor serves, in order",
    )
    fold_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="hard limit: a fold's wall-clock time (group killed)"
    )
    fold_cpu_seconds: float | None = Field(
        default=None, gt=0, description="soft limit: a fold's CPU time (RLIMIT_CPU)"
    )
    fold_memory_mb: int | None = Field(
        default=4096, ge=64, description="a fold's memory beyond what it starts with"
    )
    fold_max_processes: int = Field(
        default=64,
        ge=1,
        description="processes a sandboxed fold may run (as its own datarun-run-N user)",
    )
    fold_log_mb: float = Field(default=10.0, gt=0, description="cap on a fold's log")
    fold_disk_mb: int = Field(
        default=1024,
        ge=1,
        description="a fold's disk: its work/ folder, and its /tmp, /var/tmp and /dev/shm "
        "together (a tmpfs each, counted in its memory); without namespaces, its largest file",
    )
    fold_network: bool = Field(
        default=False,
        description="let folds use the network (by default a root executor gives each fold "
        "an empty network namespace)",
    )
    fold_threads: int = Field(default=1, ge=1, description="OMP/MKL/OpenBLAS threads per fold")
    stop_grace_seconds: float = Field(
        default=30.0, ge=0, description="on SIGTERM, time given to running folds to finish"
    )
    shared_folds: int = Field(
        default=8,
        ge=1,
        description="folds of one short submission run in turn in one child (1: a child per fold)",
    )
    short_fold_seconds: float = Field(
        default=1.0,
        gt=0,
        description="a submission whose folds take less is short: its folds share a warm child",
    )
    runner_name: str | None = Field(
        default=None, description="how executors here name themselves (default: host name)"
    )
    scratch_dir: Path | None = Field(
        default=None, description="where folds get their scratch folders (default: /tmp)"
    )
    max_submission_mb: int = Field(default=50, ge=1, description="cap on a submission bundle")

    @field_validator("home", "spool")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().absolute()

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be at most half of "
                f"lease_seconds ({self.lease_seconds}), or healthy executors lose their jobs"
            )
        return self

    @property
    def spool_path(self) -> Path:
        return self.spool if self.spool is not None else self.home / "spool"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_file_in_effect()),
        )


def _file_in_effect() -> Path | None:
    chosen = _chosen_file.get()
    return chosen[0] if chosen is not None else config_file()


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning any invalid value into one readable ConfigError."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    path = config_file(home=overrides.get("home"))
    token = _chosen_file.set((path,))
    try:
        if path is not None:
            _check_toml(path)
            _warn_if_exposed(path)
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    finally:
        _chosen_file.reset(token)


def _check_toml(path: Path) -> None:
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


_warned: set[Path] = set()


def exposed_secret(path: Path) -> str | None:
    """What to say when `path` holds a database password (`db_password`, or a
    `database_url` with one) that its group or other users may read; else None. A
    warning, not a refusal: an administrator's usual 0644 must not stop a running
    system, and folds cannot read it where they have namespaces of their own."""
    try:
        mode = path.stat().st_mode
        if not mode & (stat.S_IRGRP | stat.S_IROTH):
            return None
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not _holds_password(data):
        return None
    who = "every user" if mode & stat.S_IROTH else "its group"
    return (f"{path} holds a database password and {who} may read it "
            f"(mode {stat.S_IMODE(mode):o}): chmod 600 {path}")  # fmt: skip


def _holds_password(data: dict[str, Any]) -> bool:
    if data.get("db_password"):
        return True
    url = data.get("database_url")
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        return bool(parts.password) or "password" in parse_qs(parts.query)
    except ValueError:
        return True  # unreadable as a URL: it may well hold one


def _warn_if_exposed(path: Path) -> None:
    """Said once per file and process, whichever command reads the file."""
    warning = exposed_secret(path)
    if warning and path not in _warned:
        _warned.add(path)
        log.warning("%s", warning)


def _describe(exc: ValidationError, path: Path | None) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        where = f"{ENV_PREFIX}{field.upper()}"
        if path is not None:
            where += f" or '{field}' in {path}"
        parts.append(f"{field}: {err['msg']} (set by {where})")
    return "invalid settings: " + "; ".join(parts)


def sources(settings: Settings, overrides: dict[str, Any] | None = None) -> dict[str, Source]:
    """Where each effective value came from, for `datarun config`."""
    path = config_file(home=(overrides or {}).get("home"))
    in_file: dict[str, Any] = {}
    if path is not None:
        in_file = tomllib.loads(path.read_text(encoding="utf-8"))
    given = {k for k, v in (overrides or {}).items() if v is not None}
    env_names = {key.upper() for key in os.environ}
    out: dict[str, Source] = {}
    for name in Settings.model_fields:
        if name in given:
            out[name] = "argument"
        elif (ENV_PREFIX + name).upper() in env_names:
            out[name] = "environment"
        elif name in in_file:
            out[name] = "file"
        else:
            out[name] = "default"
    return out


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as plain values with every secret masked."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name == "database_url" and value is not None:
            value = mask_url(value.get_secret_value())
        elif isinstance(value, SecretStr):
            value = "****"
        elif isinstance(value, Path):
            value = str(value)
        out[name] = value
    out["spool"] = str(settings.spool_path)
    return out
