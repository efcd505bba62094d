"""Load the SQL of `spool/sql/queries/*.sql`, one statement per `-- name: ...` header."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from spool.errors import DatarunError

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str, origin: str) -> dict[str, str]:
    """Split a .sql file into its named statements; comments stay with their statement."""
    found: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in found:
            raise DatarunError(f"query {name!r} is defined twice in {origin}")
        if not _code(body):
            raise DatarunError(f"query {name!r} in {origin} has no SQL")
        found[name] = body
    return found


def _code(body: str) -> str:
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))


@cache
def all_queries() -> dict[str, str]:
    """Every named query of the package; a name used in two files is an error."""
    out: dict[str, str] = {}
    folder = files("spool") / "sql" / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, body in parse(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in out:
                raise DatarunError(f"query {name!r} is defined in two .sql files")
            out[name] = body
    return out


def query(name: str) -> str:
    try:
        return all_queries()[name]
    except KeyError:
        raise DatarunError(f"no SQL query named {name!r} in spool/sql/queries") from None
