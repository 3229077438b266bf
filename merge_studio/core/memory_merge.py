"""Merge into memory instead of a file, to test a recipe before anything is written.

The same engine runs (same plan, same chunks, same conversion to the output
dtype), only the sink differs: :class:`MemoryOutput` gathers each tensor's
chunks into one buffer where :class:`~merge_studio.core.writer.OutputSet`
would stream them to disk. So the tensors are bit-identical to the file the
same recipe writes, and evaluating them gives the same scores. A merge whose
output would not fit in the memory that is free is refused up front, with both
figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merge_studio.core.lazy_torch import torch
from merge_studio.core.progress import CancelToken
from merge_studio.core.recipe import Recipe
from merge_studio.errors import OutputError

# Leave this share of the free memory to everything else (the app, the evaluation's own copies).
MEMORY_SHARE = 0.6
IN_MEMORY = "(in memory)"  # the output path of a merge that is not written


@dataclass
class MemoryMerge:
    """A merged model held in memory: its tensors, the metadata its file would carry, and the merge's summary."""

    state_dict: dict[str, Any]
    metadata: dict[str, str]
    result: Any = None  # the engine's MergeResult (outputs name IN_MEMORY)
    extra: list[dict[str, Any]] = field(default_factory=list)  # further outputs of per-model methods

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict.values())


class MemoryOutput:
    """An engine sink with :class:`~merge_studio.core.writer.OutputSet`'s interface that keeps the tensors."""

    def __init__(self, target: Path, tensors: Sequence[Any], *, metadata: Mapping[str, str], **_: Any) -> None:
        self.target = Path(target)
        self._planned = {p.name: p for p in tensors}
        self._filled: dict[str, int] = {}
        self.tensors: dict[str, Any] = {}
        self.metadata = dict(metadata)

    def write(self, name: str, data: Any) -> None:
        """Append (part of) tensor ``name``, converted to its planned dtype as the file writer does."""
        planned = self._planned[name]
        buffer = self.tensors.get(name)
        if buffer is None:
            buffer = self.tensors[name] = torch.empty(planned.numel, dtype=planned.dtype)
            self._filled[name] = 0
        flat = data.detach().to(device="cpu", dtype=planned.dtype).reshape(-1)
        start = self._filled[name]
        if start + flat.numel() > planned.numel:
            raise OutputError(f"too much data for {name}: shape {planned.shape}")
        buffer[start:start + flat.numel()].copy_(flat)
        self._filled[name] = start + flat.numel()

    def commit(self, metadata: Mapping[str, str], before_move: Callable[[Path], None] | None = None) -> Path:
        """Shape every tensor (tensors with no data, such as empty ones, are created here)."""
        for name, planned in self._planned.items():
            if name not in self.tensors:
                self.tensors[name] = torch.empty(planned.numel, dtype=planned.dtype)
            self.tensors[name] = self.tensors[name].reshape(planned.shape)
        self.tensors = {name: self.tensors[name] for name in self._planned}  # the file's order
        self.metadata = dict(metadata)
        return self.target

    def abort(self) -> None:
        self.tensors.clear()


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(recipe: Recipe, free: int | None = None) -> int:
    """The output's size; refuses (with both figures) a merge whose output would not fit in free memory."""
    from merge_studio.core.estimate import estimate_merge

    size = estimate_merge(recipe.model_copy(update={"output": IN_MEMORY})).output_bytes
    free = available_memory() if free is None else free
    if free is not None and size > free * MEMORY_SHARE:
        raise OutputError(
            f"the merged model ({size / 1e9:.2f} GB) does not fit in the free memory ({free / 1e9:.2f} GB)",
            hint="merge to a file and evaluate that instead",
        )
    return size


def iter_memory_merge(
    recipe: Recipe, cancel: CancelToken | None = None, *, threads: int | None = None
) -> Generator[Any, None, MemoryMerge]:
    """Run ``recipe`` into memory (a generator of Progress); nothing is written to disk."""
    from merge_studio.core.engine import iter_merge

    check_fits_in_memory(recipe)
    sinks: list[MemoryOutput] = []

    def sink(target: Path, tensors: Sequence[Any], **kwargs: Any) -> MemoryOutput:
        out = MemoryOutput(target, tensors, **kwargs)
        sinks.append(out)
        return out

    in_memory = recipe.model_copy(update={"output": IN_MEMORY, "hash_sources": False})
    result = yield from iter_merge(in_memory, cancel, threads=threads, sink=sink)
    first, *rest = sinks
    return MemoryMerge(first.tensors, first.metadata, result,
                       [{"state_dict": s.tensors, "metadata": s.metadata} for s in rest])
