"""Content hashes of source files, so a merged file says exactly what it was made from."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

_BLOCK = 8 * 2**20


def file_sha256(path: Path) -> str:
    """SHA-256 of one file, read in blocks (hashlib releases the GIL on large blocks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def files_sha256(paths: Sequence[Path]) -> str:
    """One hash for a checkpoint: of the file, or of its shards' hashes in order."""
    if len(paths) == 1:
        return file_sha256(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(file_sha256(p).encode())
    return h.hexdigest()
