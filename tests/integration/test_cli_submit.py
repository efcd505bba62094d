"""`datarun submit` sends a bundle where the watcher takes it: a dataset, a RAMP kit
(folder or archive) to incoming/datasets/, anything else to incoming/submissions/."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from datarun import admin
from spool.errors import DatarunError
from tests.conftest import age
from tests.helpers import bundles as B
from tests.helpers.ramp import make_kit


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent))
    return archive


def test_a_ramp_kit_is_submitted_as_a_dataset_and_the_watcher_takes_it(
    spool, tmp_path, make_watcher
):
    pytest.importorskip("rampwf", reason="RAMP kits need the ramp extra")
    kit = make_kit("iris", tmp_path / "kits")
    target = admin.submit(spool, kit, None)
    assert target == spool.incoming_datasets / "iris"
    age(target)  # settled: a scan takes it
    outcomes = make_watcher().run_once()
    assert [(o.result, o.kind) for o in outcomes] == [("registered", "dataset")], outcomes


def test_kits_and_datasets_go_to_datasets_in_any_form(spool, tmp_path):
    kit = make_kit("wine", tmp_path / "kits")
    with pytest.raises(DatarunError, match="this is a dataset bundle .*problem.py"):
        admin.submit(spool, kit, "iris")
    zipped = admin.submit(spool, _zip(kit, tmp_path / "wine-kit.zip"), None)
    assert zipped.parent == spool.incoming_datasets
    flat = tmp_path / "flat.tar.gz"  # problem.py at the archive's top, no lone folder
    with tarfile.open(flat, "w:gz") as tf:
        for path in sorted(kit.iterdir()):
            tf.add(path, path.name)
    assert admin.submit(spool, flat, None).parent == spool.incoming_datasets
    dataset = B.dataset(tmp_path / "d")
    assert admin.submit(spool, dataset, None).parent == spool.incoming_datasets
    submission = B.submission(tmp_path / "s")
    assert admin.submit(spool, submission, None).parent == spool.incoming_submissions
    shutil.make_archive(str(tmp_path / "logreg"), "zip", submission.parent, submission.name)
    sub_zip = admin.submit(spool, tmp_path / "logreg.zip", "iris")
    assert sub_zip == spool.incoming_submissions / "iris" / "logreg.zip"
