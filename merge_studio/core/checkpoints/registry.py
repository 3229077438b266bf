"""Pick the reader for a path. Other readers are added here, one line each."""

from __future__ import annotations

from pathlib import Path

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.checkpoints.safetensors_reader import SafetensorsCheckpoint
from merge_studio.errors import CheckpointError

SUPPORTED_SUFFIXES = (".safetensors",)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint lazily; no tensor is read until asked.

    Raises :class:`CheckpointError` with a readable message for anything that
    cannot be opened.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p} does not exist")
    if p.suffix == ".safetensors":
        return SafetensorsCheckpoint(p)
    raise CheckpointError(
        f"{p.name}: unsupported file type {p.suffix or '(none)'}",
        hint=f"supported: {', '.join(SUPPORTED_SUFFIXES)}",
    )
