"""Opening checkpoints off the GUI thread, as a job generator the JobRunner drives.

Each file yields a :class:`Loaded` or a :class:`LoadFailed` as soon as it is
read, so rows fill in one by one and a bad file never stops the others.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import MergeStudioError

if TYPE_CHECKING:
    from merge_studio.core.checkpoints import Checkpoint, CheckpointSummary


@dataclass(frozen=True)
class Loaded:
    model_id: int
    checkpoint: Checkpoint
    summary: CheckpointSummary


@dataclass(frozen=True)
class Scanned:
    """A model's values were read: the tensors holding NaN or infinity (empty: all finite)."""

    model_id: int
    non_finite: list[Any]


# Models up to this size have their values checked for NaN/infinity in the background
# after loading; larger ones only when a merge reads them (the engine checks every chunk).
AUTO_SCAN_BYTES = 1 << 30


@dataclass(frozen=True)
class LoadFailed:
    model_id: int
    path: Path
    message: str


def describe_failure(path: Path, exc: BaseException) -> str:
    """One line for the row and the log; unexpected errors keep their type name."""
    if isinstance(exc, MergeStudioError):
        return str(exc)
    return f"cannot open {path.name}: {type(exc).__name__}: {exc}"


def load_checkpoints(items: Sequence[tuple[int, Path]], cancel: CancelToken | None = None) -> Generator[Any, None, int]:
    """Open each ``(model_id, path)``; returns how many opened."""
    from merge_studio.core.checkpoints import open_checkpoint  # imports torch; not needed to paint the window

    ok = 0
    for i, (model_id, path) in enumerate(items):
        check_cancel(cancel)
        yield Progress("open", i, len(items), current=path.name, unit="files")
        checkpoint = None
        try:
            checkpoint = open_checkpoint(path)
            summary = checkpoint.summary()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row message
            if checkpoint is not None:
                checkpoint.close()
            yield LoadFailed(model_id, path, describe_failure(path, exc))
            continue
        ok += 1
        yield Loaded(model_id, checkpoint, summary)
    yield Progress("open", len(items), len(items), unit="files")
    return ok


def scan_values(items: Sequence[tuple[int, Checkpoint]], cancel: CancelToken | None = None) -> Generator[Any, None, int]:
    """Read each ``(model_id, checkpoint)``'s values and yield a :class:`Scanned` per model."""
    from merge_studio.core.finite import scan_checkpoint

    for model_id, checkpoint in items:
        check_cancel(cancel)
        found = yield from scan_checkpoint(checkpoint, cancel)
        yield Scanned(model_id, found)
    return len(items)
