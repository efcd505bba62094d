"""`datarun` with one more pause point than tests.helpers.chaos (whose points it keeps):
`python -m tests.helpers.chaos_results ARGS`.

- `leaderboard`: the master has written and fsynced a dataset's leaderboard.csv under
  its temporary name, with every submission on it scored and bagged, and not yet
  renamed it into place: the last leaderboard write of a run.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from typing import Any

from tests.helpers import chaos


def _final_leaderboard(tmp: str) -> bool:
    name = os.path.basename(tmp)
    if not (name.startswith(".leaderboard.csv.") and name.endswith(".tmp")):
        return False
    with open(tmp, encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    # Scored, and bagged: written after the submission's own files, so that nothing
    # is left to change in the database (a fold scored just after its submission's
    # files were written would show "scored" here with its bagged cells still empty).
    return bool(rows) and all(row["state"] == "scored" and row["bagged_valid"] for row in rows)


def install() -> None:
    chaos.install()
    replace = os.replace

    def replacing(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(src, (str, os.PathLike)) and _final_leaderboard(os.fspath(src)):
            chaos.pause("leaderboard")
        replace(src, dst, *args, **kwargs)

    os.replace = replacing


if __name__ == "__main__":
    install()
    from datarun.cli import main

    sys.exit(main())
