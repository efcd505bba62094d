"""The schema as the migrations leave it, dumped by pg_dump in a stable text form:
`spool/sql/schema.sql` is that text, so the current tables and views can be read in
one file (the migrations stay the history)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from datarun import pgbin

SNAPSHOT = Path(__file__).resolve().parents[2] / "spool" / "sql" / "schema.sql"
HEADER = """\
-- The schema the migrations (spool/sql/migrations) produce, as pg_dump writes it:
-- read here what the tables, views and functions are now. Generated, never edited:
-- tests/integration/test_migrate.py checks it, and rewrites it when run with
-- DATARUN_WRITE_SCHEMA=1.
"""
NOISE = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")


def dump(url: str) -> str:
    """The database's schema as pg_dump gives it, without its comments, settings and
    session keys (which change from one dump to the next)."""
    pg_dump = pgbin.bin_dir(pgbin.installed_root()) / "pg_dump"
    text = subprocess.run(
        [str(pg_dump), "--schema-only", "--no-owner", "--no-privileges", "--dbname", url],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(NOISE):
            continue
        if line.strip() or (lines and lines[-1]):
            lines.append(line.rstrip())
    return HEADER + "\n" + "\n".join(lines).strip() + "\n"
