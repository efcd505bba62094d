"""What every fold's root holds (executor.mounts.plan) and where fold control groups go
(executor.cgroups): no filesystem access beyond reading, no mount."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from executor import cgroups, mounts
from spool import newroot


@pytest.fixture(autouse=True)
def fresh_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(newroot, "_plans", [])


def test_the_plan_shows_python_and_a_few_files_of_etc_never_the_root_or_a_hidden_folder(
    monkeypatch, tmp_path
):
    hidden = tmp_path / "spool"
    monkeypatch.setattr(sys, "path", ["/", str(tmp_path), *sys.path])
    plan = mounts.plan(hide=[str(hidden)])
    paths = {entry.path for entry in plan}
    assert "/" not in paths and str(tmp_path) not in paths  # it holds the spool
    assert not {p for p in paths if p.startswith("/etc/")} - {
        f"/etc/{name}" for name in newroot.ETC
    }  # fmt: skip
    assert "/etc" not in paths  # never the whole folder
    bound = [os.path.realpath(e.path) for e in plan if e.kind == "dir"]
    for needed in (sys.prefix, sys.base_prefix, os.path.dirname(os.__file__)):
        real = os.path.realpath(needed)
        assert any(real == b or real.startswith(b + "/") for b in bound), needed


def test_a_file_only_root_may_write_is_not_remounted(tmp_path):
    mine = tmp_path / "f"
    mine.write_text("x")
    mine.chmod(0o644)
    if os.geteuid() == 0:
        os.chown(mine, 1, 1)  # another user's: remounted read-only
    (entry,) = newroot._entry(str(mine))
    assert entry.kind == "file" and entry.remount is (os.geteuid() == 0)
    (passwd,) = newroot._entry("/etc/passwd")
    assert passwd.remount is False


@pytest.mark.parametrize(
    ("point", "root", "path", "expected"),
    [
        ("/sys/fs/cgroup/memory", "/", "/process_api/x", "/sys/fs/cgroup/memory/process_api/x"),
        ("/sys/fs/cgroup/pids", "/", "/", "/sys/fs/cgroup/pids"),
        ("/sys/fs/cgroup", "/a", "/a/b", "/sys/fs/cgroup/b"),
        ("/sys/fs/cgroup", "/a", "/c", None),  # our group is outside what it shows
    ],
)
def test_a_groups_folder_is_found_under_its_mount(point, root, path, expected):
    found = cgroups._join(point, root, path)
    assert found == (Path(expected) if expected else None)


def test_a_hierarchy_gives_one_folder_per_v1_controller():
    v1 = cgroups.Hierarchy(1, Path("/m"), Path("/p"))
    assert v1.folders("g") == [Path("/m/g"), Path("/p/g")]
    assert cgroups.Hierarchy(2, Path("/u")).folders("g") == [Path("/u/g")]
