"""Static checks of a submission against its dataset's workflow, without running it.

Submission code is untrusted and runs only in an executor's sandboxed child; here we
read it as text: the workflow's files are present, are UTF-8 Python that parses, and
define the names the workflow calls. A problem found now saves a queue of failed folds.
"""

from __future__ import annotations

import ast
from pathlib import Path

from datarun.errors import BundleError
from spool.manifests import WORKFLOW_FILES

MAX_CODE_BYTES = 256 * 1024  # parsing costs hundreds of bytes of memory per byte of code


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def check_submission(
    root: Path, workflow: str, dataset: str, kit_files: list[str] | None = None
) -> None:
    """Raise BundleError listing every problem of the submission for this workflow.
    A RAMP kit's workflow (`ramp:<class>`) names its own files; only those are checked
    (ramp-workflow's workflows decide what each must define)."""
    if workflow.startswith("ramp:"):
        missing = [f for f in kit_files or [] if not (root / f).is_file()]
        if missing:
            raise BundleError("\n".join(
                f"{f}: missing; the RAMP kit {dataset!r} ({workflow[5:]} workflow) needs "
                f"{', '.join(kit_files or [])}" for f in missing))  # fmt: skip
        return
    problems: list[str] = []
    for file, name in WORKFLOW_FILES[workflow].items():
        path = root / file
        if path.is_file() and path.stat().st_size > MAX_CODE_BYTES:
            problems.append(
                f"{file}: larger than {MAX_CODE_BYTES // 1024} KB; keep data out of code files"
            )
            continue
        if not path.is_file():
            problems.append(
                f"{file}: missing; workflow {workflow!r} of dataset {dataset!r} needs {file} "
                f"defining {name}"
            )
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{file}: not UTF-8 text (byte {exc.start}); save it as UTF-8")
            continue
        try:
            tree = ast.parse(source, filename=file)
        except SyntaxError as exc:
            problems.append(f"{file}: line {exc.lineno}: {exc.msg}")
            continue
        except (ValueError, RecursionError, MemoryError) as exc:
            problems.append(f"{file}: cannot be parsed as Python: {type(exc).__name__}")
            continue
        if name not in _defined_names(tree):
            kind = "function" if name.islower() or "_" in name else "class"
            problems.append(f"{file}: does not define the {kind} {name} at top level")
    if problems:
        raise BundleError("\n".join(problems))
