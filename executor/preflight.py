"""What a starting executor checks about this machine before it runs any fold: which
isolation layers folds get, whether the sandbox users can reach their scratch folders,
and what a fold can import when they cannot read this Python's files."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import replace
from pathlib import Path
from tempfile import gettempdir

from executor import mounts, outputs
from executor.config import ExecutorConfig
from executor.isolation import Isolation
from executor.sandbox import SANDBOX_USER, network_check
from spool.errors import ConfigError
from spool.layout import blocking_ancestor

log = logging.getLogger(__name__)

# What a fold can and cannot import when it cannot read the Python installation: only
# what the zygote imported before forking (executor.prewarm) is there. Named in the
# warning; a test checks each name against a real sandboxed import.
PRELOADED_EXAMPLES = ("sklearn.svm", "sklearn.tree", "sklearn.neighbors", "sklearn.metrics")
NOT_PRELOADED_EXAMPLES = ("sklearn.cluster", "sklearn.impute", "sklearn.neural_network")


def with_isolation(config: ExecutorConfig) -> ExecutorConfig:
    """The config with the layers this machine gives folds (probed unless given);
    refused: a root executor's folds without network where no namespace can be made,
    namespaces without root."""
    root = os.geteuid() == 0
    if root and not config.network:
        network_check()  # a machine without namespaces at all: refused, first
    # What folds get, said once: as a warning where full isolation is expected (root,
    # folds without network), else in the log (not root, or fold_network set).
    layers = config.isolation or Isolation.probe(loud=root and not config.network)
    if not root and layers.namespaces:
        raise ConfigError("folds get mount and PID namespaces only from a root executor")
    return replace(config, isolation=layers)


def check_scratch(config: ExecutorConfig) -> None:
    """As root: unmount what dead executors left mounted in the scratch folder, and
    refuse a scratch folder the sandbox users cannot enter (without namespaces)."""
    scratch = config.scratch or Path(gettempdir())
    for point in mounts.release_stale(scratch, outputs.SCRATCH_PREFIX):
        log.info("unmounted %s, left by an executor that is gone", point)
    isolated = config.isolation is not None and config.isolation.namespaces
    blocked = None if isolated else blocking_ancestor(scratch / "x")
    if blocked is not None:
        raise ConfigError(
            f"the sandbox users ({SANDBOX_USER}-N) cannot enter {blocked}, so folds "
            "cannot reach their scratch folders: set DATARUN_SCRATCH_DIR (scratch_dir) "
            "to a folder that others may traverse"
        )


def sandbox_import_warning() -> str | None:
    """Folds run as datarun-run-N: can those users read this Python's own files? If not,
    say exactly what a submission can import and what fails."""
    spec = importlib.util.find_spec("sklearn")  # found, not imported: the parent stays small
    stdlib = blocking_ancestor(Path(os.__file__))
    packages = blocking_ancestor(Path(spec.origin if spec and spec.origin else os.__file__))
    blocked = stdlib or packages
    if blocked is None:
        return None
    standard = (
        "only the standard library modules those loaded"
        if stdlib is not None
        else "Python's standard library"
    )
    return (
        f"folds run as {SANDBOX_USER}-N users, who cannot read {blocked} where this Python's "
        "packages live, and this machine gives folds no mount namespace to show it to them: "
        "a submission can import only what the executor loaded before starting folds "
        "(numpy, pandas, pyarrow, scipy, joblib, ramp-workflow if installed, and scikit-learn "
        "with the submodules its ensemble, linear_model, model_selection, pipeline and "
        f"preprocessing need, such as {', '.join(PRELOADED_EXAMPLES)}) and {standard}. Any "
        "other module installed there fails with ModuleNotFoundError: "
        f"{', '.join(NOT_PRELOADED_EXAMPLES)}, any other package. Install datarun where "
        "other users can read it (e.g. python3 -m venv /opt/datarun) to lift this."
    )
