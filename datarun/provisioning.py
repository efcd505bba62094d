"""`datarun provision ...`: glue between the CLI, the master's settings and `provision`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from datarun.embedded import EmbeddedServer
from datarun.settings import Settings
from provision import actions, runners, wheels
from spool import db
from spool.errors import DatarunError
from spool.urls import mask_url


def runner_url(s: Settings, server: EmbeddedServer) -> str:
    """The database URL runners get: the configured one, or the embedded server's TCP one."""
    if s.database_url is not None:
        return s.database_url.get_secret_value()
    if not s.db_listen:
        raise DatarunError(
            "runners reach the database over TCP: set db_listen (e.g. DATARUN_DB_LISTEN=0.0.0.0) "
            "and restart it (`datarun db down && datarun db up`), or set DATARUN_DATABASE_URL"
        )
    return server.tcp_url(reveal=True)


def heartbeat_probe(url: str, lease: float) -> Any:
    def probe(name: str, since: float) -> dict[str, Any] | None:
        with db.connect(url) as conn:
            rows = db.fetch_all(conn, "executors_named", {"name": name})
        live = [r for r in rows if r["state"] == "running" and float(r["heartbeat_age_s"]) < lease
                and r["started_at"].timestamp() >= since]  # fmt: skip
        if not live:
            return None
        return {"count": len(live), "workers": sum(int(r["workers"]) for r in live),
                "age": min(float(r["heartbeat_age_s"]) for r in live)}  # fmt: skip

    return probe


def options(s: Settings, server: EmbeddedServer, url: str, **given: Any) -> actions.Options:
    return actions.Options(
        database_url=runner_url(s, server),
        spool=given.pop("spool") or str(s.spool_path),
        known_hosts=s.home / "known_hosts",
        heartbeat=heartbeat_probe(url, s.lease_seconds),
        tuning={
            "lease_seconds": s.lease_seconds,
            "heartbeat_seconds": s.heartbeat_seconds,
            "poll_seconds": s.poll_seconds,
        },
        **given,
    )


def load_runners(path: Path) -> list[runners.Runner]:
    return runners.load(path)


def build_wheels(s: Settings, extras: tuple[str, ...]) -> wheels.Wheelhouse:
    """The runners' wheels; with the master's ramp-workflow when it has one (RAMP kits'
    folds run it on the runners)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ramp = f"ramp-workflow=={version('ramp-workflow')}"
    except PackageNotFoundError:
        ramp = None
    if ramp and not any(e.lower().startswith(("ramp-workflow", "ramp_workflow")) for e in extras):
        extras = (*extras, ramp)
    return wheels.build(s.home, extras)


def summary(reports: list[actions.Report], secret: str, console: Console) -> bool:
    table = Table(title=f"{len(reports)} runners", title_justify="left")
    for column in ("host", "state", "executors", "heartbeat age", "datarun", "done / error"):
        table.add_column(column)
    for r in reports:
        detail = r.error if r.error else "; ".join(r.changes)
        if secret:
            detail = detail.replace(secret, "****")
        table.add_row(r.host, r.state if r.ok else f"[red]{r.state or 'failed'}[/red]",
                      r.executors, r.heartbeat_age, r.version, detail)  # fmt: skip
    console.print(table)
    for r in reports:  # whole, unwrapped: the line an admin copies or greps
        if not r.ok:
            error = r.error.replace(secret, "****") if secret else r.error
            console.print(f"{r.host}: {error}", soft_wrap=True, markup=False, highlight=False)
    return all(r.ok for r in reports)


def secret_of(url: str) -> str:
    masked = mask_url(url)
    if masked == url:
        return ""
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).password or "")


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.1f} s"
