"""What the benchmarks share: a throw-away embedded server (or, in `all --quick`, a
throw-away database on one shared server) and spool, bundle writers."""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from datarun.embedded import DB_NAME, EmbeddedServer
from spool import db, migrate
from spool.layout import Spool

CLASSIFIER = """\
from sklearn.linear_model import LogisticRegression


class Classifier:
    def __init__(self):
        self.model = LogisticRegression(max_iter=500)

    def fit(self, X, y):
        self.model.fit(X, y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)
# variant {variant}
"""

DATASET = """\
name = "{name}"
target = "target"
task = "classification"
workflow = "classifier"
scores = ["accuracy"]
[data]
train = "train.csv"
test_fraction = 0.2
[cv]
scheme = "stratified_kfold"
n_splits = {folds}
"""


PORT = 55433
TEMPLATE = "bench_template"  # a migrated database that shared testbeds are copies of


@dataclass
class Bed:
    """A running embedded server with a migrated database and an empty spool."""

    server: EmbeddedServer
    spool: Spool
    database: str = DB_NAME

    @property
    def url(self) -> str:
        return self.server.url(self.database)


_shared: ContextVar[EmbeddedServer | None] = ContextVar("bench_shared_server", default=None)
_numbers = itertools.count(1)


def _scratch() -> Path:
    base = Path(tempfile.mkdtemp(prefix="datarun-bench-", dir="/tmp"))
    base.chmod(0o755)  # the server's user must reach its home inside
    return base


@contextmanager
def shared_server() -> Iterator[None]:
    """Inside, each testbed is a fresh database on one server rather than a fresh server:
    starting a server (initdb, start) takes seconds, copying a migrated template a
    fraction of one. For `all --quick` only: a full run keeps a server per benchmark,
    so that none inherits another's WAL, checkpoints or caches."""
    base = _scratch()
    server = EmbeddedServer(base / "home", port=PORT)
    token = _shared.set(server)
    try:
        server.up()
        db.ensure_database(server.url(), TEMPLATE)
        migrate.migrate(server.url(TEMPLATE))
        yield
    finally:
        _shared.reset(token)
        server.down()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def testbed() -> Iterator[Bed]:
    base = _scratch()
    shared = _shared.get()
    server = shared or EmbeddedServer(base / "home", port=PORT)
    name = f"bench_{next(_numbers)}" if shared else DB_NAME
    try:
        if shared:
            db.ensure_database(server.url(), name, template=TEMPLATE)
        else:
            server.up()
        migrate.migrate(server.url(name))  # nothing left to apply on a copy of the template
        spool = Spool(base / "spool")
        spool.create()
        yield Bed(server, spool, name)
    finally:
        if shared:
            db.drop_database(server.url(), name)  # WITH (FORCE): ends what is still connected
        else:
            server.down()
        shutil.rmtree(base, ignore_errors=True)


def connected(bed: Bed) -> set[str]:
    """The application names of the sessions on the bed's database."""
    with db.connect(bed.url) as conn:
        rows = conn.execute("select application_name as name from pg_stat_activity"
                            " where datname = current_database()").fetchall()  # fmt: skip
    return {row["name"] for row in rows}


def idle_until(since: float, seconds: float) -> None:
    """Sleep until `seconds` after `since` (time.monotonic()), if that is still ahead."""
    time.sleep(max(0.0, since + seconds - time.monotonic()))


def wait(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def write_dataset(
    where: Path, name: str = "iris", folds: int = 3, *, short_folds: bool = False
) -> Path:
    from sklearn.datasets import load_iris

    root = where / name
    root.mkdir(parents=True)
    load_iris(as_frame=True).frame.to_csv(root / "train.csv", index=False)
    toml = DATASET.format(name=name, folds=folds)
    if short_folds:  # the organizer's word: folds share a warm child from the first
        toml = toml.replace("[cv]\n", "[cv]\nshort_folds = true\n")
    (root / "dataset.toml").write_text(toml)
    return root


def write_submission(where: Path, name: str, variant: int) -> Path:
    root = where / name
    root.mkdir(parents=True)
    (root / "classifier.py").write_text(CLASSIFIER.format(variant=variant))
    return root


def settle(path: Path, seconds: float = 3600) -> Path:
    past = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (past, past))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@dataclass(frozen=True)
class MachineCpu:
    """The machine's CPU time since boot, in core-seconds (/proc/stat's first line):
    busy (user, nice, system, interrupts), idle (with I/O wait), stolen by the host."""

    busy: float
    idle: float
    stolen: float

    @staticmethod
    def now() -> MachineCpu:
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) / tick for x in handle.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
        return MachineCpu(user + nice + system + irq + softirq, idle + iowait, steal)

    def __sub__(self, earlier: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - earlier.busy, self.idle - earlier.idle,
                          self.stolen - earlier.stolen)  # fmt: skip


@dataclass(frozen=True)
class ProcessCpu:
    """A process's CPU in core-seconds (/proc/PID/stat): its own (every thread), and
    that of its children it has reaped."""

    own: float
    children: float

    @staticmethod
    def of(pid: int) -> ProcessCpu:
        tick = os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            stat = handle.read()
        fields = [int(x) / tick for x in stat[stat.rindex(")") + 2 :].split()[11:15]]
        return ProcessCpu(fields[0] + fields[1], fields[2] + fields[3])

    def __sub__(self, earlier: ProcessCpu) -> ProcessCpu:
        return ProcessCpu(self.own - earlier.own, self.children - earlier.children)


def attempts_cpu(conn: db.Conn) -> float:
    """The folds' own CPU so far, in core-seconds: the sum of their attempts'."""
    row = conn.execute("select coalesce(sum(cpu_seconds), 0) as s from attempts").fetchone()
    return float(row["s"]) if row else 0.0
