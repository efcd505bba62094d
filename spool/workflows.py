"""Static checks of a submission against its dataset's workflow, without running it.

Submission code is untrusted and runs only in an executor's sandboxed child; here we
read it as text: the workflow's files are present, are UTF-8 Python that parses, and
define the names the workflow calls. A problem found now saves a queue of failed folds.
"""

from __future__ import annotations

import ast
from pathlib import Path

from spool.errors import BundleError
from spool.manifests import WORKFLOW_FILES

MAX_CODE_BYTES = 256 * 1024  # parsing costs hundreds of bytes of memory per byte of code

# What the native workflows call on each class (executor.workflows)
METHODS: dict[str, tuple[str, ...]] = {
    "Classifier": ("fit", "predict_proba"),
    "Regressor": ("fit", "predict"),
    "FeatureExtractor": ("fit", "transform"),
    "Calibrator": ("fit", "predict_proba"),
}


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


def _missing_methods(tree: ast.Module, name: str, methods: tuple[str, ...]) -> list[str]:
    """The methods the class `name` lacks, as far as the file shows: a class that
    inherits from anything the file does not define itself (an import, a call), has a
    metaclass or `__getattr__`, or is bound other than by a `class` statement, may get
    them from elsewhere and is not refused."""
    classes: dict[str, ast.ClassDef] = {}
    for statement in tree.body:
        if isinstance(statement, ast.ClassDef):
            classes[statement.name] = statement
        else:
            for target in _bound_names(statement):
                classes.pop(target, None)  # the last binding wins, as when Python runs it
    found: set[str] = set()
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        node = classes.get(current)
        if current in seen:
            continue
        seen.add(current)
        if node is None or node.keywords:  # not ours to see, or a metaclass
            return []
        for inner in node.body:
            found.update(_bound_names(inner))
        if "__getattr__" in found:
            return []
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id == "object":
                continue
            if not isinstance(base, ast.Name):
                return []  # module.Base, Base[...], a call: defined elsewhere
            pending.append(base.id)
    return [m for m in methods if m not in found]


def _bound_names(node: ast.stmt) -> set[str]:
    """The names a top-level or class-body statement binds."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    elif isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While | ast.Match):
        return {n.id for n in ast.walk(node)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} | {
            n.name for n in ast.walk(node)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }  # fmt: skip
    names: set[str] = set()
    for target in targets:
        names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
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
            continue
        missing = _missing_methods(tree, name, METHODS.get(name, ()))
        if missing:
            calls = ", then ".join(f"{m}({'X, y' if m == 'fit' else 'X'})" for m in METHODS[name])
            problems.append(
                f"{file}: the class {name} has no method {' and no '.join(missing)}, defined "
                f"or inherited; workflow {workflow!r} calls {name}() {calls}"
            )
    if problems:
        raise BundleError("\n".join(problems))
