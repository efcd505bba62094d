"""`datarun demo`: the whole system on this machine, in about half a minute.

A fresh home (a new temporary folder unless one is given), its embedded PostgreSQL, a
master and two executors as real processes, and the example bundles shipped in
`datarun/examples/` (their data written from scikit-learn's own datasets): dropped
into the spool, registered, run, scored, shown live, and then the leaderboards, the
broken submission's error and where the results files are.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from datarun import admin
from datarun.console import live
from datarun.embedded import EmbeddedServer
from spool import db, migrate
from spool.errors import DatarunError
from spool.layout import Spool, blocking_ancestor

TIMEOUT = 240
# Quick intervals: the demo should feel live, not be gentle on a busy cluster.
SETTINGS = {
    "DATARUN_SWEEP_SECONDS": "0.5", "DATARUN_SETTLE_SECONDS": "0.5",
    "DATARUN_HEARTBEAT_SECONDS": "1", "DATARUN_POLL_SECONDS": "0.5",
    "DATARUN_RESCAN_SECONDS": "2", "DATARUN_LEASE_SECONDS": "10",
    "DATARUN_STOP_GRACE_SECONDS": "2", "DATARUN_DB_PORT": "54329",
}  # fmt: skip


def _can_isolate_network() -> bool:
    from executor.sandbox import network_check

    try:
        network_check()
    except DatarunError:
        return False
    return True


DATASETS = {"iris": ("load_iris", "species"), "diabetes": ("load_diabetes", "progression")}


@dataclass
class Demo:
    home: Path
    console: Console
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    datasets: tuple[str, ...] = tuple(DATASETS)
    url: str = ""  # the database's, once started

    @property
    def spool(self) -> Spool:
        return Spool(self.home / "spool")

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DATARUN_")}
        env = {**env, **SETTINGS, "DATARUN_HOME": str(self.home)}
        if os.geteuid() == 0 and not _can_isolate_network():
            # A container without CAP_SYS_ADMIN: the demo's own example submissions may
            # keep the network; a real executor would refuse to start (docs/guarantees.md).
            env["DATARUN_FOLD_NETWORK"] = "true"
        return env

    def start(self) -> str:
        server = EmbeddedServer(self.home, port=int(SETTINGS["DATARUN_DB_PORT"]))
        server.up()
        url = self.url = server.url()
        migrate.migrate(url)
        self.spool.create()
        logs = self.home / "log"
        logs.mkdir(exist_ok=True)
        env = self.environment()
        for name, args in (("master", ["master"]),
                           ("executor-1", ["executor", "--workers", "1"]),
                           ("executor-2", ["executor", "--workers", "1"])):  # fmt: skip
            with open(logs / f"{name}.log", "wb") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "datarun", "-v", *args], env=env, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
        return url

    def drop_examples(self) -> None:
        """Datasets first; each submission is renamed in, as users should drop."""
        from sklearn import datasets

        examples = files("datarun") / "examples"
        staging = self.home / "examples"
        for name, (loader, target) in DATASETS.items():
            bundle = staging / name
            shutil.copytree(str(examples / name), bundle)
            frame = getattr(datasets, loader)(as_frame=True).frame
            frame.rename(columns={"target": target}).to_csv(bundle / "train.csv", index=False)
            bundle.rename(self.spool.incoming_datasets / name)
        for name in DATASETS:
            container = self.spool.incoming_submissions / name
            self.wait(container.is_dir, f"dataset {name} to be registered")
            source = examples / f"{name}-submissions"
            for entry in source.iterdir():
                copy = staging / f"{name}-submissions" / entry.name
                shutil.copytree(str(entry), copy)
                copy.rename(container / entry.name)

    def wait(self, check: Any, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not check():
            self.alive()
            if time.monotonic() > deadline:
                raise DatarunError(
                    f"the demo timed out waiting for {what}; logs in {self.home}/log"
                )
            time.sleep(0.2)

    def alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise DatarunError(
                    f"the demo's {name} exited (code {proc.returncode}); its log is "
                    f"{self.home}/log/{name}.log"
                )

    def expected(self) -> int:
        """How many submissions the demo registers."""
        examples = files("datarun") / "examples"
        return sum(len(list((examples / f"{n}-submissions").iterdir())) for n in DATASETS)

    def follow(self, url: str) -> None:
        """Live progress until every submission has its final state and results."""
        expected = self.expected()
        with db.connect(url) as conn, live(self.console) as show:
            deadline = time.monotonic() + TIMEOUT
            while True:
                self.alive()
                data = admin.status(conn)
                show(_progress(data["submissions"], data["executors"]))
                if _finished(conn, data["submissions"], expected):
                    return
                if time.monotonic() > deadline:
                    raise DatarunError(f"the demo timed out; logs in {self.home}/log")
                time.sleep(0.25)

    def report(self, url: str) -> dict[str, Any]:
        summary: dict[str, Any] = {"home": str(self.home), "leaderboards": {}}
        with db.connect(url) as conn:
            for name in self.datasets:
                rows = admin.leaderboard(conn, name)
                summary["leaderboards"][name] = rows
                phase = admin.leaderboard_phase(conn, name)
                self.console.print(admin.render_leaderboard(name, rows, phase))
            failures = db.fetch_all(conn, "demo_failures")
        summary["failures"] = [dict(f) for f in failures]
        for failure in failures:
            self.console.print(f"[bold red]{failure['dataset']}/{failure['label']}[/] failed: "
                               f"{failure['error']}")  # fmt: skip
            if failure["error_detail"]:
                self.console.print(failure["error_detail"].rstrip(), style="red", markup=False)
        results = self.spool.results
        self.console.print(f"\nResults files (what users read), in {self.home}:")
        for path in sorted(results.glob("*/leaderboard.*")) + sorted(
            results.glob("*/*/status.json")
        ):
            self.console.print(f"  {path.relative_to(self.home)}")
        return summary

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        EmbeddedServer(self.home, port=int(SETTINGS["DATARUN_DB_PORT"])).down()

    def remove(self) -> None:
        """Everything the demo made: its home (database, spool, logs) and the socket
        folder its server had outside it when the home's path is too long for one."""
        sockets = EmbeddedServer(self.home, port=int(SETTINGS["DATARUN_DB_PORT"])).socket_dir
        if not sockets.is_relative_to(self.home):
            shutil.rmtree(sockets, ignore_errors=True)
        shutil.rmtree(self.home)


def _progress(progress: list[dict[str, Any]], executors: list[dict[str, Any]]) -> Group:
    table = Table(title="folds", title_justify="left")
    for column in ("submission", "queued", "running", "scored", "failed", "state"):
        table.add_column(column)
    totals = {"queued": 0, "running": 0, "scored": 0, "failed": 0}
    for row in progress:
        for key in totals:
            totals[key] += row[key]
        table.add_row(f"{row['dataset']}/{row['label']}", str(row["queued"]), str(row["running"]),
                      str(row["scored"]), str(row["failed"]), row["state"])  # fmt: skip
    table.add_row("[b]all[/b]", *[f"[b]{totals[k]}[/b]" for k in totals], "")
    running = [e for e in executors if e["state"] == "running"]
    return Group(table, f"{len(running)} executors running")


def _finished(conn: db.Conn, progress: list[dict[str, Any]], expected: int) -> bool:
    if len(progress) < expected or any(r["state"] in ("queued", "running") for r in progress):
        return False
    row = db.fetch_one(conn, "demo_results_pending")
    return bool(row and row["pending"] == 0)


def _temporary_home() -> Path:
    """A new folder in the temporary folder ($TMPDIR), or in /tmp when that one is private
    and we are root: the database server's user must reach it."""
    base = Path(tempfile.gettempdir())
    if os.geteuid() == 0 and blocking_ancestor(base / "x") is not None:
        base = Path("/tmp")
    home = Path(tempfile.mkdtemp(prefix="datarun-demo-", dir=base))
    home.chmod(0o755)
    return home


def run(home: Path | None, keep: bool, console: Console, kind: type[Demo] = Demo) -> dict[str, Any]:
    """The demo, in `home`, or else in a temporary folder removed at the end (unless
    `keep`: then everything stays running). When the demo fails, its home stays with the
    logs that say why."""
    temporary = home is None
    demo = kind((home or _temporary_home()).absolute(), console)
    console.print(f"datarun demo in {demo.home}: a database, a master, two executors")
    started = time.monotonic()
    try:
        url = demo.start()
        demo.drop_examples()
        demo.follow(url)
        summary = demo.report(url)
    except BaseException:
        if not keep:
            demo.stop()
        raise
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["removed"] = temporary and not keep
    if keep:
        pids = " ".join(str(p.pid) for p in demo.processes.values())
        console.print(f"\nStill running (--keep): processes {pids}. Explore with "
                      f"`datarun --home {demo.home} status`; stop with `kill {pids}` and "
                      f"`datarun --home {demo.home} db down`.")  # fmt: skip
    elif temporary:
        demo.stop()
        demo.remove()
        console.print(f"\nAll stopped and removed ({summary['seconds']} s). To look around "
                      "afterwards: `datarun demo --home DIR` keeps the files there, "
                      "`--keep` leaves it all running.")  # fmt: skip
    else:
        demo.stop()
        console.print(f"\nAll stopped; everything is kept in {demo.home} "
                      f"({summary['seconds']} s).")  # fmt: skip
    return summary
