"""`datarun provision apply|status|stop|restart|exec RUNNERS`: one action on every runner.

The five commands share how they reach the runners (the runners file, host keys, the
SSH key, the remote folder, --dry-run). `runner_command` declares those options once:
it adds them to each command's signature, in the order `--help` shows them, and hands
the command a `Reach` instead. `provision` and paramiko are imported only when a
command runs, so the rest of the CLI starts without them.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from datarun.cli_common import out, settings
from datarun.wiring import database_url, server
from spool.errors import DatarunError

if TYPE_CHECKING:
    from provision.actions import Options, Report
    from provision.runners import Runner

    Action = Callable[[Runner, Options], Report]

provision_app = typer.Typer(
    help="Configure runner machines over SSH: install, configure, start, stop, inspect.",
    no_args_is_help=True,
)

RunnersFile = Annotated[Path, typer.Argument(help="The runners file: `user@host workers queues "
                                             "hard soft` a line.")]  # fmt: skip
AcceptNew = Annotated[
    bool, typer.Option("--accept-new-host-keys", help="Remember unknown host keys (first contact).")
]
Identity = Annotated[Path | None, typer.Option(help="The SSH private key to use.")]
RemoteDir = Annotated[str, typer.Option(help="Folder under the runners' home.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be done.")]


@dataclass(frozen=True)
class Reach:
    """The options every provision command takes: which runners, how to reach them."""

    runners_file: Path
    accept_new_host_keys: bool = False
    identity: Path | None = None
    remote_dir: str = "datarun"
    dry_run: bool = False  # `status` changes nothing and has no --dry-run


def _parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> Any:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=annotation, default=default)  # fmt: skip


_CONTEXT = _parameter("ctx", typer.Context)
_RUNNERS_FILE = _parameter("runners_file", RunnersFile)
_OPTIONS = (
    _parameter("accept_new_host_keys", AcceptNew, False),
    _parameter("identity", Identity, None),
    _parameter("remote_dir", RemoteDir, "datarun"),
    _parameter("dry_run", DryRun, False),
)


def runner_command(
    name: str, *, dry_run: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `func(ctx, reach, *own)` as `datarun provision NAME`, with the shared
    options in its signature: RUNNERS_FILE, its own arguments, the shared options,
    then its own options."""

    def register(func: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())[2:]
        shared = [p for p in _OPTIONS if dry_run or p.name != "dry_run"]
        arguments = [p for p in own if p.default is inspect.Parameter.empty]
        options = [p for p in own if p.default is not inspect.Parameter.empty]
        names = [_RUNNERS_FILE.name, *(p.name for p in shared)]

        @functools.wraps(func)
        def command(ctx: typer.Context, **given: Any) -> None:
            func(ctx, Reach(**{n: given.pop(n) for n in names}), **given)

        params = [_CONTEXT, _RUNNERS_FILE, *arguments, *shared, *options]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        provision_app.command(name)(command)
        return command

    return register


def _on_all(ctx: typer.Context, reach: Reach, action: Action,
            spool: str | None = None, sshfs: str | None = None) -> None:  # fmt: skip
    """Run one provisioning action on every runner; exit 1 unless all succeeded."""
    from datarun import provisioning

    s = settings(ctx)
    runners = provisioning.load_runners(reach.runners_file)
    url = database_url(s)
    options = provisioning.options(
        s, server(s), url, spool=spool, accept_new=reach.accept_new_host_keys,
        identity=reach.identity, remote_dir=reach.remote_dir, dry_run=reach.dry_run, sshfs=sshfs,
    )  # fmt: skip
    started = time.monotonic()
    from provision import actions

    reports = actions.on_all(runners, lambda r: action(r, options))
    secret = provisioning.secret_of(options.database_url)
    if not provisioning.summary(reports, secret, out):
        failed = sum(not r.ok for r in reports)
        raise DatarunError(f"{failed} of {len(reports)} runners failed "
                           f"({provisioning.elapsed(started)})")  # fmt: skip


@runner_command("apply")
def provision_apply(
    ctx: typer.Context,
    reach: Reach,
    extra: Annotated[list[str] | None, typer.Option(help="More packages for runners.")] = None,
    spool: Annotated[str | None, typer.Option(help="The spool's path on the runners.")] = None,
    sshfs: Annotated[
        str | None, typer.Option(help="Mount this (host:path) at the spool path if missing.")
    ] = None,
) -> None:
    """Install the master's datarun on every runner, configure it, start its executors,
    and wait until they heartbeat. Idempotent.

    Example: datarun provision apply runners.txt --accept-new-host-keys
    """
    from datarun import provisioning
    from provision import actions

    wheels = provisioning.build_wheels(settings(ctx), tuple(extra or ()))
    _on_all(ctx, reach, lambda r, o: actions.apply(r, o, wheels), spool=spool, sshfs=sshfs)


@runner_command("status", dry_run=False)
def provision_status(ctx: typer.Context, reach: Reach) -> None:
    """Each runner's executors: running or not, heartbeat age, datarun version.

    Example: datarun provision status runners.txt
    """
    from provision import actions

    _on_all(ctx, reach, actions.inspect)


@runner_command("stop")
def provision_stop(ctx: typer.Context, reach: Reach) -> None:
    """Stop every runner's executors (running folds finish or are handed back).

    Example: datarun provision stop runners.txt
    """
    from provision import actions

    _on_all(ctx, reach, actions.stop)


@runner_command("restart")
def provision_restart(ctx: typer.Context, reach: Reach) -> None:
    """Stop, then start every runner's executors, and wait for their heartbeat.

    Example: datarun provision restart runners.txt
    """
    from provision import actions

    _on_all(ctx, reach, lambda r, o: actions.stop(r, o, restart=True))


@runner_command("exec")
def provision_exec(
    ctx: typer.Context,
    reach: Reach,
    command: Annotated[str, typer.Argument(help="A shell command, run in datarun's venv.")],
) -> None:
    """Run a command on every runner inside datarun's environment (then restart to use it).

    Example: datarun provision exec runners.txt 'pip install xgboost'
    """
    from provision import actions

    _on_all(ctx, reach, lambda r, o: actions.execute(r, o, command))
