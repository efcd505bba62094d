"""A kit's strings in its children are a plain environment's (pandas without pyarrow),
and the ramp-test the tests compare with runs in such an environment.

Each check runs in a child process: the option `load_problem` sets is the process's own,
and this one must keep pandas' defaults, as the daemons do for native datasets.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.ramp import NO_PYARROW, make_kit

pytest.importorskip("pyarrow")
pytest.importorskip("rampwf", reason="RAMP kits need the ramp extra: pip install -e '.[ramp]'")

# the kit's problem.py as datarun's children import it, then as ramp-test does
LOADED = """
from spool.rampkit import load_problem
problem = load_problem(kit)
"""
BARE = """
import importlib.util
spec = importlib.util.spec_from_file_location("problem", kit / "problem.py")
problem = importlib.util.module_from_spec(spec)
spec.loader.exec_module(problem)
"""
# y as the kit gives it, indexed as SKLearnPipeline and Estimator index it
INDEX_Y = """
import numpy as np
from sklearn.utils import _safe_indexing
y = problem.get_train_data(path=str(kit))[1]
print(type(y).__name__, y.dtype.storage, len(_safe_indexing(y, np.arange(3))))
"""


def _run(kit: Path, *parts: str) -> subprocess.CompletedProcess[str]:
    code = f"from pathlib import Path\nkit = Path({str(kit)!r})\n" + "".join(parts)
    return subprocess.run([sys.executable, "-c", code], cwd=kit, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_a_kits_children_read_strings_as_a_plain_environment_does(tmp_path):
    kit = make_kit("breast_cancer_str", tmp_path)
    ours = _run(kit, LOADED, INDEX_Y)
    assert ours.stdout.strip() == "StringArray python 3", ours.stderr
    plain = _run(kit, NO_PYARROW, BARE, INDEX_Y)  # the reference ramp-test's pandas
    assert plain.stdout.strip() == "StringArray python 3", plain.stderr
    # pandas' default beside pyarrow, which native datasets keep: Arrow, unindexable
    default = _run(kit, BARE, INDEX_Y)
    assert "only integer scalar arrays can be converted to a scalar index" in default.stderr
