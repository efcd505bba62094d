"""The one rule for what a child process of datarun inherits from its environment.

Children that run code datarun does not own (the zygote that forks folds, a dataset's
preparation, a RAMP kit's scoring child) start from an allow-list, never from the
daemon's whole environment minus known secrets: whatever an administrator exported
(a token, a cloud key, a password under an unexpected name) stays out of their memory,
and so out of every fold forked from them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# What Python, numpy and the BLAS need to behave as the administrator set them up.
KEPT = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM",
    "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUTF8", "PYTHONWARNINGS", "VIRTUAL_ENV",
    # Older OpenBLAS builds compute wrong results or crash on some processors without them.
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
})  # fmt: skip
KEPT_PREFIXES = ("LC_",)
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
)  # fmt: skip


def child_environment(threads: int = 1, source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allowed part of `source` (default: this process's environment), with the
    thread counts of numerical libraries set to `threads`."""
    env = os.environ if source is None else source
    kept = {k: v for k, v in env.items() if k in KEPT or k.startswith(KEPT_PREFIXES)}
    kept.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    kept.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    return kept
