"""Bundle manifests: `dataset.toml` and `submission.toml`, validated with pydantic.

Every problem becomes one `BundleError` whose lines each name the file, the field and
what was expected, so that REJECTED.txt can say exactly what to fix. Parsing never
raises anything else, whatever bytes it is given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spool.environment import child_environment
from spool.errors import BundleError

DATASET_MANIFEST = "dataset.toml"
SUBMISSION_MANIFEST = "submission.toml"
MAX_MANIFEST_BYTES = 64 * 1024

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Team = Annotated[str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9_-]{0,63})?$")]
DATA_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".parquet", ".pq")

Workflow = Literal[
    "estimator",
    "classifier",
    "regressor",
    "feature_extractor+classifier",
    "feature_extractor+regressor",
    "feature_extractor+classifier+calibrator",
]
Task = Literal["classification", "regression"]
Scheme = Literal[
    "kfold",
    "stratified_kfold",
    "shuffle_split",
    "stratified_shuffle_split",
    "group_kfold",
    "time_series_split",
    "explicit",
]

# The files each workflow needs, and the name each must define at top level.
WORKFLOW_FILES: dict[str, dict[str, str]] = {
    "estimator": {"estimator.py": "get_estimator"},
    "classifier": {"classifier.py": "Classifier"},
    "regressor": {"regressor.py": "Regressor"},
    "feature_extractor+classifier": {
        "feature_extractor.py": "FeatureExtractor",
        "classifier.py": "Classifier",
    },
    "feature_extractor+regressor": {
        "feature_extractor.py": "FeatureExtractor",
        "regressor.py": "Regressor",
    },
    "feature_extractor+classifier+calibrator": {
        "feature_extractor.py": "FeatureExtractor",
        "classifier.py": "Classifier",
        "calibrator.py": "Calibrator",
    },
}

REGRESSION_SCORES = frozenset({
    "explained_variance", "r2", "neg_max_error", "neg_mean_absolute_error",
    "neg_mean_absolute_percentage_error", "neg_mean_gamma_deviance",
    "neg_mean_poisson_deviance", "neg_mean_squared_error", "neg_mean_squared_log_error",
    "neg_median_absolute_error", "neg_root_mean_squared_error",
    "neg_root_mean_squared_log_error", "d2_absolute_error_score",
})  # fmt: skip
CLUSTERING_SCORES = frozenset({
    "adjusted_mutual_info_score", "adjusted_rand_score", "completeness_score",
    "fowlkes_mallows_score", "homogeneity_score", "mutual_info_score",
    "normalized_mutual_info_score", "rand_score", "v_measure_score",
})  # fmt: skip


@cache
def scorer_names() -> frozenset[str]:
    """scikit-learn's scorer names. The master imports no numerical library (its memory,
    and what submissions' files could reach): it asks a child, once."""
    if "sklearn" in sys.modules:  # a child that has it already
        from sklearn.metrics import get_scorer_names

        return frozenset(get_scorer_names())
    code = "import json, sklearn.metrics as m; print(json.dumps(sorted(m.get_scorer_names())))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_environment(threads=1), timeout=120, check=True)  # fmt: skip
    return frozenset(json.loads(done.stdout))


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value or "\0" in value:
        raise ValueError("expected a path inside the bundle, like 'data/train.csv'")
    return str(path)


RelPath = Annotated[str, AfterValidator(_relative_path)]


def _data_path(value: str) -> str:
    if not value.lower().endswith(DATA_SUFFIXES):
        raise ValueError(f"expected a CSV or Parquet file ({', '.join(DATA_SUFFIXES)})")
    return value


DataPath = Annotated[RelPath, AfterValidator(_data_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


M = TypeVar("M", bound=BaseModel)


class DataSection(_Strict):
    train: DataPath
    test: DataPath | None = None
    test_fraction: float | None = Field(default=None, gt=0, lt=1)
    test_seed: int = 0
    drop_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_test_set(self) -> DataSection:
        if self.test is not None and self.test_fraction is not None:
            raise ValueError("give either 'test' (a file) or 'test_fraction', not both")
        return self


class CVSection(_Strict):
    scheme: Scheme
    n_splits: int = Field(default=5, ge=2, le=1000)
    shuffle: bool = True
    seed: int = 0
    valid_size: float = Field(default=0.2, gt=0, lt=1)
    group_column: str | None = None
    folds_file: RelPath | None = None
    # The organizer's word that a fold fits in well under a second: a submission's
    # folds then share a warm child from its first (else once one is seen short).
    short_folds: bool = False

    @model_validator(mode="after")
    def _scheme_needs(self) -> CVSection:
        if self.scheme == "group_kfold" and not self.group_column:
            raise ValueError("scheme 'group_kfold' needs 'group_column', the column of groups")
        if self.scheme == "explicit" and not self.folds_file:
            raise ValueError(
                "scheme 'explicit' needs 'folds_file', a JSON list of {train: [...], valid: [...]}"
            )
        return self


RULES = ("opens_at", "closes_at", "submissions_per_day", "min_minutes_between")


class Rules(_Strict):
    """A dataset's phase and quotas (`spool.rules`): top-level keys of dataset.toml."""

    opens_at: AwareDatetime | None = None
    closes_at: AwareDatetime | None = None
    submissions_per_day: int | None = Field(default=None, ge=0, le=1_000_000)
    min_minutes_between: int | None = Field(default=None, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> Rules:
        if self.opens_at and self.closes_at and self.closes_at <= self.opens_at:
            raise ValueError("closes_at must come after opens_at")
        return self

    def rules(self) -> Rules:
        return Rules(**{key: getattr(self, key) for key in RULES})


class DatasetManifest(Rules):
    name: Name
    title: str = ""
    target: str = Field(min_length=1)
    task: Task
    workflow: Workflow
    scores: list[str] = Field(min_length=1)
    data: DataSection
    cv: CVSection

    @field_validator("scores")
    @classmethod
    def _known_scores(cls, scores: list[str]) -> list[str]:
        unknown = [s for s in scores if s not in scorer_names()]
        if unknown:
            raise ValueError(
                f"unknown scikit-learn scorer {', '.join(map(repr, unknown))}; expected names "
                "from sklearn.metrics.get_scorer_names(), e.g. 'accuracy', 'roc_auc', 'r2', "
                "'neg_mean_squared_error'"
            )
        if len(set(scores)) != len(scores):
            raise ValueError("each score may be listed once")
        return scores

    @model_validator(mode="after")
    def _coherent(self) -> DatasetManifest:
        for score in self.scores:
            if score in CLUSTERING_SCORES or score.endswith("_samples"):
                raise ValueError(f"score {score!r} is for clustering or multilabel targets")
            is_regression = score in REGRESSION_SCORES
            if is_regression != (self.task == "regression"):
                kind = "regression" if is_regression else "classification"
                raise ValueError(f"score {score!r} is a {kind} score, but task is {self.task!r}")
        if "classifier" in self.workflow and self.task != "classification":
            raise ValueError(f"workflow {self.workflow!r} needs task 'classification'")
        if "regressor" in self.workflow and self.task != "regression":
            raise ValueError(f"workflow {self.workflow!r} needs task 'regression'")
        if self.cv.scheme.startswith("stratified") and self.task != "classification":
            raise ValueError(f"cv scheme {self.cv.scheme!r} needs task 'classification'")
        if self.target in self.data.drop_columns:
            raise ValueError("data.drop_columns lists the target column")
        return self


class SubmissionManifest(_Strict):
    dataset: Name | None = None
    name: Name | None = None
    team: Team = ""
    priority: Literal["high", "low"] = "low"


def _load_toml(raw: bytes, file: str) -> dict[str, Any]:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{file}: larger than {MAX_MANIFEST_BYTES // 1024} KiB; a manifest is a few lines"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{file}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{file}: not valid TOML: {exc}") from None
    except RecursionError:
        raise BundleError(f"{file}: not valid TOML: nested too deeply") from None
    if _has_nul(data):
        raise BundleError(f"{file}: contains a NUL character (\\u0000); remove it")
    return data


def _has_nul(value: object) -> bool:
    """NUL cannot be stored by PostgreSQL; TOML allows it. Iterative: no deep recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def describe(exc: ValidationError, file: str) -> list[str]:
    """One line per problem: file, field, what was expected, what was found."""
    lines = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field; check its spelling"
        elif err["type"] == "missing":
            message = "missing; this field is required"
        given = err.get("input")
        shown = (
            ""
            if err["type"] in ("missing", "extra_forbidden") or isinstance(given, dict)
            else f" (got {_short(given)})"
        )
        lines.append(f"{file}: {field or 'top level'}: {message}{shown}")
    return lines


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse(model: type[M], raw: bytes, file: str) -> M:
    data = _load_toml(raw, file)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BundleError("\n".join(describe(exc, file))) from None
    except RecursionError:
        raise BundleError(f"{file}: nested too deeply") from None


def parse_dataset_manifest(raw: bytes, file: str = DATASET_MANIFEST) -> DatasetManifest:
    return _parse(DatasetManifest, raw, file)


def parse_submission_manifest(raw: bytes, file: str = SUBMISSION_MANIFEST) -> SubmissionManifest:
    return _parse(SubmissionManifest, raw, file)
