"""Content hashes of source files, so a merged file says exactly what it was made from."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

from merge_studio.core import hash_cache

_BLOCK = 8 * 2**20


class HashingStopped(Exception):  # noqa: N818 - a state, not a failure
    """Raised by the hash functions when their ``stop`` event was set."""


def file_sha256(path: Path, *, use_cache: bool = True, stop: threading.Event | None = None) -> str:
    """SHA-256 of one file, read in blocks (hashlib releases the GIL on large blocks).

    A digest computed before for the unchanged file is reused (see :mod:`hash_cache`).
    ``stop`` ends the work between blocks (a failed or cancelled merge must not wait
    for a 70 GB input to be hashed before the program can exit).
    """
    key = hash_cache.file_key(path) if use_cache else None
    if key is not None and (known := hash_cache.remembered(key)) is not None:
        return known
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(_BLOCK):
            if stop is not None and stop.is_set():
                raise HashingStopped(str(path))
            h.update(block)
    digest = h.hexdigest()
    if key is not None and hash_cache.file_key(path) == key:  # unchanged while it was read
        hash_cache.remember(key, digest)
    return digest


def files_sha256(paths: Sequence[Path], stop: threading.Event | None = None) -> str:
    """One hash for a checkpoint: of the file, or of its shards' hashes in order."""
    if len(paths) == 1:
        return file_sha256(paths[0], stop=stop)
    h = hashlib.sha256()
    for p in paths:
        h.update(file_sha256(p, stop=stop).encode())
    return h.hexdigest()
