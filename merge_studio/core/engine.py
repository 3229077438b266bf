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
from merge_studio.core.finite import all_finite, fits_dtype, holders_of_non_finite, non_finite_error
from merge_studio.core.hashing import HashingStopped, files_sha256
from merge_studio.core.merge_plan import MergePlan, plan_merge
from merge_studio.core.methods.layered import resolve_params
from merge_studio.core.methods.spec import ModelJobContext, TensorContext
from merge_studio.core.progress import CancelToken, Progress, check_cancel, drive
from merge_studio.core.recipe import Recipe
from merge_studio.core.writer import OutputSet, PlannedTensor
from merge_studio.errors import MethodError

# 1M elements (4 MB per float32 chunk): small enough that a method's temporaries stay
# in cache between its passes (3x faster than 4M chunks), large enough that per-chunk
# Python overhead is negligible.
CHUNK_ELEMENTS = 1 << 20
# A method with whole-tensor statistics (TIES) reads each large tensor twice unless its
# inputs, converted, fit in this much memory; then the chunks are cut from them.
HELD_BYTES = 192 << 20
_PREFETCH = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")


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

    @property
    def output(self) -> Path:
        return self.outputs[0]


def run_merge(recipe: Recipe, on_progress=None, cancel: CancelToken | None = None) -> MergeResult:
    """Run a merge to the end (for the CLI and tests)."""
    return drive(iter_merge(recipe, cancel), on_progress)


def iter_merge(recipe: Recipe, cancel: CancelToken | None = None) -> Generator[Any, None, MergeResult]:
    """Merge as a generator of :class:`Progress`; returns the :class:`MergeResult`.

    Nothing is left behind when it fails or is cancelled (``Cancelled`` is raised).
    """
    start = time.perf_counter()
    keep_freed_memory()
    yield Progress("open", 0, None, message="opening checkpoints")
    plan = plan_merge(recipe)
    for ck in plan.all_checkpoints:
        ck.watch(cancel)  # reads of huge tensors stop when the job is cancelled
    try:
        if plan.spec.streaming:
            result = yield from _stream(plan, cancel, start)
        else:
            result = yield from _whole_model(plan, cancel, start)
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
def _stream(plan: MergePlan, cancel: CancelToken | None, start: float) -> Generator[Any, None, MergeResult]:
    spec, recipe = plan.spec, plan.recipe
    n_out = len(plan.models) if spec.outputs == "per_model" else 1
    layers = {_layer_of(p.name) for p in plan.planned}
    metadata = _base_metadata(plan)
    targets = plan.targets(n_out)
    outputs: list[OutputSet] = []
    hashes = _SourceHashes(plan, recipe.hash_sources)
    total = sum(p.numel for p in plan.planned) or 1
    done = 0
    bytes_read = 0
    stats: dict[str, dict[str, float]] = {}
    try:
        for target in targets:
            outputs.append(
                OutputSet(target, plan.planned, shard_bytes=recipe.shard_bytes, metadata=metadata, reserve=_reserve(plan, len(layers)))
            )
        for planned in plan.planned:
            check_cancel(cancel)
            name = planned.name
            action = plan.actions[name]
            if action.kind == "copy":
                for s, e in _chunks(planned.numel):
                    chunk = action.source.get_flat(name, s, e)
                    if not recipe.allow_non_finite:
                        _require_finite(name, chunk, planned.dtype, [action.source.name], [chunk], "copied")
                    bytes_read += chunk.numel() * chunk.element_size()
                    for out in outputs:
                        out.write(name, chunk.to(planned.dtype))
                    done += e - s
                    yield Progress("merge", done, total, current=name, unit="elements")
                    check_cancel(cancel)
                continue
            for item in _merge_tensor(plan, planned, stats, cancel):
                if isinstance(item, tuple):
                    s, e, merged, nbytes = item
                    bytes_read += nbytes
                    for out, tensor in zip(outputs, merged, strict=True):
                        out.write(name, tensor.reshape(-1))
                    done += e - s
                    yield Progress("merge", done, total, current=name, unit="elements")
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
    )


def _require_finite(
    name: str, out: torch.Tensor, out_dtype: torch.dtype, input_names: list[str],
    inputs: list[torch.Tensor | None], made_by: str,
) -> None:
    """Stop before writing NaN/inf (or values the output dtype cannot hold), naming who holds them."""
    if not all_finite(out):
        raise non_finite_error(name, holders_of_non_finite(input_names, inputs), produced_by=made_by)
    if not fits_dtype(out, out_dtype):
        limit = torch.finfo(out_dtype).max
        raise non_finite_error(
            name, [], produced_by=f"values beyond {str(out_dtype).removeprefix('torch.')}'s range of ±{limit:g}; "
            "they would be written as infinity",
        )


def _chunks(numel: int, size: int | None = None) -> list[tuple[int, int]]:
    size = size or CHUNK_ELEMENTS
    if numel == 0:
        return [(0, 0)]
    return [(s, min(s + size, numel)) for s in range(0, numel, size)]


def _merge_tensor(plan: MergePlan, planned: PlannedTensor, stats: dict[str, dict[str, float]], cancel: CancelToken | None):
    """Yield ``(start, stop, [merged tensors], bytes read)`` for each chunk of one tensor."""
    spec, recipe = plan.spec, plan.recipe
    name = planned.name
    depth = plan.depths[name]
    params = plan.params_for(name, depth)
    model_params = plan.model_params_for(name, depth)
    dev, cdt = plan.device, plan.compute_dtype
    ctx_args = dict(name=name, shape=planned.shape, depth=depth, model_names=plan.model_names, seed=recipe.seed, device=dev)
    base_ck = plan.base if spec.base != "unused" else None
    whole = not spec.elementwise or planned.numel <= CHUNK_ELEMENTS

    def load(ck: Checkpoint, rng: tuple[int, int] | None) -> torch.Tensor:
        t = ck.get_tensor(name) if rng is None else ck.get_flat(name, *rng)
        return t.to(device=dev, dtype=cdt)

    n_bytes_per_el = sum(ck.info(name).dtype.itemsize for ck in plan.models) + (
        base_ck.info(name).dtype.itemsize if base_ck is not None else 0
    )
    stat_values: tuple[Any, ...] = ()
    # Whole tensors read for the statistics pass, kept for the chunks when they are small
    # enough, so the merge pass slices them instead of reading and converting again.
    held: tuple[list[torch.Tensor], torch.Tensor | None] | None = None
    if spec.statistics is not None and not whole:
        n_inputs = len(plan.models) + (base_ck is not None)
        keep = n_inputs * planned.numel * cdt.itemsize <= HELD_BYTES
        base_full = load(base_ck, None) if base_ck is not None else None
        values, kept = [], []
        for ck, mp in zip(plan.models, model_params, strict=True):
            check_cancel(cancel)
            full = load(ck, None)
            values.append(spec.statistics(full, base_full, params, mp, TensorContext(**ctx_args)))
            if keep:
                kept.append(full.reshape(-1))
            del full
        stat_values = tuple(values)
        if keep:
            held = (kept, base_full.reshape(-1) if base_full is not None else None)
        del base_full

    def load_chunk(rng: tuple[int, int] | None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if held is not None and rng is not None:
            s, e = rng
            return [t[s:e] for t in held[0]], (held[1][s:e] if held[1] is not None else None)
        return [load(ck, rng) for ck in plan.models], (load(base_ck, rng) if base_ck is not None else None)

    acc = stats.setdefault(_layer_of(name), {})
    ranges: list[tuple[int, int] | None] = [None] if whole else list(_chunks(planned.numel))
    # Read (and convert) the next chunk on a second thread while this one is merged:
    # positional reads and torch kernels release the GIL, so the two overlap.
    pending = _PREFETCH.submit(load_chunk, ranges[0])
    for i, rng in enumerate(ranges):
        check_cancel(cancel)
        tensors, base_t = pending.result()
        if i + 1 < len(ranges):
            pending = _PREFETCH.submit(load_chunk, ranges[i + 1])
        if spec.statistics is not None and whole:
            stat_values = tuple(
                spec.statistics(t, base_t, params, mp, TensorContext(**ctx_args))
                for t, mp in zip(tensors, model_params, strict=True)
            )
        ctx = TensorContext(**ctx_args, chunk=rng, stats=stat_values)
        result = spec.merge(tensors, base_t, params, model_params, ctx)
        merged = result if isinstance(result, list) else [result]
        expected = len(plan.models) if spec.outputs == "per_model" else 1
        if len(merged) != expected:
            raise MethodError(f"{spec.label} returned {len(merged)} tensors for {name}, expected {expected}")
        if not recipe.allow_non_finite:
            names = [ck.name for ck in plan.models] + ([base_ck.name] if base_t is not None else [])
            inputs = [*tensors, *([base_t] if base_t is not None else [])]
            for m in merged:
                _require_finite(name, m, planned.dtype, names, inputs, spec.label)
        ref = base_t if base_t is not None else tensors[0]
        out0 = merged[0].reshape(ref.shape)
        if out0.shape != ref.shape:
            raise MethodError(f"{spec.label} changed the shape of {name}")
        acc["diff_sq"] = acc.get("diff_sq", 0.0) + float(torch.dist(out0, ref)) ** 2
        flat_ref = ref.reshape(-1)
        acc["ref_sq"] = acc.get("ref_sq", 0.0) + float(torch.dot(flat_ref, flat_ref))
        for key, value in ctx.metrics.items():
            acc[key] = acc.get(key, 0.0) + value
        numel = ref.numel()
        s, e = rng if rng is not None else (0, planned.numel)
        yield (s, e, [m.to("cpu") for m in merged], numel * n_bytes_per_el)


# --- whole-model methods -----------------------------------------------------------------------
def _whole_model(plan: MergePlan, cancel: CancelToken | None, start: float) -> Generator[Any, None, MergeResult]:
    spec, recipe = plan.spec, plan.recipe
    params = spec.params.model_validate(resolve_params(recipe.params, "", 0.0))
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
    sets: list[OutputSet] = []
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
                        _require_finite(p.name, t, p.dtype, [ck.name for ck in plan.all_checkpoints], inputs, spec.label)
            out = OutputSet(target, planned, shard_bytes=recipe.shard_bytes, metadata=metadata, reserve=_reserve(plan, 0))
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
    )
