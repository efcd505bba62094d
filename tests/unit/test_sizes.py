"""Files small enough to read in one sitting, functions short enough to hold in mind:
no module of datarun over 400 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("datarun", "spool", "watcher", "executor", "provision")
MAX_LINES = 400
MAX_FUNCTION = 60


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)) for p in sources()
            if len(p.read_text(encoding="utf-8").splitlines()) > MAX_LINES}  # fmt: skip
    assert long == set()


def test_no_function_is_over_60_lines():
    long = set()
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            functions = ast.FunctionDef | ast.AsyncFunctionDef
            if isinstance(node, functions) and _size(node) > MAX_FUNCTION:
                long.add(f"{path.relative_to(ROOT)}:{node.name}")
    assert long == set()


def _size(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def test_the_sources_are_found():
    assert len(sources()) > 50  # a moved package must not make the checks above vacuous
