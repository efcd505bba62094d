"""Logging set-up. Only the CLI calls this; every module just uses getLogger(__name__)."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler


def setup_logging(verbosity: int) -> None:
    """0: warnings, 1 (-v): info, 2 (-vv): debug, also from the libraries we use."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(
            console=Console(stderr=True),
            show_path=verbosity >= 2,
            rich_tracebacks=verbosity >= 1,
        )
    else:
        # A log file, a pipe, the journal: one record a line, never wrapped to a width
        # (rich would wrap at 80 columns and pad every line).
        handler = logging.StreamHandler(sys.stderr)
        where = " %(name)s" if verbosity >= 2 else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{where} %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if verbosity >= 2 else logging.WARNING)
    for ours in ("datarun", "spool", "watcher", "executor", "provision"):
        logging.getLogger(ours).setLevel(level)
