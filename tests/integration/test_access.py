"""Each team sees its own: real Unix users, real permissions (spool.access).

alice and bob are in two teams, carol organizes. The spool's master is root, or a
normal user of its own (the owner of the spool's folders sets their ACLs: no root
needed). Every probe runs in a process of that user; each denial is checked against
the same probe before the permissions were applied, so a layer that did nothing fails.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spool import acl
from spool.layout import blocking_ancestor
from tests.helpers.users import setpriv, unix_users

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates Unix users: needs root")

REPO = Path(__file__).resolve().parents[2]
DS = "iris"

# Run as the master: lay the spool out as datarun does (phase "layout"), apply the
# permissions (phase "secure"), or take bob out of his team (phase "reshare").
MASTER = """
import json, os, sys
from pathlib import Path
from spool import access
from spool.layout import Spool
a = json.loads(sys.argv[1])
s = Spool(Path(a["root"]))
results = s.results / "iris"
if a["phase"] == "layout":
    s.create()
    (s.incoming_submissions / "iris").mkdir()
    results.mkdir()
    code = s.store / "submissions" / "7"
    code.mkdir(parents=True)
    (code / "estimator.py").write_text("SECRET = 'bob'\\n")
    for f in (code / "estimator.py", code):  # frozen, as tokens.store leaves it
        f.chmod(0o555)
    (s.predictions / "1.1.npz").write_bytes(b"bob's predictions")
    (results / "leaderboard.csv").write_text("public\\n")
    for team in ("bobs", "alices"):
        label = results / f"{a[team]}.sub.v1"
        label.mkdir()
        (label / "status.json").write_text(team)
        (label / "fold_0.log").write_text(team)
    (results / "private").mkdir()
    (results / "private" / "test_scores.csv").write_text("organizers\\n")
elif a["phase"] == "secure":
    access.prepare_spool(s, [a["carol"]])
    access.share(results / f"{a['bobs']}.sub.v1", [a["bob"], a["carol"]])
    access.share(results / f"{a['alices']}.sub.v1", [a["alice"], a["carol"]])
else:
    print(access.reshare_team(s, a["bobs"], [a["carol"]]))
"""

# Run as a user: try each (name, operation, path); print what happened to each.
PROBE = """
import json, os, sys
out = {}
for name, op, path in json.loads(sys.argv[1]):
    try:
        if op == "read":
            open(path, "rb").read()
        elif op == "list":
            os.listdir(path)
        elif op == "rename":
            os.rename(path, path + ".taken")
        else:
            os.makedirs(path)
            open(os.path.join(path, "estimator.py"), "w").write("mine")
        out[name] = "ok"
    except OSError as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


@dataclass
class Lab:
    spool: Path
    users: dict[str, str]  # role -> user name
    master: str | None  # None: root

    def uid(self, role: str) -> int:
        return pwd.getpwnam(self.users[role]).pw_uid

    def as_master(self, phase: str) -> str:
        args: dict[str, str | int] = {"root": str(self.spool), "phase": phase, "bobs": "bobs",
                                      "alices": "alices"}  # fmt: skip
        args |= {role: self.uid(role) for role in ("alice", "bob", "carol")}
        cmd = [sys.executable, "-c", MASTER, json.dumps(args)]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
        result = subprocess.run(self._as(self.master, cmd), env=env, capture_output=True,
                                text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    def probe(self, role: str, *checks: tuple[str, str, str]) -> dict[str, str]:
        paths = [(name, op, str(self.spool / path)) for name, op, path in checks]
        cmd = [sys.executable, "-I", "-c", PROBE, json.dumps(paths)]
        result = subprocess.run(self._as(self.users.get(role, role), cmd), capture_output=True,
                                text=True, cwd="/")  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def drop(self, role: str, name: str) -> None:
        """Copy a submission folder from the user's own files into the inbox, as they
        would (`cp -r`: modes from their umask, 0644 files)."""
        user = self.users[role]
        source = self.spool.parent / f"home-{role}" / name
        source.mkdir(parents=True)
        (source / "estimator.py").write_text(f"{role}'s code\n")
        shutil.chown(source.parent, user)
        for path in (source, source / "estimator.py"):
            shutil.chown(path, user)
        inbox = self.spool / "incoming" / "submissions" / DS
        cmd = ["sh", "-c", f'umask 022 && cp -r "{source}" "{inbox}/"']
        subprocess.run(self._as(user, cmd), check=True, capture_output=True)

    @staticmethod
    def _as(user: str | None, cmd: list[str]) -> list[str]:
        return cmd if user is None else setpriv(user, cmd)


@pytest.fixture(params=["root", "user"], ids=["root-master", "user-master"])
def lab(request) -> Iterator[Lab]:
    if request.param == "user":  # its master imports datarun as that user
        blocked = blocking_ancestor(REPO / "spool") or blocking_ancestor(Path(sys.executable))
        if blocked is not None:  # a clone under `mktemp -d`, as in CI
            pytest.skip(f"a normal user cannot reach datarun's code here: {blocked} is private")
    tag = uuid.uuid4().hex[:6]
    roles = ["alice", "bob", "carol"] + (["master"] if request.param == "user" else [])
    users = {role: f"dr-{role}-{tag}" for role in roles}
    # pytest's tmp_path is 0700: the users could not even reach the spool
    base = Path(tempfile.mkdtemp(prefix="datarun-access-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with unix_users(*users.values()):
            spool = base / "spool"
            master = users.get("master")
            if master is not None:
                spool.mkdir()
                shutil.chown(spool, master, master)
            yield Lab(spool, users, master)
    finally:
        shutil.rmtree(base, ignore_errors=True)


SECRETS = [
    ("store code", "read", "store/submissions/7/estimator.py"),
    ("predictions", "read", "predictions/1.1.npz"),
    ("status", "read", "results/iris/bobs.sub.v1/status.json"),
    ("fold log", "read", "results/iris/bobs.sub.v1/fold_0.log"),
    ("private", "read", "results/iris/private/test_scores.csv"),
]
DROP = [
    ("inbox listing", "list", "incoming/submissions/iris"),
    ("bob's drop", "read", "incoming/submissions/iris/bobsub/estimator.py"),
]


def test_each_team_reads_its_own_and_organizers_read_all(lab: Lab) -> None:
    lab.as_master("layout")
    before = lab.probe("alice", *SECRETS)
    assert set(before.values()) == {"ok"}, before  # today's open mode: the probes see

    lab.as_master("secure")
    lab.drop("bob", "bobsub")
    alice = lab.probe("alice", *SECRETS, *DROP,
                      ("take bob's drop", "rename", "incoming/submissions/iris/bobsub"),
                      ("her drop", "create", "incoming/submissions/iris/alicesub"),
                      ("her status", "read", "results/iris/alices.sub.v1/status.json"),
                      ("her log", "read", "results/iris/alices.sub.v1/fold_0.log"),
                      ("leaderboard", "read", "results/iris/leaderboard.csv"))  # fmt: skip
    denied = [name for name, _, _ in SECRETS + DROP] + ["take bob's drop"]
    assert {name: alice[name] for name in denied} == dict.fromkeys(denied, "PermissionError")
    mine = ["her drop", "her status", "her log", "leaderboard"]
    assert {name: alice[name] for name in mine} == dict.fromkeys(mine, "ok")

    # the organizer reads every team's results, the private scores and the drops
    theirs = [
        ("alice's status", "read", "results/iris/alices.sub.v1/status.json"),
        ("alice's drop", "read", "incoming/submissions/iris/alicesub/estimator.py"),
    ]
    carol = lab.probe("carol", *SECRETS, *DROP, *theirs)  # code and predictions too
    assert set(carol.values()) == {"ok"}, carol
    # the master reads what participants drop (it copies it), even when it is not root
    master = lab.probe(lab.master or "root", DROP[1])
    assert master == {"bob's drop": "ok"}


def test_a_member_taken_out_of_his_team_reads_its_results_no_more(lab: Lab) -> None:
    lab.as_master("layout")
    lab.as_master("secure")
    status = ("status", "read", "results/iris/bobs.sub.v1/status.json")
    assert lab.probe("bob", status) == {"status": "ok"}
    assert "bobs.sub.v1" in lab.as_master("reshare")
    assert lab.probe("bob", status) == {"status": "PermissionError"}
    assert lab.probe("carol", status) == {"status": "ok"}


def test_the_acls_are_what_the_layout_says(lab: Lab) -> None:
    lab.as_master("layout")
    lab.as_master("secure")
    carol = lab.uid("carol")
    inbox = lab.spool / "incoming" / "submissions" / DS
    assert inbox.stat().st_mode & 0o7777 == 0o1773  # 1733, the mask showing in group
    entries = acl.read(inbox)
    assert entries is not None and acl.Entry(acl.USER, carol, 7) in entries
    default = acl.read(inbox, default=True)
    assert default is not None
    assert acl.Entry(acl.GROUP_OBJ, acl.UNDEFINED, 0) in default
    assert acl.Entry(acl.OTHER, acl.UNDEFINED, 0) in default
    label = lab.spool / "results" / DS / "bobs.sub.v1"
    assert acl.describe(acl.read(label)) == acl.describe(
        acl.acl(7, 0, 0, {lab.uid("bob"): 5, carol: 5})
    )
    for private in ("store", "predictions"):
        assert (lab.spool / private).stat().st_mode & 0o007 == 0


def test_a_root_masters_kit_scorer_still_reads_predictions(lab: Lab) -> None:
    """A root master scores RAMP kits as datarun-kit, in a root that binds predictions/
    (its own mode and ACL apply there): prepare_spool lets that user in, nobody else."""
    if lab.master is not None:
        pytest.skip("a normal master scores kits as itself")
    lab.as_master("layout")
    lab.as_master("secure")
    predictions = ("predictions", "read", "predictions/1.1.npz")
    assert lab.probe("datarun-kit", predictions) == {"predictions": "ok"}
    assert lab.probe("alice", predictions) == {"predictions": "PermissionError"}
