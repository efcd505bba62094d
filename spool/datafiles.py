"""A native dataset's data files (`dataset.toml`'s `data.train`, `data.test`) read and
checked, and its test set split off: run only in the preparing child (`spool.prepare`),
since data files are large and pandas' parsers are not ours to trust.

Every problem the organizer must fix is a `BundleError` naming the file; running out of
memory stays a `MemoryError`, which the child reports as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spool.errors import BundleError
from spool.manifests import DATASET_MANIFEST, DatasetManifest

if TYPE_CHECKING:
    import pandas as pd


def read_data(bundle: Path, rel: str) -> pd.DataFrame:
    import pandas as pd

    path = bundle / rel
    if not path.is_file():
        raise BundleError(f"{DATASET_MANIFEST}: data file {rel!r} is not in the bundle")
    try:
        if rel.lower().endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{rel}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except MemoryError:
        raise
    except Exception as exc:
        if "out of memory" in str(exc).lower():  # pandas' C parser says so in a ParserError
            raise MemoryError(one_line(exc)) from None
        kind = "Parquet" if rel.lower().endswith((".parquet", ".pq")) else "CSV"
        raise BundleError(f"{rel}: cannot be read as {kind}: {one_line(exc)}") from None
    if len(frame) == 0 or len(frame.columns) == 0:
        raise BundleError(f"{rel}: has no rows; the data is empty")
    if any("\x00" in str(c) for c in frame.columns):
        raise BundleError(f"{rel}: a column name contains a NUL character; remove it")
    return frame


def one_line(exc: BaseException) -> str:
    """An exception in one line, as the organizer's message shows it."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def check_data(
    frame: pd.DataFrame, m: DatasetManifest, rel: str, *, is_test: bool = False
) -> pd.DataFrame:
    import pandas as pd

    if m.target not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:8]))
        raise BundleError(
            f"{rel}: target column {m.target!r} is not in the data (columns: {shown}); "
            f"fix 'target' in {DATASET_MANIFEST} or the data's header"
        )
    missing = [c for c in m.data.drop_columns if c not in frame.columns]
    if missing:
        raise BundleError(f"{DATASET_MANIFEST}: data.drop_columns names {missing} not in {rel}")
    y = frame[m.target]
    if y.isna().any():
        empty = int(y.isna().sum())
        raise BundleError(f"{rel}: target column {m.target!r} has {empty} empty values")
    if m.task == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise BundleError(f"{rel}: target column {m.target!r} must be numeric for regression")
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
        import numpy as np

        kind = np.complex128 if pd.api.types.is_complex_dtype(y) else np.float64
        infinite = int(np.isinf(y.to_numpy(dtype=kind)).sum())
        if infinite:  # no score is defined on them (inf - inf is NaN)
            raise BundleError(
                f"{rel}: target column {m.target!r} has {infinite} infinite values; "
                "every target must be a finite number"
            )
    if m.task == "classification" and not is_test and y.nunique() < 2:
        raise BundleError(f"{rel}: target column {m.target!r} has a single class; need two or more")
    if m.cv.group_column and m.cv.group_column not in frame.columns:
        raise BundleError(f"{rel}: cv.group_column {m.cv.group_column!r} is not in the data")
    return frame.drop(columns=m.data.drop_columns)


def split_test(train: pd.DataFrame, m: DatasetManifest) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    from sklearn.model_selection import train_test_split

    if m.data.test_fraction is None:
        return train, None
    y = train[m.target]
    stratify = None
    if m.task == "classification" and y.value_counts().min() >= 2:
        stratify = y
    try:
        kept, held = train_test_split(
            train, test_size=m.data.test_fraction, random_state=m.data.test_seed,
            stratify=stratify,
        )  # fmt: skip
    except ValueError as exc:
        raise BundleError(f"{DATASET_MANIFEST}: data.test_fraction: {one_line(exc)}") from None
    return kept, held.reset_index(drop=True)  # kept's index: its rows in the train file
