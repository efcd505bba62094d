"""The database goes away and comes back: watcher and executor carry on."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from datarun.embedded import EmbeddedServer
from executor.daemon import Executor, ExecutorConfig
from spool import db, migrate
from spool.layout import Spool
from tests.conftest import age, reachable_tmp
from tests.helpers import bundles as B
from tests.integration.test_executor import hostile
from watcher.daemon import Watcher, WatcherConfig

SLOW = hostile("import time; time.sleep(1.5)").replace(
    "return None", "import numpy as np; return np.full((len(X), 3), 1 / 3)"
)


def states(url: str) -> list[str]:
    try:
        with db.connect(url) as conn:
            return [r["state"] for r in conn.execute("select state from jobs order by id")]
    except Exception:
        return []


def test_a_fast_restart_of_the_database_loses_nothing(tmp_path: Path):
    base = reachable_tmp("datarun-test-restart-")
    server = EmbeddedServer(base / "home", port=55434)
    server.up()
    url = server.url()
    migrate.migrate(url)
    spool = Spool(base / "spool")
    spool.create()
    watcher = Watcher(spool, url, WatcherConfig(settle_seconds=0.3, rescan_seconds=0.5))
    executor = Executor(url, spool, ExecutorConfig(
        workers=2, heartbeat_seconds=0.5, lease_seconds=20, poll_seconds=0.5,
    ))  # fmt: skip
    stop = threading.Event()
    threads = [threading.Thread(target=watcher.run, args=(stop,)),
               threading.Thread(target=executor.run, args=(stop,))]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        age(B.dataset(tmp_path / "d")).rename(spool.incoming_datasets / "iris")
        deadline = time.monotonic() + 60
        while not (spool.incoming_submissions / "iris").is_dir():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for i in range(3):
            sub = B.submission(tmp_path / "s", name=f"slow{i}")
            (sub / "classifier.py").write_text(SLOW + f"\n# {i}\n")
            age(sub).rename(spool.incoming_submissions / "iris" / sub.name)
        while "running" not in states(url):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.down()  # fast shutdown, mid-run
        time.sleep(3)
        (tmp_path / "late").mkdir()
        late = B.submission(tmp_path / "late", name="late")  # dropped while it is down
        age(late).rename(spool.incoming_submissions / "iris" / "late")
        server.up()
        deadline = time.monotonic() + 120
        while states(url) != ["predicted"] * 12:
            assert time.monotonic() < deadline, states(url)
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.down()
        shutil.rmtree(base, ignore_errors=True)
    assert all(not thread.is_alive() for thread in threads)
