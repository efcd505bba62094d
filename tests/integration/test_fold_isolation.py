"""A fold limited as a whole and shown only what it needs (issue 14, items 5, 6 and 11),
with hostile submissions against a real root executor: four forked children of 400 MB
under a 512 MB limit, a gigabyte written to /dev/shm, work/ and /tmp filled past
fold_disk_mb, a look for other teams' code and predictions, the results, another
fold's scratch folder, datarun's configuration file and other processes, a walk of
every place a fold can write, and a SysV shared memory segment left behind. A good
submission beside each still scores. Where the machine gives no control group or
namespace, folds still run (the fallback)."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from executor.daemon import Executor
from executor.isolation import Isolation
from executor.messages import FoldDone, FoldSpec
from executor.sandbox import SANDBOX_USER, release_scratch
from spool.layout import Spool
from tests.conftest import reachable_tmp
from tests.helpers import bundles as B
from tests.integration.test_executor import drain, hostile, job_rows, register

pytestmark = pytest.mark.chaos

LAYERS = Isolation.probe() if os.geteuid() == 0 else Isolation()
isolated = pytest.mark.skipif(
    not (LAYERS.namespaces and LAYERS.cgroups),
    reason="needs a root executor on a machine with control groups and namespaces",
)

HOGS = """import os, time
        children = []
        for _ in range(4):  # 4 x 400 MB: each under RLIMIT_AS, together far past 512 MB
            pid = os.fork()
            if pid == 0:
                block = bytearray(400 * 2**20)
                block[::4096] = b'x' * len(block[::4096])
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)"""

SHM = """chunk = b'x' * 2**20
        with open('/dev/shm/hog', 'wb') as handle:
            for _ in range(1024):
                handle.write(chunk)
                handle.flush()"""


def scoring(body: str) -> str:
    """A classifier that does `body` first, then fits and predicts as a good one: it
    scores unless a limit stops it."""
    return f"""
from sklearn.linear_model import LogisticRegression


class Classifier:
    def fit(self, X, y):
        {body}
        self.model = LogisticRegression(max_iter=500).fit(X, y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)
"""


FILLS = """chunk = b'x' * 2**20
        with open({where!r}, 'wb') as handle:
            for _ in range(1024):
                handle.write(chunk)
                handle.flush()
        raise RuntimeError('wrote a gigabyte')"""

LOOKS = """import os
        seen = []
        for path in {paths!r}:
            try:
                if os.path.isdir(path):
                    seen += [path + '/' + n for n in os.listdir(path)]
                else:
                    with open(path, 'rb') as handle:
                        handle.read(1)
                    seen.append(path)
            except OSError:
                pass
        procs = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
        raise RuntimeError(f'seen {{seen}}; processes {{procs}}; me {{os.getpid()}}')"""

KEEPS = """import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        made = libc.shmget(0, 1 << 20, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT: left behind
        raise RuntimeError(f'made a segment: {made >= 0}')"""

WALKS = """import os
        work = os.getcwd()
        found = set()
        for top, dirs, files in os.walk('/'):
            if top == '/proc':
                dirs[:] = []  # the kernel's view of its own processes, not a place to keep
                continue
            probe = os.path.join(top, '.datarun-probe')
            try:
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                os.unlink(probe)
                found.add(top)
            except OSError:
                pass
            for name in files:
                path = os.path.join(top, name)
                if os.path.isfile(path) and not os.path.islink(path) and os.access(path, os.W_OK):
                    found.add(path)

        def place(path):
            for root, name in ((work, 'work'), ('/dev/shm', '/dev/shm'),
                               ('/var/tmp', '/var/tmp'), ('/tmp', '/tmp')):
                if path == root or path.startswith(root + '/'):
                    return name
            return path

        raise RuntimeError(f'writable: {sorted({place(p) for p in found})}')"""


@pytest.fixture
def spool() -> Iterator[Spool]:
    """A spool that other users may enter, as on a real mount (see test_sandbox)."""
    base = reachable_tmp("datarun-test-isolation-")
    layout = Spool(base / "spool")
    layout.create()
    yield layout
    shutil.rmtree(base, ignore_errors=True)


def reasons(url: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in job_rows(url):
        out.setdefault(row["name"], set()).add(row["error"] or row["state"])
    return out


def recording(executor: Executor) -> dict[str, FoldDone]:
    """How the zygote saw every fold the executor runs end, by job key."""
    seen: dict[str, FoldDone] = {}
    run = executor.zygote.run

    def run_and_record(key: str, spec: FoldSpec) -> Future[FoldDone]:
        future = run(key, spec)
        future.add_done_callback(lambda f: seen.__setitem__(key, f.result()))
        return future

    executor.zygote.run = run_and_record  # type: ignore[method-assign]
    return seen


def names_by_key(url: str) -> dict[str, str]:
    return {f"{r['id']}.{r['attempts']}": r["name"] for r in job_rows(url)}


@isolated
def test_memory_is_limited_for_the_fold_as_a_whole(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path,
             {"good": B.CLASSIFIER, "hogs": scoring(HOGS), "shm": scoring(SHM)})  # fmt: skip
    executor = make_executor(memory_mb=512, timeout_seconds=120)
    done = recording(executor)
    drain(executor)
    names = names_by_key(database_url)
    got = reasons(database_url)
    assert got.pop("good") == {"predicted"}
    memory = ("memory limit of 512 MB exceeded (the fold's processes together, their "
              "shared memory and temporary files included)")  # fmt: skip
    assert got == {"hogs": {memory}, "shm": {memory}}
    for key, message in done.items():
        hostile_fold = names[key] != "good"
        assert message.oom is hostile_fold, (names[key], message)
        assert message.exit_code == (-9 if hostile_fold else 0), (names[key], message)
        peak = message.memory_peak_bytes  # the fold's own, every process together
        assert peak is not None and (peak > 400 * 2**20) is hostile_fold, (names[key], peak)
        assert peak <= 512 * 2**20
    assert not list(Path("/dev/shm").glob("hog"))  # its own /dev/shm, gone with it


@isolated
def test_work_and_tmp_are_limited_to_fold_disk_mb(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path,
             {"good": B.CLASSIFIER, "work": hostile(FILLS.format(where="big")),
              "tmp": hostile(FILLS.format(where="/tmp/big")),
              "shm": hostile(FILLS.format(where="/dev/shm/big"))})  # fmt: skip
    executor = make_executor(disk_mb=64, memory_mb=1024, timeout_seconds=120)
    done = recording(executor)
    drain(executor)
    got = reasons(database_url)
    assert got.pop("good") == {"predicted"}
    disk = ("disk limit of 64 MB exceeded (work/, or /tmp, /var/tmp and /dev/shm together): "
            "OSError: [Errno 28] No space left on device")  # fmt: skip
    assert got == {"work": {disk}, "tmp": {disk}, "shm": {disk}}
    names = names_by_key(database_url)
    for key, message in done.items():  # only work/ is on the executor's side, to be read
        assert message.disk_full is (names[key] == "work"), (names[key], message)


@isolated
def test_a_fold_sees_only_its_code_its_work_and_its_own_processes(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    scratch = reachable_tmp("datarun-test-scratch-")
    other = scratch / "datarun-fold-1-99.1-other"  # another fold's scratch folder
    (other / "work").mkdir(parents=True)
    (other / "work" / "pred.npz").write_bytes(b"another team's predictions")
    for path in (other, other / "work"):
        path.chmod(0o755)
    (other / "work" / "pred.npz").chmod(0o644)
    home = reachable_tmp("datarun-test-home-")
    config = home / "datarun.toml"  # as an administrator writes it: 0644
    config.write_text('database_url = "postgresql://datarun:hunter2@db/datarun"\n')
    config.chmod(0o644)
    stored = spool.store / "submissions"
    planted = spool.predictions / "1.1.npz"  # another team's predictions, 0644
    paths = [str(p) for p in (spool.store, stored, spool.predictions, planted, spool.results,
                              spool.root, other, other / "work" / "pred.npz", home, config,
                              Path("/run/datarun-sandbox"), Path("/home"))]  # fmt: skip
    register(spool, make_watcher, tmp_path,
             {"good": B.CLASSIFIER, "looks": hostile(LOOKS.format(paths=paths)),
              "walks": hostile(WALKS), "keeps": hostile(KEEPS)})  # fmt: skip
    assert list(stored.iterdir())  # there to be seen, by the master
    planted.write_bytes(b"a prediction")
    planted.chmod(0o644)
    try:
        drain(make_executor(scratch=scratch, timeout_seconds=300))
        got = reasons(database_url)
    finally:
        for folder in scratch.glob("datarun-fold-*"):
            release_scratch(folder)  # whatever the executor did not unmount
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    assert got.pop("good") == {"predicted"}
    assert got == {
        "looks": {"RuntimeError: seen []; processes [2]; me 2"},  # init, root's: hidden
        "walks": {"RuntimeError: writable: ['/dev/shm', '/tmp', '/var/tmp', 'work']"},
        "keeps": {"RuntimeError: made a segment: True"},
    }
    users = {u.pw_uid for u in pwd.getpwall() if u.pw_name.startswith(f"{SANDBOX_USER}-")}
    rows = [line.split() for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    assert not [row for row in rows if int(row[7]) in users]  # gone with its IPC namespace


def test_without_control_groups_or_namespaces_folds_still_run(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    """The fallback (a container without CAP_SYS_ADMIN, a non-root executor): rlimits
    per process, the disk per file (RLIMIT_FSIZE), as docs/guarantees.md says."""
    register(spool, make_watcher, tmp_path,
             {"good": B.CLASSIFIER, "fills": hostile(FILLS.format(where="big"))})  # fmt: skip
    executor = make_executor(disk_mb=64, isolation=Isolation())
    done = recording(executor)
    drain(executor)
    assert reasons(database_url) == {
        "good": {"predicted"},
        "fills": {"disk limit of 64 MB exceeded (one file): OSError: [Errno 27] File too large"},
    }
    assert all(m.memory_peak_bytes is None and m.oom is False for m in done.values())
