"""RAMP kits for tests: copy one of tests/ramp_kits/, write its data, run `ramp-test`.

The kits hold no data. `make_kit` writes it: from scikit-learn's datasets (a fixed-seed
80/20 train/test split), or, for the `*_real` kits, from the real RAMP data in
../shared/ramp-data/ (not part of the repository: `FileNotFoundError` where it is
absent, for the caller to turn into a skip). The `*_str` kits name their classes
(a string target column). `start_ramp_test` runs ramp-workflow's own `ramp-test` on a
submission of a made kit, as in an environment with ramp-workflow and scikit-learn
alone (no pyarrow), and returns the scores it saved.
"""

from __future__ import annotations

import bz2
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.model_selection import train_test_split

KITS = Path(__file__).parents[1] / "ramp_kits"
RAMP_DATA = Path(__file__).resolve().parents[3] / "shared" / "ramp-data"

SEED = 42
EXTERNAL_DATA = "external_data.csv"


class RampScores(TypedDict):
    """Scores saved by `ramp-test --save-output`, without the `time` column."""

    folds: dict[int, dict[str, dict[str, float]]]  # fold -> step -> score name -> value
    bagged: dict[str, dict[str, float]]  # step -> score name -> value, all folds bagged


class RampTestError(RuntimeError):
    """`ramp-test` exited with an error; the message holds its output."""

    def __init__(self, kit: Path, submission: str, returncode: int, output: str) -> None:
        super().__init__(f"ramp-test of {kit.name}/{submission} exited {returncode}:\n{output}")
        self.returncode = returncode
        self.output = output


def _iris() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    return frame


def _wine() -> pd.DataFrame:
    return load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})


def _breast_cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame.rename(columns={"target": "benign"})


def _diabetes() -> pd.DataFrame:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    return frame.rename(columns={"target": "progression"})


def _named(frame: pd.DataFrame, column: str, names: dict[int, str]) -> pd.DataFrame:
    """The target's classes by name: a string column, as many RAMP kits have."""
    return frame.assign(**{column: frame[column].map(names)})


def _wine_str(colour: bool) -> pd.DataFrame:
    frame = _named(_wine(), "cultivar", {0: "barolo", 1: "grignolino", 2: "barbera"})
    if colour:  # a string feature too
        dark = frame["color_intensity"] > frame["color_intensity"].median()
        frame.insert(0, "colour", ["dark" if d else "light" for d in dark])
    return frame


def _breast_cancer_str() -> pd.DataFrame:
    frame = _breast_cancer().rename(columns={"benign": "diagnosis"})
    frame = _named(frame, "diagnosis", {0: "malignant", 1: "benign"})
    size = pd.qcut(frame["mean radius"], 3, labels=["small", "medium", "large"])
    frame.insert(0, "size", [str(s) for s in size])  # a string feature too
    return frame


def _split(frame: pd.DataFrame, stratify: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = train_test_split(
        frame,
        test_size=0.2,
        random_state=SEED,
        stratify=None if stratify is None else frame[stratify],
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _write(kit: Path, train: pd.DataFrame, test: pd.DataFrame | None) -> None:
    (kit / "data").mkdir(exist_ok=True)
    train.to_csv(kit / "data" / "train.csv", index=False)
    if test is not None:
        test.to_csv(kit / "data" / "test.csv", index=False)


def _submissions(kit: Path) -> list[Path]:
    return sorted(p for p in (kit / "submissions").iterdir() if p.is_dir())


def _sklearn_data(kit: Path, name: str) -> None:
    """Split a scikit-learn dataset into the files the kit's problem.py reads."""
    if name in ("iris", "broken"):
        _write(kit, *_split(_iris(), "species"))
    elif name == "notest":
        _write(kit, _split(_iris(), "species")[0], None)
    elif name in ("wine", "wine_pipeline"):
        _write(kit, *_split(_wine(), "cultivar"))
    elif name == "breast_cancer":
        _write(kit, *_split(_breast_cancer(), "benign"))
    elif name == "iris_str":
        iris = _named(_iris(), "species", {0: "setosa", 1: "versicolor", 2: "virginica"})
        _write(kit, *_split(iris, "species"))
    elif name in ("wine_str", "wine_pipeline_str"):
        _write(kit, *_split(_wine_str(colour=name == "wine_str"), "cultivar"))
    elif name == "breast_cancer_str":
        _write(kit, *_split(_breast_cancer_str(), "diagnosis"))
    elif name in ("diabetes", "diabetes_fe"):
        _write(kit, *_split(_diabetes(), None))
    elif name == "external":
        # the kit's data keeps a key and four features, the submissions' external
        # table the serum measurements s1-s6 of every patient, in another order
        frame = _diabetes()
        frame.insert(0, "patient_id", range(1000, 1000 + len(frame)))
        serum = ["s1", "s2", "s3", "s4", "s5", "s6"]
        external = frame[["patient_id", *serum]].sample(frac=1.0, random_state=SEED)
        _write(kit, *_split(frame.drop(columns=serum), None))
        for submission in _submissions(kit):
            external.to_csv(submission / EXTERNAL_DATA, index=False)
    else:
        raise ValueError(f"no data recipe for the RAMP kit {name!r}")


def _real_data(kit: Path, source: Path) -> None:
    """Copy real RAMP data, bz2 files decompressed, external data to every submission."""
    (kit / "data").mkdir(exist_ok=True)
    for f_name in ("train.csv", "test.csv"):
        if (source / "data" / f_name).is_file():
            shutil.copyfile(source / "data" / f_name, kit / "data" / f_name)
        else:
            with (
                bz2.open(source / "data" / f"{f_name}.bz2", "rb") as compressed,
                (kit / "data" / f_name).open("wb") as out,
            ):
                shutil.copyfileobj(compressed, out)
    if (source / "data" / EXTERNAL_DATA).is_file():
        for submission in _submissions(kit):
            shutil.copyfile(source / "data" / EXTERNAL_DATA, submission / EXTERNAL_DATA)


def make_kit(name: str, where: Path) -> Path:
    """Copy the kit tests/ramp_kits/<name> to where/<name>, write its data, return it.

    Making the same kit in the same place again rewrites the same files (and keeps
    whatever ramp-test wrote there), so it can be called once per submission."""
    if not (KITS / name / "problem.py").is_file():
        raise ValueError(f"no RAMP kit {name!r} in {KITS}")
    source: Path | None = None
    if name.endswith("_real"):
        source = RAMP_DATA / name.removesuffix("_real")
        if not (source / "data").is_dir():
            raise FileNotFoundError(
                f"the RAMP kit {name!r} needs the real data in {source}/data, which is "
                f"absent: {RAMP_DATA} is not on this machine (CI has it)"
            )
    kit = where / name
    shutil.copytree(
        KITS / name,
        kit,
        ignore=shutil.ignore_patterns("__pycache__", "training_output", "data"),
        dirs_exist_ok=True,
    )
    if source is None:
        _sklearn_data(kit, name)
    else:
        _real_data(kit, source)
    return kit


def _scores(row: pd.Series) -> dict[str, float]:
    return {str(k): float(v) for k, v in row.items() if k not in ("step", "n_bag", "time")}


# ramp-test as a plain environment (ramp-workflow, scikit-learn and what they require)
# runs it: without pyarrow, which datarun requires, and which gives pandas 3 strings that
# ramp-workflow's workflows cannot index
NO_PYARROW = """
import sys


class NoPyarrow:  # import pyarrow raises ModuleNotFoundError, as where it is absent
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pyarrow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoPyarrow())
"""
WITHOUT_PYARROW = (
    NO_PYARROW
    + """
from rampwf.utils.cli.testing import start

sys.argv[0] = "ramp-test"
sys.exit(start())
"""
)


def start_ramp_test(kit: Path, submission: str, timeout: float = 600) -> Callable[[], RampScores]:
    """Start `ramp-test --submission <submission> --save-output` in the kit, pyarrow out
    of pandas' reach; the returned function waits for it and gives the scores it saved:
    per fold and step, and bagged over all folds per step. Started first, the reference
    runs while datarun runs the same kit."""
    # a file, not a pipe: nobody reads it until the end (scores() closes it)
    out = tempfile.TemporaryFile()  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_PYARROW, "--submission", submission, "--save-output"],
        cwd=kit,
        env={**os.environ, "TERM": "dumb"},  # no colour codes in the output
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    started = time.monotonic()

    def scores() -> RampScores:
        try:
            proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with out:
            out.seek(0)
            said = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RampTestError(kit, submission, proc.returncode, said)
        return _saved_scores(kit, submission)

    return scores


def _saved_scores(kit: Path, submission: str) -> RampScores:
    output = kit / "submissions" / submission / "training_output"
    folds: dict[int, dict[str, dict[str, float]]] = {}
    for fold in sorted(output.glob("fold_*"), key=lambda p: int(p.name.removeprefix("fold_"))):
        table = pd.read_csv(fold / "scores.csv")
        folds[int(fold.name.removeprefix("fold_"))] = {
            str(row["step"]): _scores(row) for _, row in table.iterrows()
        }
    bagged_table = pd.read_csv(output / "bagged_scores.csv")
    last = bagged_table.loc[bagged_table.groupby("step")["n_bag"].idxmax()]
    bagged = {str(row["step"]): _scores(row) for _, row in last.iterrows()}
    return {"folds": folds, "bagged": bagged}
