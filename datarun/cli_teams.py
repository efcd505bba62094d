"""The organizers' commands of a challenge: `datarun team ...` (who is in which team)
and `datarun dataset set` (a registered dataset's phase and quotas)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from datarun.cli_common import out, print_json, settings
from datarun.wiring import database_url
from spool import db, rules, teams
from spool.layout import Spool
from watcher import sharing

team_app = typer.Typer(
    help="Teams of a challenge: which Unix users drop for which team, who organizes.",
    no_args_is_help=True,
)
dataset_app = typer.Typer(help="A registered dataset's settings.", no_args_is_help=True)

SETTING_HELP = (
    f"SETTING=VALUE, the setting one of {', '.join(rules.SETTINGS)}; SETTING= removes it."
)
Users = Annotated[
    list[str] | None,
    typer.Option("--user", "-u", help="A Unix user (login name or uid); repeat for several."),
]


@team_app.command("add")
def team_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The team's name (letters, digits, - and _).")],
    users: Users = None,
    organizer: Annotated[
        bool | None,
        typer.Option(
            "--organizer/--participant",
            help="Its members drop datasets, submit for any team, read everything.",
        ),
    ] = None,
    priority: Annotated[
        str | None, typer.Option(help="The queue its submissions go to: high or low.")
    ] = None,
) -> None:
    """Make a team, or add users to it. With any team registered, datarun checks who
    drops what: a drop's owner decides its team.

    Example: datarun team add lions --user alice --user bob
    """
    if priority not in (None, "high", "low"):
        raise typer.BadParameter("expected high or low", param_hint="--priority")
    members = [teams.user(u) for u in users or []]
    s = settings(ctx)
    with db.connect(database_url(s)) as conn:
        team = teams.add(conn, name, members, organizer=organizer, queue=priority)
        _reshare(Spool(s.spool_path), conn)
    role = "organizers" if team["organizer"] else "participants"
    added = f"; added {', '.join(m.name for m in members)}" if members else ""
    out.print(f"team {name} ({role}, priority {team['queue']}){added}")


@team_app.command("remove")
def team_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The team.")],
    users: Users = None,
) -> None:
    """Remove users from a team, or the team itself (its submissions stay, under its name).

    Example: datarun team remove lions --user bob
    """
    members = [teams.user(u) for u in users or []]
    s = settings(ctx)
    with db.connect(database_url(s)) as conn:
        gone = teams.remove(conn, name, members)
        _reshare(Spool(s.spool_path), conn)
    out.print(f"removed from {name}: {', '.join(gone)}" if members else f"team {name} removed")


def _reshare(spool: Spool, conn: db.Conn) -> None:
    """Who reads what follows the teams at once: the spool's folders are shared again."""
    spool.check()
    if teams.challenge(conn):
        count = sharing.reshare(spool, conn)
        out.print(f"spool {spool.root}: {count} result and answer folders shared by team")


@team_app.command("list")
def team_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The teams, their members and priority; none means datarun is open to all.

    Example: datarun team list
    """
    with db.connect(database_url(settings(ctx))) as conn:
        rows = teams.teams(conn)
    if as_json:
        print_json([{**r, "created_at": r["created_at"].isoformat()} for r in rows])
        return
    if not rows:
        out.print("no teams: datarun is open (anyone who can write incoming/ drops anything)")
        return
    table = Table("team", "role", "priority", "users")
    for r in rows:
        table.add_row(r["name"], "organizers" if r["organizer"] else "participants",
                      r["queue"], ", ".join(r["users"]) or "-")  # fmt: skip
    out.print(table)


@dataset_app.command("set")
def dataset_set(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="The dataset's name.")],
    assignments: Annotated[list[str], typer.Argument(help=SETTING_HELP, show_default=False)],
) -> None:
    """Change a registered dataset's phase or quotas; each change is recorded with who
    made it and when (table dataset_changes).

    Example: datarun dataset set iris closes_at=2026-12-24T18:00:00Z submissions_per_day=5
    """
    with db.connect(database_url(settings(ctx))) as conn:
        now = rules.change(conn, dataset, assignments, teams.acting_user())
    shown = ", ".join(f"{k}={'-' if v is None else v}" for k, v in now.model_dump().items())
    out.print(f"{dataset}: {shown}")
