"""The streaming merge engine: read a tensor from each input, merge, write, repeat.

``iter_merge(recipe, cancel)`` is a generator that yields :class:`Progress` and
returns a :class:`MergeResult`; ``run_merge`` drains it. Only the tensors of the
current step are in memory (a chunk of them for very large tensors), so memory
does not grow with the size of the model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import merge_studio
from merge_studio.core.alloc import keep_freed_memory
from merge_studio.core.checkpoints import Checkpoint
from merge_studio.core import chunk_tasks
from merge_studio.core.chunk_tasks import require_finite
from merge_studio.core.finite import all_finite, fits_dtype
from merge_studio.core.hashing import HashingStopped, files_sha256
from merge_studio.core.merge_plan import MergePlan, plan_merge
from merge_studio.core.methods.spec import ModelJobContext, TensorContext
from merge_studio.core.pool import OrderedPool, default_threads
from merge_studio.core.progress import CancelToken, LinkedCancel, Progress, check_cancel, drive
from merge_studio.core.recipe import Recipe
from merge_studio.core.writer import OutputSet, PlannedTensor
from merge_studio.errors import MethodError

@dataclass(frozen=True)
class MergeResult:
    """What a finished merge produced."""

    outputs: tuple[Path, ...]
    method: str
    tensor_count: int
    merged: int
    copied: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float
    bytes_read: int
    bytes_written: int
    layer_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    sources: tuple[dict[str, Any], ...] = ()
    """Each input's name, path, size and (when hashed) SHA-256, as written into the metadata."""

    @property
    def output(self) -> Path:
        return self.outputs[0]


def run_merge(
    recipe: Recipe, on_progress=None, cancel: CancelToken | None = None, *, threads: int | None = None
) -> MergeResult:
    """Run a merge to the end (for the CLI and tests)."""
    return drive(iter_merge(recipe, cancel, threads=threads), on_progress)


def iter_merge(
    recipe: Recipe, cancel: CancelToken | None = None, *, threads: int | None = None, sink: Callable[..., Any] | None = None
) -> Generator[Any, None, MergeResult]:
    """Merge as a generator of :class:`Progress`; returns the :class:`MergeResult`.

    ``threads`` caps the worker threads (default: every core, see :mod:`pool`); the
    output is bit-identical for any number. Nothing is left behind when it fails or is
    cancelled (``Cancelled`` is raised). ``sink`` replaces the file writer
    (:class:`OutputSet`, whose interface it shares), e.g. to merge into memory.
    """
    start = time.perf_counter()
    keep_freed_memory()
    yield Progress("open", 0, None, message="opening checkpoints")
    plan = plan_merge(recipe)
    for ck in plan.all_checkpoints:
        ck.watch(cancel)  # reads of huge tensors stop when the job is cancelled
    try:
        if plan.spec.streaming:
            result = yield from _stream(plan, cancel, start, threads or default_threads(), sink or OutputSet)
        else:
            result = yield from _whole_model(plan, cancel, start, sink or OutputSet)
    finally:
        plan.close()
    return result


# --- metadata -------------------------------------------------------------------------
class _SourceHashes:
    """Hash the inputs on a background thread while the merge runs (hashlib frees the GIL)."""

    def __init__(self, plan: MergePlan, enabled: bool) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash") if enabled else None
        self._futures: list[tuple[Checkpoint, Future[str] | None]] = []
        for ck in plan.all_checkpoints:
            fut = self._pool.submit(self._hash, ck.source_files()) if self._pool else None
            self._futures.append((ck, fut))

    def _hash(self, files: list[Path]) -> str:
        if self._stop.is_set():
            return ""
        try:
            return files_sha256(files, stop=self._stop)
        except HashingStopped:
            return ""

    def sources(self) -> list[dict[str, Any]]:
        out = []
        for ck, fut in self._futures:
            entry: dict[str, Any] = {"name": ck.name, "path": str(ck.path), "size": ck.file_bytes()}
            if fut is not None:
                entry["sha256"] = fut.result()
            out.append(entry)
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _base_metadata(plan: MergePlan) -> dict[str, str]:
    meta = {
        "format": "pt",
        "merge_studio.version": merge_studio.__version__,
        "merge_studio.method": plan.spec.name,
        "merge_studio.recipe": plan.recipe.to_yaml(),
    }
    if plan.arch:
        meta["merge_studio.arch"] = plan.arch
    return meta


def _folder_files(plan: MergePlan, sources: list[dict[str, Any]]) -> Callable[[Path], None] | None:
    """Writes a Hugging Face output's config, tokenizer and card into the temporary folder."""
    folder = plan.output_folder
    return None if folder is None else (lambda tmp: folder.write_into(tmp, sources))


def _reserve(plan: MergePlan, layers: int) -> int:
    """Header space for metadata written at the end (hashes, per-layer statistics)."""
    sources = sum(len(str(ck.path)) + len(ck.name) + 160 for ck in plan.all_checkpoints)
    longest = max((len(n) for n in plan.keys), default=0)
    return 8192 + sources + layers * (longest + 200)


def _layer_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _finish_stats(raw: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for layer, acc in raw.items():
        stats: dict[str, float] = {}
        if acc.get("ref_sq", 0.0) > 0:
            stats["relative_change"] = (acc["diff_sq"] / acc["ref_sq"]) ** 0.5
        if acc.get("task_mass_total", 0.0) > 0:
            stats["kept_fraction"] = acc.get("task_mass_kept", 0.0) / acc["task_mass_total"]
        stats.update({k: v for k, v in acc.items() if k not in ("diff_sq", "ref_sq")})
        out[layer] = {k: float(f"{v:.6g}") for k, v in stats.items()}
    return out


# --- streaming methods ----------------------------------------------------------------------
def _stream(
    plan: MergePlan, cancel: CancelToken | None, start: float, threads: int, open_output: Callable[..., Any]
) -> Generator[Any, None, MergeResult]:
    spec, recipe = plan.spec, plan.recipe
    n_out = len(plan.models) if spec.outputs == "per_model" else 1
    layers = {_layer_of(p.name) for p in plan.planned}
    metadata = _base_metadata(plan)
    targets = plan.targets(n_out)
    outputs: list[Any] = []
    hashes = _SourceHashes(plan, recipe.hash_sources)
    total = sum(p.numel for p in plan.planned) or 1
    done = 0
    bytes_read = 0
    stats: dict[str, dict[str, float]] = {}
    pool = OrderedPool(threads)
    stop = LinkedCancel(cancel)  # stops the workers when this merge fails, without touching the caller's token
    try:
        for target in targets:
            outputs.append(
                open_output(target, plan.planned, shard_bytes=recipe.shard_bytes, metadata=metadata,
                            reserve=_reserve(plan, len(layers)))
            )
        # Workers read, merge, check and convert chunks (or runs of small tensors); this
        # thread writes them in order.
        for batch in pool.ordered(chunk_tasks.merge_tasks(plan, pool, stop)):
            check_cancel(cancel)
            for outcome in batch:
                pieces = outcome.outputs * len(outputs) if len(outcome.outputs) == 1 else outcome.outputs  # copies go to all
                for out, tensor in zip(outputs, pieces, strict=True):
                    out.write(outcome.name, tensor)
                if outcome.metrics:
                    acc = stats.setdefault(_layer_of(outcome.name), {})
                    for key, value in outcome.metrics.items():
                        acc[key] = acc.get(key, 0.0) + value
                bytes_read += outcome.bytes_read
                done += outcome.stop - outcome.start
            yield Progress("merge", done, total, current=batch[-1].name, unit="elements")
        check_cancel(cancel)  # a cancel during the last batch's progress still stops the merge
        pool.close()
        yield Progress("finish", done, total, message="writing metadata")
        layer_stats = _finish_stats(stats)
        sources = hashes.sources()
        final = {
            **metadata,
            "merge_studio.sources": json.dumps(sources, separators=(",", ":")),
            "merge_studio.layer_stats": json.dumps(layer_stats, separators=(",", ":")),
        }
        written = tuple(out.commit(final, _folder_files(plan, sources)) for out in outputs)
    except BaseException:
        hashes.stop()
        stop.cancel()  # running tasks stop at their next check
        pool.close()
        for out in outputs:
            out.abort()
        raise
    return MergeResult(
        outputs=written,
        method=spec.name,
        tensor_count=len(plan.planned),
        merged=sum(1 for a in plan.actions.values() if a.kind == "merge"),
        copied=tuple(n for n, a in plan.actions.items() if a.kind == "copy"),
        skipped=tuple(plan.skipped),
        seconds=time.perf_counter() - start,
        bytes_read=bytes_read,
        bytes_written=sum(p.nbytes for p in plan.planned) * len(written),
        layer_stats=layer_stats,
        sources=tuple(sources),
    )


# --- whole-model methods -----------------------------------------------------------------------
def _whole_model(
    plan: MergePlan, cancel: CancelToken | None, start: float, open_output: Callable[..., Any]
) -> Generator[Any, None, MergeResult]:
    spec, recipe = plan.spec, plan.recipe
    params = plan.params_for("", 0.0)
    model_params = plan.model_params_for("", 0.0)
    ctx = ModelJobContext(
        device=plan.device, cancel=cancel, arch=plan.arch, data=recipe.data, seed=recipe.seed, model_names=plan.model_names
    )
    output = yield from spec.merge_model(plan.models, plan.base, params, model_params, ctx)
    check_cancel(cancel)
    out_dtype = plan.out_dtype
    metadata = {**_base_metadata(plan), **output.metadata}
    if output.report is not None:  # known now, so it is laid out with the header
        metadata["merge_studio.report"] = json.dumps(output.report, separators=(",", ":"))
    targets = plan.targets(len(output.state_dicts))
    hashes = _SourceHashes(plan, recipe.hash_sources)
    sets: list[Any] = []
    try:
        for target, sd in zip(targets, output.state_dicts, strict=True):
            planned = [
                PlannedTensor(n, tuple(t.shape), out_dtype if (out_dtype and t.is_floating_point()) else t.dtype)
                for n, t in sd.items()
            ]
            if not recipe.allow_non_finite:
                for p in planned:
                    t = sd[p.name]
                    if not all_finite(t) or not fits_dtype(t, p.dtype):  # find who holds them only then
                        inputs = [ck.get_tensor(p.name) if p.name in ck else None for ck in plan.all_checkpoints]
                        require_finite(p.name, t, p.dtype, [ck.name for ck in plan.all_checkpoints], inputs, spec.label)
            out = open_output(target, planned, shard_bytes=recipe.shard_bytes, metadata=metadata, reserve=_reserve(plan, 0))
            sets.append(out)
            for n, t in sd.items():
                out.write(n, t)
            yield Progress("write", len(sets), len(targets), current=str(target))
        sources = hashes.sources()
        final = {**metadata, "merge_studio.sources": json.dumps(sources, separators=(",", ":"))}
        written = tuple(s.commit(final, _folder_files(plan, sources)) for s in sets)
    except BaseException:
        hashes.stop()
        for s in sets:
            s.abort()
        raise
    n = len(output.state_dicts[0]) if output.state_dicts else 0
    return MergeResult(
        outputs=written,
        method=spec.name,
        tensor_count=n,
        merged=n,
        copied=(),
        skipped=(),
        seconds=time.perf_counter() - start,
        bytes_read=sum(ck.file_bytes() for ck in plan.all_checkpoints),
        bytes_written=sum(p.stat().st_size for p in written if p.is_file()),
        report=output.report,
        sources=tuple(sources),
    )
