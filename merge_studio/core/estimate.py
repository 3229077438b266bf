"""What a merge will take before it runs: output size, free space, peak memory, time.

Sizes are exact up to the headers (the writer lays out the same tensors in the same
dtype); memory and time are rough on purpose: memory is an upper estimate of what
the workers hold at once, and time is bytes moved divided by a rate, measured from
past merges in the history when there are any, else an assumed
:data:`ASSUMED_RATE`. The merge never depends on them, except that one which cannot
fit on the disk is refused before anything is written.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merge_studio.core.progress import CancelToken, Progress
from merge_studio.core.recipe import Recipe
from merge_studio.errors import OutputError

ASSUMED_RATE = 200e6
"""Bytes a second (read + written) assumed when no past merge was timed."""
MIN_TIMED_SECONDS = 0.5  # shorter merges are mostly start-up, not a rate


@dataclass(frozen=True)
class MergeEstimate:
    outputs: tuple[Path, ...]
    output_bytes: int
    read_bytes: int
    free_bytes: int | None
    free_at: Path | None
    peak_memory_bytes: int
    seconds: float
    rate: float
    measured_rate: bool
    tensor_count: int
    replaces: tuple[Path, ...] = ()

    @property
    def fits(self) -> bool:
        """Whether the disk has room (the output is written beside an existing one before replacing it)."""
        return self.free_bytes is None or self.output_bytes <= self.free_bytes

    def lines(self) -> list[str]:
        from merge_studio.core.fs_errors import shown_path

        free = "unknown" if self.free_bytes is None else f"{human(self.free_bytes)} free at {shown_path(self.free_at)}"
        how = "measured on past merges" if self.measured_rate else "assumed; no past merge timed yet"
        out = [
            f"output        {human(self.output_bytes)} in {len(self.outputs)} "
            f"{'model' if len(self.outputs) == 1 else 'models'} ({self.tensor_count} tensors): "
            + ", ".join(str(p) for p in self.outputs),
            f"disk          {free}" + ("" if self.fits else "  -- NOT ENOUGH"),
            f"peak memory   about {human(self.peak_memory_bytes)} (rough upper estimate)",
            f"time          {'about ' if self.seconds >= 1 else ''}{duration(self.seconds)} ({human(self.read_bytes)} read + "
            f"{human(self.output_bytes)} written at {human(self.rate)}/s, {how})",
        ]
        if self.replaces:
            out.append("replaces      " + ", ".join(str(p) for p in self.replaces))
        return out

    def summary(self) -> str:
        """Two short lines for the window, over the Merge button (figures never broken across lines)."""
        def keep(text: str) -> str:
            return text.replace(" ", "\u00a0")

        free = "" if self.free_bytes is None else f" ({keep(human(self.free_bytes) + ' free')})"
        time_text = duration(self.seconds) if self.seconds < 1 else "≈ " + duration(self.seconds)
        return (f"Output {keep(human(self.output_bytes))}{free}\n"
                f"{keep('Peak memory ≈ ' + human(self.peak_memory_bytes))} · {keep(time_text)}")


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def free_space(target: Path) -> tuple[int | None, Path | None]:
    """Free bytes on the disk that will hold ``target`` (measured at its nearest existing folder)."""
    for folder in [target, *target.parents]:
        if folder.is_dir():
            try:
                return shutil.disk_usage(folder).free, folder
            except OSError:
                return None, folder
    return None, None


def measured_rate(history_path: Path | None = None) -> float | None:
    """Median bytes a second (read + written) of recent successful merges that took long enough to time."""
    from merge_studio.core.history import load_history

    rates = [
        ((r.bytes_read or 0) + (r.bytes_written or 0)) / r.seconds
        for r in load_history(history_path)[:50]
        if r.status == "ok" and r.seconds >= MIN_TIMED_SECONDS and r.bytes_read
    ][:10]
    return statistics.median(rates) if rates else None


def _file_bytes(tensors: list, metadata: dict[str, str], reserve: int) -> int:
    from merge_studio.core.direct_io import BLOCK
    from merge_studio.core.writer import _header_bytes

    header = 8 + len(_header_bytes(tensors, metadata)) + reserve
    return (header + BLOCK - 1) // BLOCK * BLOCK + sum(t.nbytes for t in tensors)


def _one_output_bytes(planned: list, metadata: dict[str, str], reserve: int, shard_bytes: int | None) -> int:
    from merge_studio.core.writer import _shard_plan

    shards = _shard_plan(planned, shard_bytes)
    if len(shards) <= 1:
        return _file_bytes(planned, metadata, reserve)
    total = sum(_file_bytes(s, metadata, reserve if i == 0 else 0) for i, s in enumerate(shards))
    names = {t.name: f"model-00001-of-{len(shards):05d}.safetensors" for t in planned}
    index = json.dumps({"metadata": {"total_size": 0, **metadata}, "weight_map": names}, indent=2)
    return total + len(index) + max(0, reserve - 8192)  # plus the hashes and statistics known at the end


def _folder_bytes(plan: Any) -> int:
    """Config, tokenizer, copied side files and card of a Hugging Face output folder."""
    folder = plan.output_folder
    if folder is None:
        return 0
    total = len(json.dumps(folder.final_config(), indent=2)) + sum(len(b) for b in folder.tokenizer.values())
    total += sum(Path(p).stat().st_size for p in folder.copied.values() if Path(p).is_file())
    try:
        total += len(folder.card.render([]).encode())
    except Exception:  # noqa: BLE001 - the card is a few KB either way
        total += 4096
    return total


def estimate_merge(recipe: Recipe, *, threads: int | None = None, history_path: Path | None = None) -> MergeEstimate:
    """Plan the merge (headers only, no tensor read) and size what it will write."""
    from merge_studio.core.chunk_tasks import CHUNK_ELEMENTS
    from merge_studio.core.engine import _base_metadata, _layer_of, _reserve
    from merge_studio.core.merge_plan import plan_merge
    from merge_studio.core.overwrite import existing, merge_targets
    from merge_studio.core.pool import default_threads
    from merge_studio.core.writer import PlannedTensor

    plan = plan_merge(recipe)
    try:
        spec = plan.spec
        n_out = len(plan.models) if spec.outputs == "per_model" else 1
        metadata = _base_metadata(plan)
        inputs = plan.all_checkpoints
        read = sum(ck.file_bytes() for ck in inputs)
        compute = plan.compute_dtype.itemsize
        if spec.streaming:
            planned = list(plan.planned)
            reserve = _reserve(plan, len({_layer_of(p.name) for p in planned}))
            piece = max((min(p.numel, CHUNK_ELEMENTS) if spec.elementwise else p.numel for p in planned), default=0)
            workers = threads or default_threads()
            peak = 2 * workers * (len(inputs) + 2) * piece * compute
        else:  # whole-model methods hold every input (and the result) at once
            reference = plan.base if plan.base is not None else plan.models[0]
            planned = [
                PlannedTensor(i.name, i.shape, plan.out_dtype if (plan.out_dtype and i.is_float) else i.dtype)
                for i in reference.infos.values()
            ]
            reserve = _reserve(plan, 0)
            peak = (len(inputs) + n_out) * sum(i.numel for i in reference.infos.values()) * compute
        one = _one_output_bytes(planned, metadata, reserve, recipe.shard_bytes) + _folder_bytes(plan)
        targets = merge_targets(recipe)
        output_bytes = one * n_out
    finally:
        plan.close()
    free, at = free_space(targets[0]) if targets else (None, None)
    rate = measured_rate(history_path)
    used = rate or ASSUMED_RATE
    return MergeEstimate(
        outputs=tuple(targets),
        output_bytes=output_bytes,
        read_bytes=read,
        free_bytes=free,
        free_at=at,
        peak_memory_bytes=peak,
        seconds=(read + output_bytes) / used,
        rate=used,
        measured_rate=rate is not None,
        tensor_count=len(planned),
        replaces=tuple(existing(targets)),
    )


def require_space(estimate: MergeEstimate) -> None:
    """Refuse, with the figures, a merge whose output cannot fit on its disk."""
    if not estimate.fits:
        from merge_studio.core.fs_errors import shown_path

        raise OutputError(
            f"not enough disk space for the output: it needs {human(estimate.output_bytes)}, "
            f"{shown_path(estimate.free_at)} has {human(estimate.free_bytes or 0)} free",
            hint="free some space or choose an output on another disk",
        )


def iter_checked_merge(
    recipe: Recipe, cancel: CancelToken | None = None, *, threads: int | None = None
) -> Generator[Any, None, Any]:
    """:func:`iter_merge`, refused up front when the output cannot fit on the disk."""
    from merge_studio.core.engine import iter_merge

    yield Progress("estimate", 0, None, message="checking the disk space")
    require_space(estimate_merge(recipe, threads=threads))
    return (yield from iter_merge(recipe, cancel, threads=threads))
