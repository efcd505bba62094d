"""`datarun db ...`: the embedded server's lifecycle, the database's status and URL, psql,
the schema's migrations."""

from __future__ import annotations

import subprocess
from typing import Annotated, Any

import typer

from datarun import pgbin
from datarun.cli_common import out, print_json, settings
from datarun.settings import Settings
from datarun.wiring import database_url, server
from spool import db, migrate
from spool.errors import DatarunError
from spool.urls import describe_host, mask_url

db_app = typer.Typer(
    help="The database: the embedded server's lifecycle, the schema, a psql shell.",
    no_args_is_help=True,
)


@db_app.command("up")
def db_up(ctx: typer.Context) -> None:
    """Start the embedded PostgreSQL server (initialised on first use). Idempotent.

    The server keeps running after this command returns.
    Example: datarun db up
    """
    s = settings(ctx)
    _refuse_external(s, "up")
    state = server(s).up()
    out.print(f"database server running (pid {state.pid}), data in {state.data_dir}")


@db_app.command("down")
def db_down(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL server. Example: datarun db down"""
    s = settings(ctx)
    _refuse_external(s, "down")
    was_running = server(s).down()
    out.print("database server stopped" if was_running else "database server was not running")


@db_app.command("status")
def db_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Is the database up, where is it, which schema version. Exit 3 when it is down.

    Example: datarun db status --json
    """
    s = settings(ctx)
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
        print_json(info)
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
    ctx: typer.Context,
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
    s = settings(ctx)
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
    url = database_url(settings(ctx))
    psql = pgbin.bin_dir(pgbin.installed_root()) / "psql"
    try:
        code = subprocess.call([str(psql), url, *ctx.args])
    except OSError as exc:
        raise DatarunError(f"cannot run psql: {exc}") from exc
    raise typer.Exit(code)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Bring the schema to this datarun's version. Safe to run any time, from anywhere.

    Example: datarun db migrate
    """
    applied = migrate.migrate(database_url(settings(ctx)))
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
