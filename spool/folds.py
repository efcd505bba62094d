"""A native dataset's CV folds, computed once on its training rows: by the scheme's
scikit-learn splitter, or read from the bundle's explicit folds file and checked (each
fold a non-empty `train` and `valid` of row numbers within the training rows, apart).
README, "Folds anyone can reproduce", says it for users.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spool.datafiles import one_line
from spool.errors import BundleError
from spool.manifests import DATASET_MANIFEST, DatasetManifest

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FOLDS_FILE = "folds.npz"
SUMMARY_FILE = "summary.json"  # written last: its presence says the preparation succeeded


def write_prepared(
    out: Path,
    folds: list[tuple[np.ndarray, np.ndarray]],
    summary: dict[str, Any],
    **extra: np.ndarray,
) -> None:
    """A prepared folder's folds and summary, as native datasets and RAMP kits write them."""
    import numpy as np

    arrays = {f"train_{i}": t for i, (t, _) in enumerate(folds)}
    arrays.update({f"valid_{i}": v for i, (_, v) in enumerate(folds)})
    np.savez(out / FOLDS_FILE, **arrays, **extra)  # type: ignore[arg-type]
    (out / SUMMARY_FILE).write_text(json.dumps(summary), encoding="utf-8")


def compute_folds(
    train: pd.DataFrame, m: DatasetManifest, bundle: Path
) -> list[tuple[np.ndarray, np.ndarray]]:
    import numpy as np
    from sklearn import model_selection as ms

    cv = m.cv
    y = train[m.target].to_numpy()
    groups = train[cv.group_column].to_numpy() if cv.group_column else None
    seed = cv.seed if cv.shuffle else None
    if cv.scheme == "explicit":
        assert cv.folds_file is not None
        return _explicit_folds(bundle, cv.folds_file, len(train))
    splitters: dict[str, Any] = {
        "kfold": lambda: ms.KFold(cv.n_splits, shuffle=cv.shuffle, random_state=seed),
        "stratified_kfold": lambda: ms.StratifiedKFold(
            cv.n_splits, shuffle=cv.shuffle, random_state=seed
        ),
        "shuffle_split": lambda: ms.ShuffleSplit(
            cv.n_splits, test_size=cv.valid_size, random_state=cv.seed
        ),
        "stratified_shuffle_split": lambda: ms.StratifiedShuffleSplit(
            cv.n_splits, test_size=cv.valid_size, random_state=cv.seed
        ),
        "group_kfold": lambda: ms.GroupKFold(cv.n_splits),
        "time_series_split": lambda: ms.TimeSeriesSplit(cv.n_splits),
    }
    try:
        splitter = splitters[cv.scheme]()
        return [
            (np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.int64))
            for t, v in splitter.split(np.zeros(len(y)), y, groups)
        ]
    except ValueError as exc:
        raise BundleError(f"{DATASET_MANIFEST}: cv: {one_line(exc)}") from None


def _explicit_folds(bundle: Path, rel: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import numpy as np

    path = bundle / rel
    if not path.is_file():
        raise BundleError(f"{DATASET_MANIFEST}: cv.folds_file {rel!r} is not in the bundle")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{rel}: not valid JSON: {one_line(exc)}") from None
    if not isinstance(raw, list) or not raw:
        raise BundleError(
            f"{rel}: expected a non-empty JSON list of {{train: [...], valid: [...]}}"
        )
    folds = []
    for i, fold in enumerate(raw):
        if not isinstance(fold, dict) or set(fold) != {"train", "valid"}:
            raise BundleError(f"{rel}: fold {i}: expected an object with 'train' and 'valid'")
        parts = []
        for key in ("train", "valid"):
            values = fold[key]
            if not (
                isinstance(values, list)
                and values
                and all(isinstance(x, int) and not isinstance(x, bool) for x in values)
            ):
                raise BundleError(
                    f"{rel}: fold {i}: '{key}' must be a non-empty list of row numbers"
                )
            if min(values) < 0 or max(values) >= n:
                raise BundleError(f"{rel}: fold {i}: '{key}' has row numbers outside 0..{n - 1}")
            parts.append(np.asarray(values, dtype=np.int64))
        if np.intersect1d(parts[0], parts[1]).size:
            raise BundleError(f"{rel}: fold {i}: rows are in both 'train' and 'valid'")
        folds.append((parts[0], parts[1]))
    return folds
