"""The CLI's output: rich for a terminal; for a pipe, a file or a log, plain whole lines.

Rich wraps text at 80 columns when it writes to something that is not a terminal, and
a live display there ends without a line break, so the next output joins its last
line. Piped output is read by scripts and `grep`: every message is one line, every
table as wide as its content, and a live display prints its final state once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.live import Live

# wide enough for any table's natural width; text is never wrapped (soft_wrap)
PIPE_WIDTH = 100_000


def make_console() -> Console:
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH, soft_wrap=True)


@contextmanager
def live(
    console: Console, *, refresh_per_second: float = 4, each: bool = False
) -> Iterator[Callable[[RenderableType], None]]:
    """Yield `update(renderable)`: redrawn in place on a terminal; elsewhere printed once
    at the end (or at `each` update, for a display that never ends by itself)."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=refresh_per_second) as display:
            yield display.update
        return
    last: list[RenderableType] = []

    def update(renderable: RenderableType) -> None:
        if each:
            console.print(renderable)
        else:
            last[:] = [renderable]

    try:
        yield update
    finally:
        if last:
            console.print(last[0])
