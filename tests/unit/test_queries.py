from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from spool import migrate
from spool.errors import DatarunError
from spool.queries import _code, all_queries, parse, query

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


def _named_prefix(node: ast.JoinedStr) -> bool:
    """An f-string that can build a query name starts with a word of its own (`f"jobs_{x}"`);
    one that starts with a placeholder (`f"{a}_{b}"`) would match any name."""
    first = node.values[0] if node.values else None
    return (isinstance(first, ast.Constant) and isinstance(first.value, str)
            and len(first.value) >= 3 and first.value[0].isalpha())  # fmt: skip


def _names_in_code() -> tuple[set[str], list[re.Pattern[str]]]:
    """Every string literal of the code, and every f-string as a pattern (its
    placeholders match any word)."""
    literals: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for package in ("datarun", "spool", "watcher", "executor", "provision"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    literals.add(node.value)
                elif isinstance(node, ast.JoinedStr) and _named_prefix(node):
                    parts = [re.escape(str(v.value)) if isinstance(v, ast.Constant) else r"\w+"
                             for v in node.values]  # fmt: skip
                    patterns.append(re.compile("".join(parts)))
    return literals, patterns


def test_every_query_defined_is_used():
    """A statement nothing runs is dead code that still has to be read and migrated."""
    literals, patterns = _names_in_code()
    unused = [name for name in all_queries() if name not in literals
              and not any(p.fullmatch(name) for p in patterns)]  # fmt: skip
    assert not unused, unused


def test_the_two_settle_statements_complete_attempts_alike():
    """jobs_settle_shared is jobs_settle with a short submission's folds claimed
    together: their completing part (up to the claim) must stay the same text."""
    plain, shared = (_code(query(name)) for name in ("jobs_settle", "jobs_settle_shared"))
    plain = plain.replace(
        "next AS MATERIALIZED (  -- locked once, as in jobs_settle_shared", "next AS ("
    )  # used once there, twice in the other
    head = "), next AS ("
    assert plain.split(head)[0] == shared.split(head)[0]
    assert (
        plain.split(head)[1].split("), claimed AS (")[0]
        == (shared.split(head)[1].split("), short AS (")[0])
    )
