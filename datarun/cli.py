"""The `datarun` command: the composition root that wires settings, database and daemons.

The root app and its callback, the top-level commands, and `main`; the `db` and
`provision` groups are `datarun.cli_db` and `datarun.cli_provision`, and what each
command builds from the settings is `datarun.wiring`.

Every error a user can cause ends as one line on stderr and exit code 1; `-v` adds
the traceback.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from datarun import __version__, cli_admin
from datarun.cli_common import State, out, print_json, settings, state
from datarun.cli_db import db_app
from datarun.cli_provision import provision_app
from datarun.cli_teams import dataset_app, team_app
from datarun.logs import setup_logging
from datarun.settings import Settings, effective, sources
from datarun.wiring import (
    database_url,
    executor_config,
    master_config,
    schema_ready,
    watcher_config,
)
from spool import db, migrate, teams
from spool.errors import DatarunError
from spool.layout import Spool
from watcher import sharing

app = typer.Typer(
    name="datarun",
    help="Train and score ML submissions on CV folds, by dropping folders into a spool.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_app, name="db")
app.add_typer(team_app, name="team")
app.add_typer(dataset_app, name="dataset")
app.add_typer(provision_app, name="provision")


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More output; -v shows tracebacks.")
    ] = 0,
    home: Annotated[
        Path | None,
        typer.Option(help="datarun's home folder (overrides DATARUN_HOME).", show_default=False),
    ] = None,
) -> None:
    """datarun: drop dataset and submission folders into the spool, read results there.

    Example: datarun db up && datarun db status
    """
    root = state(ctx)  # main's, else a new one
    root.verbose = verbose
    root.overrides = {"home": home}
    setup_logging(verbose)


def version() -> None:
    """Print datarun's version. Example: datarun version"""
    out.print(__version__)


def config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the effective settings, where each comes from, passwords masked.

    Settings come from options, DATARUN_* variables, then datarun.toml, then defaults.
    Example: DATARUN_LEASE_SECONDS=60 datarun config
    """
    s = settings(ctx)
    values = effective(s)
    origin = sources(s, state(ctx).overrides)
    if as_json:
        print_json({name: {"value": values[name], "source": origin[name]} for name in values})
        return
    table = Table(title="datarun settings", show_lines=False)
    for column in ("setting", "value", "from", "meaning"):
        table.add_column(column)
    for name, field in Settings.model_fields.items():
        table.add_row(name, str(values[name]), origin[name], field.description or "")
    out.print(table)


def _daemon_setup(ctx: typer.Context) -> tuple[Settings, str, Spool, threading.Event]:
    """What every daemon needs: the database (schema current), the spool, and a stop
    event that Ctrl-C and SIGTERM set."""
    s = settings(ctx)
    url = database_url(s)
    schema_ready(url)
    spool = Spool(s.spool_path)
    spool.check()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return s, url, spool, stop


def demo(
    ctx: typer.Context,
    home: Annotated[
        Path | None, typer.Option("--home", help="Where (default: a new temporary folder).")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the database, master and executors running.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Also print the leaderboards as JSON at the end.")
    ] = False,
    challenge: Annotated[
        bool,
        typer.Option(
            "--challenge",
            help="As a data challenge: two teams, a quota, "
            "a public leaderboard, then the reveal (needs root).",
        ),
    ] = False,
) -> None:
    """Run the whole system here: a database, a master and two executors, example datasets
    and submissions (one broken on purpose), live progress, then the leaderboards.

    Example: datarun demo    (or: sudo datarun demo --challenge)
    """
    from datarun import demo as demo_module
    from datarun.demo_challenge import ChallengeDemo, check_root

    if challenge:
        check_root()
    kind = ChallengeDemo if challenge else demo_module.Demo
    summary = demo_module.run(home or state(ctx).overrides.get("home"), keep, out, kind)
    if as_json:
        print_json(summary)


def init(ctx: typer.Context) -> None:
    """Create the spool's folders and bring the database schema up to date. Idempotent.

    Example: DATARUN_SPOOL=/mnt/datarun/spool datarun init
    """
    s = settings(ctx)
    spool = Spool(s.spool_path)
    made = spool.create()
    applied = migrate.migrate(database_url(s))
    with db.connect(database_url(s)) as conn:
        if teams.challenge(conn):  # folders made since are shared as the teams say
            sharing.reshare(spool, conn)
    out.print(f"spool ready at {spool.root}" + (f" ({len(made)} folders created)" if made else ""))
    out.print(
        f"database schema at version {len(migrate.available())}"
        + (f" ({len(applied)} migrations applied)" if applied else "")
    )
    out.print(f"drop datasets into {spool.incoming_datasets}")
    out.print(f"drop submissions into {spool.incoming_submissions}/<dataset>/")


def master(
    ctx: typer.Context,
    poll: Annotated[
        bool,
        typer.Option("--poll", help="Scan on a timer only, for network mounts inotify cannot see."),
    ] = False,
) -> None:
    """Run the master: watch the spool, register drops, create fold jobs, score
    predictions, reap silent executors, write results. Stops on Ctrl-C or SIGTERM.

    Example: datarun master --poll   (on an NFS or sshfs spool)
    """
    s, url, spool, stop = _daemon_setup(ctx)
    config = watcher_config(s, poll)
    # the scheduler asks for rescans; the watcher's own timer only in --poll mode
    from watcher.daemon import Watcher
    from watcher.master import Master

    watcher = Watcher(spool, url, replace(config, rescan_seconds=math.inf))
    mode = f"polling every {s.watch_poll_seconds:g} s" if poll else "inotify"
    out.print(f"master watching {spool.root} ({mode}); Ctrl-C stops it")
    Master(spool, url, watcher, master_config(s)).run(stop)
    out.print("master stopped")


def executor(
    ctx: typer.Context,
    workers: Annotated[
        int | None, typer.Option(help="Folds run at once (default: the workers setting).")
    ] = None,
    queues: Annotated[
        str | None, typer.Option(help="Queues served, e.g. high,low or high.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Hard wall-clock limit of a fold, in seconds.")
    ] = None,
    cpu_seconds: Annotated[
        float | None, typer.Option(help="Soft CPU-time limit of a fold, in seconds.")
    ] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory a fold may add, in MB.")] = None,
) -> None:
    """Run an executor: claim fold jobs and run each in a sandboxed child, until Ctrl-C or
    SIGTERM (running folds get stop_grace_seconds to finish, the rest are handed back).

    Example: datarun executor --workers 2 --queues high,low
    """
    state(ctx).overrides.update(
        workers=workers, queues=queues, fold_timeout_seconds=timeout,
        fold_cpu_seconds=cpu_seconds, fold_memory_mb=memory_mb,
    )  # fmt: skip
    s, url, spool, stop = _daemon_setup(ctx)
    from executor.daemon import Executor

    runner = Executor(url, spool, executor_config(s))
    runner.start()  # logs, once, what folds lack here (a warning at any verbosity)
    out.print(f"executor {runner.id} serving {s.queues} with {s.workers} workers; "
              "Ctrl-C stops it")  # fmt: skip
    runner.run(stop)
    out.print("executor stopped")


# in the order `datarun --help` lists them (then the db and provision groups)
for command in (
    version, config, demo, init, master,
    cli_admin.retry, cli_admin.cancel, cli_admin.status, cli_admin.leaderboard,
    cli_admin.reveal, cli_admin.logs, cli_admin.submit,
    executor,
):  # fmt: skip
    app.command()(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `datarun` console script."""
    root = State()  # the root callback fills it in; read here once the command has failed
    try:
        result = app(args=argv, prog_name="datarun", standalone_mode=False, obj=root)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("datarun: interrupted\n")
        return 130
    except typer.TyperException as exc:  # bad arguments: typer's own click exceptions
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "datarun"
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        sys.stderr.write(f"datarun: {text} (see `{where} --help`)\n".replace("\n ", " "))
        return 1
    except DatarunError as exc:
        _report(f"datarun: {exc}", root.verbose)
        return 1
    except Exception as exc:
        _report(
            f"datarun: internal error: {type(exc).__name__}: {exc} (-v shows the traceback)",
            root.verbose,
        )
        return 1
    return result if isinstance(result, int) else 0


def _report(message: str, verbose: int) -> None:
    sys.stderr.write(message.replace("\n", " ") + "\n")
    if verbose:
        traceback.print_exc()
