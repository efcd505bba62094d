"""A corpus of bad drops: each is rejected whole, with its own specific reason.

All cases are dropped into one spool watched by one real watcher (one database for the
module), then each case checks its own answer: `rejected/<stamp>_<name>/REJECTED.txt`
names what is wrong, the original drop sits beside it untouched, and nothing else
(no row, no job) came of it.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from datarun.embedded import EmbeddedServer
from spool import db
from spool.bundles import Limits
from spool.layout import Spool
from tests.conftest import TEMPLATE, age
from tests.helpers import bundles as B
from watcher.daemon import Watcher, WatcherConfig
from watcher.intake import IntakeConfig

pytestmark = pytest.mark.chaos


@dataclass(frozen=True)
class Case:
    name: str
    into: str  # "datasets", "submissions" or "submissions/<dataset>"
    build: Callable[[Path], Path]  # makes the drop in a scratch folder, returns it
    reason: str  # a piece of REJECTED.txt


def edit(path: Path, old: str, new: str) -> int:
    return path.write_text(path.read_text().replace(old, new))


def ds(name: str, change: Callable[[Path], object], **kw: object) -> Callable[[Path], Path]:
    def build(where: Path) -> Path:
        root = B.dataset(where, name=name, **kw)  # type: ignore[arg-type]
        change(root)
        return root

    return build


def sub(name: str, change: Callable[[Path], object], **kw: object) -> Callable[[Path], Path]:
    def build(where: Path) -> Path:
        root = B.submission(where, name=name, **kw)  # type: ignore[arg-type]
        change(root)
        return root

    return build


def nothing(_: Path) -> None:
    pass


def archive(
    name: str, members: list[tarfile.TarInfo | tuple[str, bytes]]
) -> Callable[[Path], Path]:
    def build(where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        path = where / name
        if name.endswith(".zip"):
            with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
                warnings.simplefilter("ignore")  # duplicate names are one of the cases
                for member in members:
                    if isinstance(member, tuple):
                        zf.writestr(member[0], member[1])
                    else:
                        info = zipfile.ZipInfo(member.name)
                        info.external_attr = 0o120777 << 16  # a symlink
                        zf.writestr(info, member.linkname)
        else:
            with tarfile.open(path, "w:gz") as tf:
                for member in members:
                    if isinstance(member, tuple):
                        entry = tarfile.TarInfo(member[0])
                        entry.size = len(member[1])
                        tf.addfile(entry, io.BytesIO(member[1]))
                    else:
                        tf.addfile(member)
        return path

    return build


def tar_link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def raw(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes(data)
        return where / name

    return build


def special(name: str, kind: str) -> Callable[[Path], Path]:
    """A drop that is a symbolic link, or a FIFO."""

    def build(where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        if kind == "link":
            (where / name).symlink_to("/etc")
        else:
            os.mkfifo(where / name)
        return where / name

    return build


GOOD = B.CLASSIFIER.encode()
SMALL_CAP = 400_000

CASES = [
    # ---- dataset manifests
    Case("ds-bad-toml", "datasets", ds("dsbadtoml", lambda r: edit(r / "dataset.toml", "task =", "task = = ")), "not valid TOML"),
    Case("ds-not-utf8", "datasets", ds("dsnotutf8", lambda r: (r / "dataset.toml").write_bytes((r / "dataset.toml").read_bytes() + b'title = "caf\xe9"\n')), "dataset.toml: not UTF-8"),
    Case("ds-no-manifest", "datasets", ds("dsnomanifest", lambda r: (r / "dataset.toml").unlink()), "dataset.toml: missing"),
    Case("ds-unknown-metric", "datasets", ds("dsunknownmetric", nothing, scores='["accuracy", "awesomeness"]'), "unknown scikit-learn scorer 'awesomeness'"),
    Case("ds-wrong-task-metric", "datasets", ds("dswrongmetric", nothing, scores='["r2"]'), "score 'r2' is a regression score, but task is 'classification'"),
    Case("ds-no-target", "datasets", ds("dsnotarget", lambda r: edit(r / "dataset.toml", 'target = "target"\n', "")), "target: missing"),
    Case("ds-target-not-in-data", "datasets", ds("dstargetabsent", lambda r: edit(r / "dataset.toml", 'target = "target"', 'target = "species"')), "target column 'species' is not in the data"),
    Case("ds-empty-data", "datasets", ds("dsempty", lambda r: (r / "train.csv").write_text((r / "train.csv").read_text().splitlines()[0] + "\n")), "has no rows"),
    Case("ds-data-missing", "datasets", ds("dsdatamissing", lambda r: (r / "train.csv").unlink()), "file 'train.csv' is not in the bundle"),
    Case("ds-unknown-workflow", "datasets", ds("dsworkflow", nothing, workflow="deep_magic"), "workflow: Input should be"),
    Case("ds-unknown-scheme", "datasets", ds("dsscheme", nothing, scheme="leave_one_out"), "cv.scheme: Input should be"),
    Case("ds-one-split", "datasets", ds("dsonesplit", nothing, n_splits=1), "cv.n_splits: Input should be greater than or equal to 2"),
    Case("ds-group-without-column", "datasets", ds("dsgroup", nothing, scheme="group_kfold"), "needs 'group_column'"),
    Case("ds-two-test-sets", "datasets", ds("dstwotests", nothing, test='test = "train.csv"\ntest_fraction = 0.2'), "not both"),
    Case("ds-typo-field", "datasets", ds("dstypo", lambda r: edit(r / "dataset.toml", "scores =", "scorse =")), "scorse: unknown field"),
    Case("ds-bad-name", "datasets", ds("dsbadname", lambda r: edit(r / "dataset.toml", 'name = "dsbadname"', 'name = "my data/set"')), "name: String should match pattern"),
    Case("ds-text-regression-target", "datasets", ds("dstextreg", lambda r: (r / "train.csv").write_text("a,target\n1,x\n2,y\n3,z\n4,w\n5,v\n6,u\n"), task="regression", workflow="regressor", scores='["r2"]', scheme="kfold"), "must be numeric for regression"),
    Case("ds-single-class", "datasets", ds("dsoneclass", lambda r: (r / "train.csv").write_text("a,target\n" + "".join(f"{i},1\n" for i in range(20)))), "has a single class"),
    Case("ds-empty-target", "datasets", ds("dsnan", lambda r: (r / "train.csv").write_text("a,target\n" + "".join(f"{i},{i % 2 if i != 3 else ''}\n" for i in range(20)))), "has 1 empty values"),
    Case("ds-folds-out-of-range", "datasets", ds("dsfolds", lambda r: [(r / "folds.json").write_text('[{"train": [0, 1], "valid": [999]}]'), edit(r / "dataset.toml", "n_splits = 3", 'n_splits = 3\nfolds_file = "folds.json"')], scheme="explicit"), "row numbers outside"),
    Case("ds-csv-not-utf8", "datasets", ds("dscsvlatin", lambda r: (r / "train.csv").write_bytes(b"caf\xe9,target\n1,0\n2,1\n")), "train.csv: not UTF-8"),
    Case("ds-excel", "datasets", ds("dsexcel", lambda r: edit(r / "dataset.toml", '"train.csv"', '"train.xlsx"')), "expected a CSV or Parquet file"),
    Case("ds-path-traversal", "datasets", ds("dstraversal", lambda r: edit(r / "dataset.toml", '"train.csv"', '"../../etc/train.csv"')), "expected a path inside the bundle"),
    Case("ds-huge-manifest", "datasets", ds("dshuge", lambda r: (r / "dataset.toml").write_text((r / "dataset.toml").read_text() + "# " + "x" * 70_000 + "\n")), "larger than 64 KiB"),
    Case("ds-workflow-task-mismatch", "datasets", ds("dsmismatch", nothing, workflow="regressor"), "needs task 'regression'"),
    Case("ds-name-taken", "datasets", ds("iris", lambda r: (r / "extra.txt").write_text("different content"), folder="iris-again"), "already registered with other content"),
    # ---- submissions
    Case("sub-missing-file", "submissions/iris", sub("nofile", lambda r: (r / "classifier.py").rename(r / "clasifier.py")), "classifier.py: missing"),
    Case("sub-syntax-error", "submissions/iris", sub("syntax", lambda r: (r / "classifier.py").write_text("class Classifier(:\n    pass\n")), "classifier.py: line 1"),
    Case("sub-no-class", "submissions/iris", sub("noclass", lambda r: (r / "classifier.py").write_text("class Model:\n    pass\n")), "does not define the class Classifier"),
    Case("sub-no-predict-proba", "submissions/iris", sub("noproba", lambda r: (r / "classifier.py").write_text("class Classifier:\n    def fit(self, X, y):\n        return self\n\n    def predict(self, X):\n        return X[:, 0]\n")), "classifier.py: the class Classifier has no method predict_proba, defined or inherited; workflow 'classifier' calls Classifier() fit(X, y), then predict_proba(X)"),
    Case("sub-inherits-no-proba", "submissions/iris", sub("inherits", lambda r: (r / "classifier.py").write_text("class Base:\n    def predict(self, X):\n        return X\n\n\nclass Classifier(Base):\n    pass\n")), "the class Classifier has no method fit and no predict_proba"),
    Case("sub-not-utf8", "submissions/iris", sub("latin", lambda r: (r / "classifier.py").write_bytes(b"# caf\xe9\n" + GOOD)), "classifier.py: not UTF-8"),
    Case("sub-no-dataset", "submissions", sub("nodataset", nothing), "no dataset named"),
    Case("sub-dataset-conflict", "submissions/iris", sub("conflict", nothing, manifest='dataset = "wine"\n'), "make them agree"),
    Case("sub-bad-priority", "submissions/iris", sub("urgent", nothing, manifest='priority = "urgent"\n'), "priority: Input should be 'high' or 'low'"),
    Case("sub-odd-name", "submissions/iris", sub("my sub!", nothing), "cannot name a submission"),
    Case("sub-stray-file", "submissions", raw("notes.txt", b"hello"), "not a bundle"),
    Case("sub-never-dataset", "submissions", sub("orphan", nothing, manifest='dataset = "neverland"\n'), "dataset 'neverland' never arrived"),
    Case("sub-oversized", "submissions/iris", sub("big", lambda r: (r / "weights.bin").write_bytes(os.urandom(SMALL_CAP + 1))), "larger than"),
    Case("sub-too-many-files", "submissions/iris", sub("many", lambda r: [(r / f"f{i}.txt").write_text("x") for i in range(60)]), "more than 50 files and folders"),
    Case("sub-folder-link-escape", "submissions/iris", sub("linkout", lambda r: (r / "data").symlink_to("/etc")), "'data' is a link; bundles may hold only files and folders"),
    Case("sub-folder-inner-link", "submissions/iris", sub("linkin", lambda r: (r / "copy.py").symlink_to("classifier.py")), "'copy.py' is a link"),
    Case("sub-folder-hard-link", "submissions/iris", sub("hardin", lambda r: os.link(r / "classifier.py", r / "copy.py")), "is a hard link"),
    Case("sub-drop-is-a-link", "submissions/iris", special("alias", "link"), "is a link; drop the folder or archive itself"),
    Case("sub-too-deep", "submissions/iris", sub("deep", lambda r: (r / "/".join(["d"] * 40)).mkdir(parents=True)), "nested more than 32 folders deep"),
    Case("sub-huge-code", "submissions/iris", sub("hugecode", lambda r: (r / "classifier.py").write_text("x = 1\n" * 50_000)), "larger than 256 KB"),
    Case("sub-long-name", "submissions/iris", sub("n" * 240, nothing), "cannot name a submission"),
    Case("sub-latin1-name", "submissions/iris", sub(os.fsdecode(b"caf\xe9"), nothing), "cannot name a submission"),
    Case("fifo-named-zip", "submissions/iris", special("pipe.zip", "fifo"), "not a regular file"),
    Case("zip-chained-links", "submissions/iris", archive("chain.zip", [("classifier.py", GOOD), tar_link("sub/up", ".."), tar_link("esc", "sub/up/sub/up/../../../../tmp")]), "is a link"),
    Case("ds-nul-in-title", "datasets", ds("dsnul", lambda r: edit(r / "dataset.toml", 'task =', 'title = "a\\u0000b"\ntask =')), "contains a NUL character"),
    Case("sub-fifo", "submissions/iris", sub("fifo", lambda r: os.mkfifo(r / "pipe")), "'pipe' is a device, FIFO or socket"),
    Case("sub-bad-manifest-toml", "submissions/iris", sub("badmanifest", nothing, manifest="team = \n"), "submission.toml: not valid TOML"),
    # ---- archives
    Case("zip-slip", "submissions/iris", archive("slip.zip", [("classifier.py", GOOD), ("../../evil.py", b"x")]), "climbs out of the bundle"),
    Case("tar-absolute", "submissions/iris", archive("abs.tar.gz", [("classifier.py", GOOD), ("/etc/cron.d/evil", b"x")]), "has an absolute path"),
    Case("tar-link-escape", "submissions/iris", archive("linkesc.tar.gz", [("classifier.py", GOOD), tar_link("data", "../../../etc")]), "'data' is a link"),
    Case("zip-link-escape", "submissions/iris", archive("zlink.zip", [("classifier.py", GOOD), tar_link("passwd", "/etc/passwd")]), "'passwd' is a link"),
    Case("tar-hard-link", "submissions/iris", archive("hard.tar.gz", [("classifier.py", GOOD), tar_link("copy.py", "classifier.py", hard=True)]), "'copy.py' is a link"),
    Case("zip-corrupt", "submissions/iris", raw("corrupt.zip", b"PK\x03\x04 this is not really a zip"), "cannot be read as a zip archive"),
    Case("tar-corrupt", "submissions/iris", raw("corrupt.tar.gz", b"\x1f\x8b\x08 truncated"), "cannot be read as a tar archive"),
    Case("zip-bomb", "submissions/iris", archive("bomb.zip", [("classifier.py", GOOD), ("zeros.bin", b"\0" * (SMALL_CAP * 4))]), "larger than"),
    Case("zip-duplicate-member", "submissions/iris", archive("twice.zip", [("classifier.py", GOOD), ("classifier.py", GOOD)]), "'classifier.py' is in the bundle twice"),
    # ---- issue 14, item 10: names that are not one line of UTF-8, targets not finite
    Case("ds-infinite-target", "datasets", ds("dsinf", lambda r: (r / "train.csv").write_text("a,target\n" + "".join(f"{i},{'inf' if i == 3 else i / 2}\n" for i in range(20))), task="regression", workflow="regressor", scores='["r2"]', scheme="kfold"), "target column 'target' has 1 infinite values"),
    Case("sub-newline-name", "submissions/iris", sub("two\nlines", nothing), "the name 'two\\nlines' cannot name a submission"),
    Case("sub-newline-in-reason", "submissions/iris", sub("many\nfiles", lambda r: [(r / f"f{i}.txt").write_text("x") for i in range(60)]), "many\\nfiles: more than 50 files and folders"),
    Case("sub-latin1-dataset-folder", "submissions/" + os.fsdecode(b"caf\xe9"), sub("lr", nothing, manifest='name = "lr"\n'), "incoming/submissions/caf\\xe9/ is no dataset's folder"),
]  # fmt: skip


@dataclass
class Answer:
    folder: Path
    text: str


@pytest.fixture(scope="module")
def answers(pg_server: EmbeddedServer, tmp_path_factory) -> Iterator[dict[str, Answer]]:
    name = f"corpus_{uuid.uuid4().hex[:12]}"
    db.ensure_database(pg_server.url(), name, template=TEMPLATE)
    base = tmp_path_factory.mktemp("corpus")
    spool = Spool(base / "spool")
    spool.create()
    config = WatcherConfig(
        settle_seconds=0.3,
        intake=IntakeConfig(
            submission_limits=Limits(max_bytes=SMALL_CAP, max_files=50), wait_for_dataset=1.0
        ),
    )
    watcher = Watcher(spool, pg_server.url(name), config)
    age(B.dataset(base / "iris-src")).rename(spool.incoming_datasets / "iris")
    assert [o.result for o in watcher.run_once()] == ["registered"]
    by_drop: dict[str, str] = {}
    for case in CASES:
        made = case.build(base / "src" / case.name)
        into = spool.root / "incoming" / case.into
        into.mkdir(parents=True, exist_ok=True)
        if not made.is_symlink() and not made.is_fifo():
            age(made)
        made.rename(into / made.name)
        by_drop[made.name] = case.name
    watcher.run_once()
    time.sleep(1.2)  # past the deadline of the submission whose dataset never comes
    watcher.run_once()
    found: dict[str, Answer] = {}
    for folder in spool.rejected.iterdir():
        kept = [p.name for p in folder.iterdir() if p.name != "REJECTED.txt"]
        drop_name = kept[0] if len(kept) == 1 else folder.name
        found[by_drop.get(drop_name, drop_name)] = Answer(
            folder, (folder / "REJECTED.txt").read_text()
        )
    found["_leftovers"] = Answer(spool.root, "\n".join(
        str(p) for p in (spool.root / "incoming").rglob("*")
        if p.parent.name not in ("incoming", "submissions") or p.is_file()
    ))  # fmt: skip
    with db.connect(pg_server.url(name)) as conn:
        counts = conn.execute(
            "select (select count(*) from datasets) as d, (select count(*) from submissions) as s"
        ).fetchone()
    found["_counts"] = Answer(spool.root, f"{counts['d']} {counts['s']}")
    yield found
    watcher.close()
    db.drop_database(pg_server.url(), name)


def test_the_corpus_is_large_and_distinct():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({c.reason for c in CASES}) >= 35


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_bad_drop_is_rejected_with_its_reason(answers: dict[str, Answer], case: Case):
    answer = answers.get(case.name)
    assert answer is not None, f"{case.name} was not rejected"
    assert case.reason in answer.text, answer.text
    assert answer.text.startswith("REJECTED: ")
    assert "What to do:" in answer.text
    kept = [p for p in answer.folder.iterdir() if p.name != "REJECTED.txt"]
    assert len(kept) == 1, "the original drop is kept whole beside the note"


def test_every_answer_keeps_its_layout_one_field_per_line(answers: dict[str, Answer]):
    """Whatever the drop's name (a newline in it, bytes that are not UTF-8), REJECTED.txt
    is: title, origin and time on a line each, the reasons as bullets, what to do."""
    for case, answer in answers.items():
        if case.startswith("_"):
            continue
        lines = answer.text.splitlines()
        assert [line.split(":")[0] for line in lines[:3]] == ["REJECTED", "dropped as",
                                                               "answered at"], answer.text  # fmt: skip
        assert lines[3:5] == ["", "What is wrong:"], answer.text
        end = lines.index("", 5)
        assert all(line.startswith("  - ") for line in lines[5:end]), answer.text
        assert lines[end + 1 :] == [lines[-1]] and lines[-1].startswith("What to do: ")
        assert "\n" not in answer.folder.name


def test_nothing_is_left_behind_or_registered(answers: dict[str, Answer]):
    assert answers["_leftovers"].text == ""
    assert answers["_counts"].text == "1 0"  # only iris; no bad submission got a row
