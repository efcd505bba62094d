"""`datarun` with pause points, for chaos tests: `python -m tests.helpers.chaos ARGS`.

A test asks for a pause at a named point by creating `<CHAOS_DIR>/want-<point>`.
The first process to reach that point takes the request (renames it to
`at-<point>-<pid>`) and waits there, to be SIGKILLed by the test. Points:

- `claim`: a job is claimed and committed, its fold not started yet;
- `publish`: a prediction file is written and fsynced, not yet renamed into place;
- `register`: a submission is stored in store/, its row not yet committed (master).

Nothing of datarun's code is changed; its functions are wrapped here, in the test's
process only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

POINTS = ("claim", "publish", "register")


def pause(point: str) -> None:
    folder = Path(os.environ["CHAOS_DIR"])
    try:
        os.rename(folder / f"want-{point}", folder / f"at-{point}-{os.getpid()}")
    except FileNotFoundError:
        return
    while True:  # until the test kills this process
        time.sleep(60)


def install() -> None:
    from executor import outputs

    make_scratch = outputs.make_scratch

    def claimed(*args: Any, **kwargs: Any) -> Path:
        pause("claim")
        return make_scratch(*args, **kwargs)

    outputs.make_scratch = claimed
    replace = os.replace

    def publishing(source: Any, target: Any, **kwargs: Any) -> None:
        name = os.path.basename(os.fspath(source))
        if name.endswith(".tmp") and ".npz." in name:  # write_atomic of a prediction file
            pause("publish")
        replace(source, target, **kwargs)

    os.replace = publishing  # type: ignore[assignment]
    from spool import registry

    register_submission = registry.register_submission

    def registering(*args: Any, **kwargs: Any) -> Any:
        pause("register")
        return register_submission(*args, **kwargs)

    registry.register_submission = registering


if __name__ == "__main__":
    install()
    from datarun.cli import main

    sys.exit(main())
