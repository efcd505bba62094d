from __future__ import annotations

import re
from pathlib import Path

import pytest

from datarun.errors import DatarunError
from spool import migrate
from spool.queries import all_queries, parse, query

ROOT = Path(__file__).resolve().parents[2]


def test_parse_splits_named_statements_and_keeps_comments():
    text = "-- header\n\n-- name: one\n-- why\nSELECT 1;\n\n-- name: two\nSELECT 2;\n"
    assert parse(text, "x.sql") == {"one": "-- why\nSELECT 1;", "two": "SELECT 2;"}


def test_parse_refuses_duplicates_and_empty_bodies():
    with pytest.raises(DatarunError, match="defined twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "x.sql")
    with pytest.raises(DatarunError, match="has no SQL"):
        parse("-- name: a\n-- only a comment\n", "x.sql")


def test_unknown_query_name_is_a_clear_error():
    with pytest.raises(DatarunError, match="no SQL query named 'nope'"):
        query("nope")


def test_every_query_named_in_the_code_exists():
    """A typo in a query name fails here, not in production."""
    named = set()
    call = re.compile(
        r"\b(?:fetch_all|fetch_one|fetch_as|execute|execute_composed)\(\s*\w+,\s*(?:\w+,\s*)?\"(\w+)\""
    )
    for package in ("datarun", "spool", "watcher", "executor", "provision"):
        for path in (ROOT / package).rglob("*.py"):
            named.update(call.findall(path.read_text(encoding="utf-8")))
    assert named, "the pattern found no query names: update this test"
    assert named <= set(all_queries()), named - set(all_queries())


def test_migrations_are_numbered_without_gaps():
    found = migrate.available()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"
