"""The `datarun` command: the composition root that wires settings, database and daemons.

Every error a user can cause ends as one line on stderr and exit code 1; `-v` adds
the traceback.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from datarun import __version__, admin, pgbin
from datarun.console import live, make_console
from datarun.embedded import EmbeddedServer
from datarun.logs import setup_logging
from datarun.settings import Settings, effective, load_settings, sources
from spool import db, jobs, migrate
from spool.bundles import Limits
from spool.errors import DatarunError
from spool.layout import Spool
from spool.urls import describe_host, mask_url

if TYPE_CHECKING:  # the daemons import scikit-learn: only the commands that run them do
    from executor.daemon import ExecutorConfig
    from watcher.daemon import WatcherConfig

app = typer.Typer(
    name="datarun",
    help="Train and score ML submissions on CV folds, by dropping folders into a spool.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(
    help="The database: the embedded server's lifecycle, the schema, a psql shell.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
provision_app = typer.Typer(
    help="Configure runner machines over SSH: install, configure, start, stop, inspect.",
    no_args_is_help=True,
)
app.add_typer(provision_app, name="provision")

RunnersFile = Annotated[Path, typer.Argument(help="The runners file: `user@host workers queues "
                                             "hard soft` a line.")]  # fmt: skip
AcceptNew = Annotated[
    bool, typer.Option("--accept-new-host-keys", help="Remember unknown host keys (first contact).")
]
Identity = Annotated[Path | None, typer.Option(help="The SSH private key to use.")]
RemoteDir = Annotated[str, typer.Option(help="Folder under the runners' home.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be done.")]

# a terminal gets its own width; piped output (logs, scripts, CI) whole lines
out = make_console()
_state: dict[str, Any] = {"verbose": 0, "overrides": {}}


def settings() -> Settings:
    return load_settings(**_state["overrides"])


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


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.callback()
def _root(
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
    _state["verbose"] = verbose
    _state["overrides"] = {"home": home}
    setup_logging(verbose)


@app.command()
def version() -> None:
    """Print datarun's version. Example: datarun version"""
    out.print(__version__)


@app.command()
def config(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the effective settings, where each comes from, passwords masked.

    Settings come from options, DATARUN_* variables, then datarun.toml, then defaults.
    Example: DATARUN_LEASE_SECONDS=60 datarun config
    """
    s = settings()
    values = effective(s)
    origin = sources(s, _state["overrides"])
    if as_json:
        _print_json({name: {"value": values[name], "source": origin[name]} for name in values})
        return
    table = Table(title="datarun settings", show_lines=False)
    for column in ("setting", "value", "from", "meaning"):
        table.add_column(column)
    for name, field in Settings.model_fields.items():
        table.add_row(name, str(values[name]), origin[name], field.description or "")
    out.print(table)


def watcher_config(s: Settings, poll: bool) -> WatcherConfig:
    from watcher.daemon import WatcherConfig
    from watcher.intake import IntakeConfig

    mb = 2**20
    return WatcherConfig(
        settle_seconds=s.settle_seconds,
        rescan_seconds=s.rescan_seconds,
        poll_seconds=s.watch_poll_seconds,
        poll=poll,
        intake=IntakeConfig(
            dataset_limits=Limits(max_bytes=s.max_dataset_mb * mb),
            submission_limits=Limits(max_bytes=s.max_submission_mb * mb, max_files=2_000),
            prepare_timeout=s.prepare_timeout_seconds,
            prepare_memory_mb=s.prepare_memory_mb,
            prepare_file_mb=s.prepare_file_mb,
            wait_for_dataset=s.wait_for_dataset_seconds,
            max_attempts=s.max_attempts,
        ),
    )


def schema_ready(url: str) -> None:
    with db.connect(url) as conn:
        status = migrate.status(conn)
    if status.pending:
        raise DatarunError(
            f"the database schema is at version {status.current}, this datarun needs "
            f"{status.current + len(status.pending)}: run `datarun init`"
        )


def _daemon_setup() -> tuple[Settings, str, Spool, threading.Event]:
    """What every daemon needs: the database (schema current), the spool, and a stop
    event that Ctrl-C and SIGTERM set."""
    s = settings()
    url = database_url(s)
    schema_ready(url)
    spool = Spool(s.spool_path)
    spool.check()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return s, url, spool, stop


@app.command()
def demo(
    home: Annotated[
        Path | None, typer.Option("--home", help="Where (default: a new temporary folder).")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the database, master and executors running.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Also print the leaderboards as JSON at the end.")
    ] = False,
) -> None:
    """Run the whole system here: a database, a master and two executors, example datasets
    and submissions (one broken on purpose), live progress, then the leaderboards.

    Example: datarun demo
    """
    from datarun import demo as demo_module

    summary = demo_module.run(home or _state["overrides"].get("home"), keep, out)
    if as_json:
        _print_json(summary)


@app.command()
def init() -> None:
    """Create the spool's folders and bring the database schema up to date. Idempotent.

    Example: DATARUN_SPOOL=/mnt/datarun/spool datarun init
    """
    s = settings()
    spool = Spool(s.spool_path)
    made = spool.create()
    applied = migrate.migrate(database_url(s))
    out.print(f"spool ready at {spool.root}" + (f" ({len(made)} folders created)" if made else ""))
    out.print(
        f"database schema at version {len(migrate.available())}"
        + (f" ({len(applied)} migrations applied)" if applied else "")
    )
    out.print(f"drop datasets into {spool.incoming_datasets}")
    out.print(f"drop submissions into {spool.incoming_submissions}/<dataset>/")


@app.command()
def master(
    poll: Annotated[
        bool,
        typer.Option("--poll", help="Scan on a timer only, for network mounts inotify cannot see."),
    ] = False,
) -> None:
    """Run the master: watch the spool, register drops, create fold jobs, score
    predictions, reap silent executors, write results. Stops on Ctrl-C or SIGTERM.

    Example: datarun master --poll   (on an NFS or sshfs spool)
    """
    s, url, spool, stop = _daemon_setup()
    config = watcher_config(s, poll)
    # the scheduler asks for rescans; the watcher's own timer only in --poll mode
    from watcher.daemon import Watcher
    from watcher.master import Master, MasterConfig

    watcher = Watcher(spool, url, replace(config, rescan_seconds=math.inf))
    master_config = MasterConfig(
        sweep_seconds=s.sweep_seconds, results_seconds=s.sweep_seconds,
        reap_seconds=s.lease_seconds / 2, rescan_seconds=s.rescan_seconds,
        lease_seconds=s.lease_seconds,
    )  # fmt: skip
    mode = f"polling every {s.watch_poll_seconds:g} s" if poll else "inotify"
    out.print(f"master watching {spool.root} ({mode}); Ctrl-C stops it")
    Master(spool, url, watcher, master_config).run(stop)
    out.print("master stopped")


@app.command()
def retry(
    what: Annotated[
        str | None, typer.Argument(help="A submission: its id, or dataset/label.")
    ] = None,
    job: Annotated[int | None, typer.Option(help="One failed job, by id.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Every failed job of this dataset.")] = None,
) -> None:
    """Queue failed fold jobs again, with fresh attempts.

    Example: datarun retry iris/ada.logreg.v1    (or --job 42, or --dataset iris)
    """
    if sum(x is not None for x in (what, job, dataset)) != 1:
        raise DatarunError("name exactly one of: a submission, --job ID, --dataset NAME")
    with db.connect(database_url(settings())) as conn:
        submission = _submission(conn, what) if what is not None else None
        queued = jobs.retry(conn, job=job, submission=submission, dataset=dataset)
    out.print(f"{len(queued)} failed job(s) queued again" if queued else "nothing to retry")


@app.command()
def cancel(
    what: Annotated[str, typer.Argument(help="A submission: its id, or dataset/label.")],
) -> None:
    """Cancel a submission: its queued folds never run, running ones are stopped at
    their executor's next heartbeat.

    Example: datarun cancel iris/ada.logreg.v1
    """
    with db.connect(database_url(settings())) as conn:
        counts = jobs.cancel(conn, _submission(conn, what))
    if not counts:
        out.print("nothing to cancel (already finished or cancelled)")
    else:
        out.print("cancelled: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False,
) -> None:
    """Datasets, submissions' progress, the queue, executors and their heartbeat age.
    Exit 3 when the embedded database is stopped (status never starts it).

    Example: datarun status --watch
    """
    s = settings()
    if s.database_url is None and not server(s).state().running:
        # A report must not change what it reports on: after `db down` (a backup, an
        # upgrade), starting the server again behind the operator's back would be wrong.
        sys.stderr.write("datarun: the embedded database server is stopped; start it with "
                         "`datarun db up` (`datarun db status` says more)\n")  # fmt: skip
        raise typer.Exit(3)
    url = database_url(s)
    if as_json:
        with db.connect(url) as conn:
            _print_json(admin.status(conn))
        return
    if not watch:
        with db.connect(url) as conn:
            out.print(admin.render_status(admin.status(conn)))
        return
    with db.connect(url) as conn, live(out, refresh_per_second=1, each=True) as show:
        try:
            while True:
                show(admin.render_status(admin.status(conn)))
                time.sleep(2)
        except KeyboardInterrupt:
            pass


@app.command()
def leaderboard(
    dataset: Annotated[str, typer.Argument(help="The dataset's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A dataset's ranking: mean +- std over folds and bagged scores of its first metric.

    Example: datarun leaderboard iris
    """
    with db.connect(database_url(settings())) as conn:
        rows = admin.leaderboard(conn, dataset)
    if as_json:
        _print_json(rows)
    else:
        out.print(admin.render_leaderboard(dataset, rows))


@app.command()
def logs(
    what: Annotated[
        str | None, typer.Argument(help="A submission: its id, or dataset/label.")
    ] = None,
    job: Annotated[int | None, typer.Option(help="One job, by id.")] = None,
) -> None:
    """Print the fold logs of a submission (each fold under a header), or of one job.

    Example: datarun logs iris/ada.logreg.v1    (or --job 42)
    """
    if (what is None) == (job is None):
        raise DatarunError("name a submission or --job ID")
    s = settings()
    with db.connect(database_url(s)) as conn:
        submission = _submission(conn, what) if what is not None else None
        text = admin.logs(conn, Spool(s.spool_path), job=job, submission=submission)
    sys.stdout.write(text)


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(help="A bundle: a folder, a .zip or a .tar.gz.")],
    dataset: Annotated[
        str | None, typer.Option(help="The dataset a submission is for (else its manifest's).")
    ] = None,
) -> None:
    """Copy a bundle into the spool atomically (for those who cannot rename into it).

    A dataset (dataset.toml) or a RAMP kit (problem.py), as a folder or an archive, goes
    to incoming/datasets/, anything else to incoming/submissions/[DATASET/].
    Example: datarun submit ./logreg --dataset iris
    """
    s = settings()
    spool = Spool(s.spool_path)
    spool.check()
    target = admin.submit(spool, path.expanduser(), dataset)
    out.print(f"dropped as {target}; the answer appears under {spool.results} or "
              f"{spool.rejected}")  # fmt: skip


def _provision(
    runners_file: Path, action: Any, *, accept_new: bool, identity: Path | None,
    remote_dir: str, dry_run: bool, spool: str | None = None, sshfs: str | None = None,
) -> None:  # fmt: skip
    """Run one provisioning action on every runner; exit 1 unless all succeeded."""
    from datarun import provisioning

    s = settings()
    runners = provisioning.load_runners(runners_file)
    url = database_url(s)
    options = provisioning.options(
        s, server(s), url, spool=spool, accept_new=accept_new, identity=identity,
        remote_dir=remote_dir, dry_run=dry_run, sshfs=sshfs,
    )  # fmt: skip
    started = time.monotonic()
    from provision import actions

    reports = actions.on_all(runners, lambda r: action(r, options))
    secret = provisioning.secret_of(options.database_url)
    if not provisioning.summary(reports, secret, out):
        failed = sum(not r.ok for r in reports)
        raise DatarunError(f"{failed} of {len(reports)} runners failed "
                           f"({provisioning.elapsed(started)})")  # fmt: skip


@provision_app.command("apply")
def provision_apply(
    runners_file: RunnersFile,
    accept_new_host_keys: AcceptNew = False,
    identity: Identity = None,
    remote_dir: RemoteDir = "datarun",
    dry_run: DryRun = False,
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

    wheels = provisioning.build_wheels(settings(), tuple(extra or ()))
    _provision(runners_file, lambda r, o: actions.apply(r, o, wheels),
               accept_new=accept_new_host_keys, identity=identity, remote_dir=remote_dir,
               dry_run=dry_run, spool=spool, sshfs=sshfs)  # fmt: skip


@provision_app.command("status")
def provision_status(
    runners_file: RunnersFile,
    accept_new_host_keys: AcceptNew = False,
    identity: Identity = None,
    remote_dir: RemoteDir = "datarun",
) -> None:
    """Each runner's executors: running or not, heartbeat age, datarun version.

    Example: datarun provision status runners.txt
    """
    from provision import actions

    _provision(runners_file, actions.inspect, accept_new=accept_new_host_keys,
               identity=identity, remote_dir=remote_dir, dry_run=False)  # fmt: skip


@provision_app.command("stop")
def provision_stop(
    runners_file: RunnersFile,
    accept_new_host_keys: AcceptNew = False,
    identity: Identity = None,
    remote_dir: RemoteDir = "datarun",
    dry_run: DryRun = False,
) -> None:
    """Stop every runner's executors (running folds finish or are handed back).

    Example: datarun provision stop runners.txt
    """
    from provision import actions

    _provision(runners_file, actions.stop, accept_new=accept_new_host_keys, identity=identity,
               remote_dir=remote_dir, dry_run=dry_run)  # fmt: skip


@provision_app.command("restart")
def provision_restart(
    runners_file: RunnersFile,
    accept_new_host_keys: AcceptNew = False,
    identity: Identity = None,
    remote_dir: RemoteDir = "datarun",
    dry_run: DryRun = False,
) -> None:
    """Stop, then start every runner's executors, and wait for their heartbeat.

    Example: datarun provision restart runners.txt
    """
    from provision import actions

    _provision(runners_file, lambda r, o: actions.stop(r, o, restart=True),
               accept_new=accept_new_host_keys, identity=identity, remote_dir=remote_dir,
               dry_run=dry_run)  # fmt: skip


@provision_app.command("exec")
def provision_exec(
    runners_file: RunnersFile,
    command: Annotated[str, typer.Argument(help="A shell command, run in datarun's venv.")],
    accept_new_host_keys: AcceptNew = False,
    identity: Identity = None,
    remote_dir: RemoteDir = "datarun",
    dry_run: DryRun = False,
) -> None:
    """Run a command on every runner inside datarun's environment (then restart to use it).

    Example: datarun provision exec runners.txt 'pip install xgboost'
    """
    from provision import actions

    _provision(runners_file, lambda r, o: actions.execute(r, o, command),
               accept_new=accept_new_host_keys, identity=identity, remote_dir=remote_dir,
               dry_run=dry_run)  # fmt: skip


def _submission(conn: db.Conn, spec: str) -> int:
    found = jobs.find_submission(conn, spec)
    if found is None:
        raise DatarunError(
            f"no submission {spec!r}: give its id or dataset/label, e.g. iris/ada.logreg.v1"
        )
    return found


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
        scratch=s.scratch_dir,
        name=s.runner_name,
    )


@app.command()
def executor(
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
    _state["overrides"].update(
        workers=workers, queues=queues, fold_timeout_seconds=timeout,
        fold_cpu_seconds=cpu_seconds, fold_memory_mb=memory_mb,
    )  # fmt: skip
    s, url, spool, stop = _daemon_setup()
    from executor.daemon import Executor

    runner = Executor(url, spool, executor_config(s))
    runner.start()  # logs, once, what folds lack here (a warning at any verbosity)
    out.print(f"executor {runner.id} serving {s.queues} with {s.workers} workers; "
              "Ctrl-C stops it")  # fmt: skip
    runner.run(stop)
    out.print("executor stopped")


@db_app.command("up")
def db_up() -> None:
    """Start the embedded PostgreSQL server (initialised on first use). Idempotent.

    The server keeps running after this command returns.
    Example: datarun db up
    """
    s = settings()
    _refuse_external(s, "up")
    state = server(s).up()
    out.print(f"database server running (pid {state.pid}), data in {state.data_dir}")


@db_app.command("down")
def db_down() -> None:
    """Stop the embedded PostgreSQL server. Example: datarun db down"""
    s = settings()
    _refuse_external(s, "down")
    was_running = server(s).down()
    out.print("database server stopped" if was_running else "database server was not running")


@db_app.command("status")
def db_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Is the database up, where is it, which schema version. Exit 3 when it is down.

    Example: datarun db status --json
    """
    s = settings()
    info: dict[str, Any]
    if s.database_url is not None:
        url = s.database_url.get_secret_value()
        info = {"kind": "external", "url": mask_url(url), "running": True}
    else:
        embedded = server(s)
        state = embedded.state()
        url = embedded.url()
        info = {
            "kind": "embedded",
            "running": state.running,
            "pid": state.pid,
            "data_dir": str(state.data_dir),
            "socket_dir": str(state.socket_dir),
            "port": state.port,
            "listen": state.listen,
            "log_file": str(state.log_file),
            "url": url,
        }
    if info["running"]:
        with db.connect(url) as conn:
            server_row = db.fetch_one(conn, "server_info") or {}
            schema = migrate.status(conn)
        info.update(
            postgres=server_row.get("version"),
            size_bytes=server_row.get("size_bytes"),
            schema_version=schema.current,
            pending_migrations=[f"{m.version:04d}_{m.name}" for m in schema.pending],
        )
    if as_json:
        _print_json(info)
    else:
        _show_status(info)
    if not info["running"]:
        raise typer.Exit(3)


def _show_status(info: dict[str, Any]) -> None:
    if info["kind"] == "external":
        out.print(f"external database at {describe_host(info['url'])}: reachable")
    elif info["running"]:
        out.print(f"embedded database server: running (pid {info['pid']})")
    else:
        out.print("embedded database server: stopped (start it with `datarun db up`)")
    for key in ("data_dir", "socket_dir", "port", "listen", "log_file", "url", "postgres"):
        if info.get(key) is not None:
            out.print(f"  {key.replace('_', ' ')}: {info[key]}")
    if "schema_version" in info:
        pending = info["pending_migrations"]
        note = f", pending: {', '.join(pending)} (run `datarun db migrate`)" if pending else ""
        out.print(f"  schema version: {info['schema_version']}{note}")


@db_app.command("url")
def db_url(
    tcp: Annotated[
        bool, typer.Option("--tcp", help="The URL for runners on other machines.")
    ] = False,
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Print the password instead of ****.")
    ] = False,
) -> None:
    """Print the database URL (password masked unless --show-password).

    Example: datarun db url --tcp --show-password   (for a runner's DATARUN_DATABASE_URL)
    """
    s = settings()
    if s.database_url is not None:
        url = s.database_url.get_secret_value()
        print(url if show_password else mask_url(url))
    elif tcp:
        print(server(s).tcp_url(reveal=show_password))
    else:
        print(server(s).url())


@db_app.command(
    "psql",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def db_psql(ctx: typer.Context) -> None:
    """Open psql on the datarun database (starting the embedded server if needed).

    Extra arguments go to psql. Example: datarun db psql -c 'select * from jobs'
    """
    s = settings()
    url = database_url(s)
    psql = pgbin.bin_dir(pgbin.installed_root()) / "psql"
    try:
        code = subprocess.call([str(psql), url, *ctx.args])
    except OSError as exc:
        raise DatarunError(f"cannot run psql: {exc}") from exc
    raise typer.Exit(code)


@db_app.command("migrate")
def db_migrate() -> None:
    """Bring the schema to this datarun's version. Safe to run any time, from anywhere.

    Example: datarun db migrate
    """
    url = database_url(settings())
    applied = migrate.migrate(url)
    for migration in applied:
        out.print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        out.print(f"schema is up to date (version {len(migrate.available())})")


def _refuse_external(s: Settings, action: str) -> None:
    if s.database_url is not None:
        host = describe_host(s.database_url.get_secret_value())
        raise DatarunError(
            f"datarun uses the database at {host} (DATARUN_DATABASE_URL) and does not "
            f"{'start' if action == 'up' else 'stop'} servers it does not own"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `datarun` console script."""
    try:
        result = app(args=argv, prog_name="datarun", standalone_mode=False)
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
        _report(f"datarun: {exc}")
        return 1
    except Exception as exc:
        _report(f"datarun: internal error: {type(exc).__name__}: {exc} (-v shows the traceback)")
        return 1
    return result if isinstance(result, int) else 0


def _report(message: str) -> None:
    sys.stderr.write(message.replace("\n", " ") + "\n")
    if _state["verbose"]:
        traceback.print_exc()
