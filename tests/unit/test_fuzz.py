"""Property-based tests: whatever bytes arrive, the readers answer with BundleError or a
valid result, never with any other exception."""

from __future__ import annotations

import io
import math
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spool.bundles import Limits, extract
from spool.errors import BundleError
from spool.manifests import (
    DatasetManifest,
    SubmissionManifest,
    parse_dataset_manifest,
    parse_submission_manifest,
)

pytestmark = [pytest.mark.chaos, pytest.mark.filterwarnings("ignore:Duplicate name")]

KEYS = ["name", "target", "task", "workflow", "scores", "title", "dataset", "team",
        "priority", "train", "test", "test_fraction", "scheme", "n_splits", "shuffle",
        "seed", "valid_size", "group_column", "folds_file", "drop_columns", "x"]  # fmt: skip
WORDS = ["iris", "classification", "regression", "classifier", "estimator", "accuracy",
         "r2", "kfold", "explicit", "group_kfold", "train.csv", "../x.csv", "/abs.csv",
         "high", "low", "", "a b", "é", "\u0000"]  # fmt: skip


def toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\u0000", "\\u0000") + '"'  # fmt: skip


def toml_float(f: float) -> str:
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


scalars = st.one_of(
    st.sampled_from(WORDS).map(toml_string),
    st.text(max_size=12).map(toml_string),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(toml_float),
    st.booleans().map(lambda b: "true" if b else "false"),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4).map(
    lambda xs: "[" + ", ".join(xs) + "]"), max_leaves=8)  # fmt: skip
lines = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(KEYS), values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
        st.sampled_from(["[data]", "[cv]", "[extra]", "[[data]]", "garbage ]"]),
    ),
    max_size=14,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes(raw: bytes) -> None:
    for parse in (parse_dataset_manifest, parse_submission_manifest):
        try:
            result = parse(raw)
        except BundleError as exc:
            assert str(exc)
        else:
            assert isinstance(result, DatasetManifest | SubmissionManifest)


@settings(max_examples=400, deadline=None)
@given(lines)
def test_toml_shaped_documents(doc: list[str]) -> None:
    raw = "\n".join(doc).encode()
    for parse in (parse_dataset_manifest, parse_submission_manifest):
        try:
            parse(raw)
        except BundleError as exc:
            assert all(line.strip() for line in str(exc).splitlines())


def test_a_valid_manifest_parses():
    manifest = parse_dataset_manifest(b"""
name = "iris"
target = "species"
task = "classification"
workflow = "feature_extractor+classifier"
scores = ["accuracy", "neg_log_loss"]
[data]
train = "data/train.csv"
test_fraction = 0.2
[cv]
scheme = "stratified_shuffle_split"
n_splits = 8
""")
    assert manifest.cv.n_splits == 8 and manifest.data.test is None


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


member_names = st.lists(
    st.sampled_from(["a", "b", ".", "/", "\\", ":", "_", "..", "é", "__MACOSX"]),
    min_size=1,
    max_size=8,
).map("".join)
members = st.lists(st.tuples(member_names, st.binary(max_size=64)), max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    members.map(lambda m: ("a.zip", _zip(m))),
    members.map(lambda m: ("a.tar.gz", _tar(m))),
    st.binary(max_size=300).map(lambda b: ("a.zip", b)),
    st.binary(max_size=300).map(lambda b: ("a.tar.gz", b)),
    st.tuples(members, st.integers(0, 200)).map(lambda t: ("a.zip", _zip(t[0])[: t[1]])),
))  # fmt: skip
def test_the_archive_reader_answers_bundle_errors_only(archive: tuple[str, bytes]) -> None:
    name, data = archive
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        dest = Path(tmp) / "out"
        try:
            root = extract(path, dest, Limits(max_bytes=10_000, max_files=20))
        except BundleError:
            return
        for written in root.rglob("*"):
            assert Path(tmp) in written.resolve().parents or written.is_symlink()


def test_a_file_and_a_folder_of_the_same_name_clash(tmp_path):
    path = tmp_path / "clash.zip"
    path.write_bytes(_zip([("a", b"file"), ("a/b", b"inside")]))
    try:
        extract(path, tmp_path / "out", Limits(max_bytes=10_000))
    except BundleError as exc:
        assert "clash" in str(exc)
    else:
        raise AssertionError("a clash was not reported")
