"""Bundles on disk: every drop becomes a copy that datarun owns, checked on the way in.

A bundle is a folder, a `.zip` or a `.tar.gz`. Neither is read in place: a folder is
copied (`spool.foldercopy`) and an archive is unpacked (`spool.archives`), by our own
code, into a fresh folder; what is checked, hashed and stored is that copy, so the
dropper cannot change it afterwards. Both hold every drop to the same rules
(`spool.droprules`: caps, litter, names). What datarun then does with the trees it owns
(`freeze`, `private`, `remove`) is `spool.trees`.

This module is where the rest of datarun reaches bundles: it holds a bundle's content
hash and gives the names the watcher, the executor and the CLI use from those modules.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from spool.archives import extract
from spool.droprules import (
    CHUNK,
    MARKER,
    MAX_DEPTH,
    Limits,
    archive_kind,
    shown,
    sibling_marker,
    stem,
)
from spool.foldercopy import copy_folder
from spool.trees import freeze, private, remove

__all__ = [
    "MARKER",
    "MAX_DEPTH",
    "Limits",
    "archive_kind",
    "content_hash",
    "copy_folder",
    "extract",
    "freeze",
    "private",
    "remove",
    "shown",
    "sibling_marker",
    "stem",
    "walk",
]


def walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every file below root, sorted, with its relative posix path (no recursion)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
            else:
                yield path, path.relative_to(root).as_posix()


def content_hash(root: Path) -> str:
    """sha256 over every file's relative path, size and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for path, rel in sorted(walk(root), key=lambda item: item[1]):
        size = path.stat().st_size
        digest.update(b"F" + os.fsencode(rel) + b"\0" + str(size).encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
