"""The operator's commands on the queue and the spool: retry, cancel, status, leaderboard,
reveal, logs, submit (`datarun.admin` computes and renders what they show)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from datarun import admin
from datarun.cli_common import out, print_json, settings
from datarun.console import live
from datarun.wiring import database_url, server
from spool import db, jobs, leaderboards
from spool.errors import DatarunError
from spool.layout import Spool


def retry(
    ctx: typer.Context,
    what: Annotated[
        str | None, typer.Argument(help="A submission: its id, or dataset/label.")
    ] = None,
    job: Annotated[int | None, typer.Option(help="One failed job, by id.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Every failed job of this dataset.")] = None,
    priority: Annotated[
        str | None,
        typer.Option(
            help="Move the submission to this queue (high or low): its waiting "
            "folds take a turn there. Organizers decide priorities."
        ),
    ] = None,
) -> None:
    """Queue failed fold jobs again, with fresh attempts; with --priority, move a
    submission's waiting folds to another queue.

    Example: datarun retry iris/ada.logreg.v1 --priority high   (or --job 42, --dataset iris)
    """
    if sum(x is not None for x in (what, job, dataset)) != 1:
        raise DatarunError("name exactly one of: a submission, --job ID, --dataset NAME")
    if priority is not None and what is None:
        raise DatarunError("--priority moves one submission: name it (dataset/label or id)")
    with db.connect(database_url(settings(ctx))) as conn:
        submission = _submission(conn, what) if what is not None else None
        queued = jobs.retry(conn, job=job, submission=submission, dataset=dataset)
        moved = jobs.prioritize(conn, submission, priority) \
            if priority is not None and submission is not None else []  # fmt: skip
    out.print(f"{len(queued)} failed job(s) queued again" if queued else "nothing to retry")
    if priority is not None:
        out.print(f"{len(moved)} waiting job(s) now in the {priority} queue")


def cancel(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="A submission: its id, or dataset/label.")],
) -> None:
    """Cancel a submission: its queued folds never run, running ones are stopped at
    their executor's next heartbeat.

    Example: datarun cancel iris/ada.logreg.v1
    """
    with db.connect(database_url(settings(ctx))) as conn:
        counts = jobs.cancel(conn, _submission(conn, what))
    if not counts:
        out.print("nothing to cancel (already finished or cancelled)")
    else:
        out.print("cancelled: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False,
) -> None:
    """Datasets, submissions' progress, the queue, executors and their heartbeat age.
    Exit 3 when the embedded database is stopped (status never starts it).

    Example: datarun status --watch
    """
    s = settings(ctx)
    if s.database_url is None and not server(s).state().running:
        # A report must not change what it reports on: after `db down` (a backup, an
        # upgrade), starting the server again behind the operator's back would be wrong.
        sys.stderr.write("datarun: the embedded database server is stopped; start it with "
                         "`datarun db up` (`datarun db status` says more)\n")  # fmt: skip
        raise typer.Exit(3)
    url = database_url(s)
    if as_json:
        with db.connect(url) as conn:
            print_json(admin.status(conn))
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


def leaderboard(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="The dataset's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    private: Annotated[
        bool,
        typer.Option("--private", help="Organizers: every submission, every score, the picks."),
    ] = False,
) -> None:
    """A dataset's ranking: mean +- std over folds and bagged scores of its first metric.

    With teams registered (a challenge): each team's best submission by validation, and
    its test scores only once the dataset closed or was revealed; --private shows all.
    Example: datarun leaderboard iris    (or --private)
    """
    with db.connect(database_url(settings(ctx))) as conn:
        rows = admin.leaderboard(conn, dataset, private=private)
        phase = admin.leaderboard_phase(conn, dataset)
    if as_json:
        print_json(rows)
    else:
        out.print(admin.render_leaderboard(dataset, rows, phase, private=private))


def reveal(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="The dataset's name.")],
) -> None:
    """Publish a dataset's test scores now, before its closes_at: the public leaderboard
    then ranks each team's pick by its test score (the running master rewrites it).

    Example: datarun reveal iris
    """
    with db.connect(database_url(settings(ctx))) as conn:
        done = leaderboards.reveal(conn, dataset)
    when = done.revealed_at.isoformat(timespec="seconds")
    if done.changed:
        out.print(f"{dataset}: the test scores are public from {when}; the master rewrites "
                  "its leaderboard within a few seconds")  # fmt: skip
    else:
        out.print(f"{dataset}: already revealed at {when}")


def logs(
    ctx: typer.Context,
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
    s = settings(ctx)
    with db.connect(database_url(s)) as conn:
        submission = _submission(conn, what) if what is not None else None
        text = admin.logs(conn, Spool(s.spool_path), job=job, submission=submission)
    sys.stdout.write(text)


def submit(
    ctx: typer.Context,
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
    s = settings(ctx)
    spool = Spool(s.spool_path)
    spool.check()
    target = admin.submit(spool, path.expanduser(), dataset)
    out.print(f"dropped as {target}; the answer appears under {spool.results} or "
              f"{spool.rejected}")  # fmt: skip


def _submission(conn: db.Conn, spec: str) -> int:
    found = jobs.find_submission(conn, spec)
    if found is None:
        raise DatarunError(
            f"no submission {spec!r}: give its id or dataset/label, e.g. iris/ada.logreg.v1"
        )
    return found
