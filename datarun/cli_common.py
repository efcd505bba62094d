"""What every group of `datarun` commands shares: the context object, the console, JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import typer

from datarun import wiring
from datarun.console import make_console
from datarun.settings import Settings

# a terminal gets its own width; piped output (logs, scripts, CI) whole lines
out = make_console()


@dataclass
class State:
    """typer's context object: what the root options said, for every command below.

    `main` makes it, so that its error reporting knows the verbosity once the command
    has failed; the root callback fills it in.
    """

    verbose: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)  # settings given as options

    def settings(self) -> Settings:
        return wiring.settings(self.overrides)


def state(ctx: typer.Context) -> State:
    """The context object (made here when the app is invoked without `main`)."""
    return ctx.ensure_object(State)


def settings(ctx: typer.Context) -> Settings:
    return state(ctx).settings()


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
