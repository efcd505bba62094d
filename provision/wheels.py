"""The wheels a runner installs from, built on the master: runners need no index.

`<home>/wheelhouse/<version>/` holds datarun's wheel and every dependency's (and the
admin's extra packages), built once per version with pip. datarun's own wheel is
rebuilt at every apply from the master's source (builds are reproducible, so the same
source gives the same bytes): runners then run exactly the master's code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import spool
from spool.errors import DatarunError
from spool.version import __version__


@dataclass(frozen=True)
class Wheelhouse:
    folder: Path
    datarun_wheel: str  # its file name
    digest: str  # sha256 of datarun's wheel: "the same version as the master"
    extras: tuple[str, ...]

    def files(self) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in self.folder.glob("*.whl")}


def _source() -> str:
    root = Path(spool.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return str(root)
    return f"datarun=={__version__}"


def _pip_wheel(args: list[str], into: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(into), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["?"]
        raise DatarunError(f"cannot build the runners' wheels: {last[0]}")


def build(home: Path, extras: tuple[str, ...] = ()) -> Wheelhouse:
    folder = home / "wheelhouse" / __version__
    home.mkdir(parents=True, exist_ok=True)
    marker = folder / "wheelhouse.json"
    known = json.loads(marker.read_text()) if marker.is_file() else {"extras": None}
    if known["extras"] is None or not set(extras) <= set(known["extras"]):
        staging = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=home))
        _pip_wheel([_source(), *extras], staging)
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(folder)
        known = {"extras": sorted(set(extras) | set(known["extras"] or []))}
        marker.write_text(json.dumps(known))
    with tempfile.TemporaryDirectory(dir=home) as fresh:  # our own code, as it is now
        _pip_wheel(["--no-deps", _source()], Path(fresh))
        [wheel] = Path(fresh).glob("datarun-*.whl")
        for old in folder.glob("datarun-*.whl"):
            old.unlink()
        shutil.move(str(wheel), folder / wheel.name)
    built = folder / wheel.name
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    return Wheelhouse(folder, built.name, digest, tuple(known["extras"] or ()))
