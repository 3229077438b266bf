"""A streaming merge cut into tasks a pool of workers can run: one per chunk, or one per run of small tensors.

Each task reads its inputs (positional reads, thread-safe), converts them to the compute
dtype, applies the method, checks the result is finite, computes the per-layer change
statistics and casts to the output dtype, all on a worker thread; the engine only
writes the outcomes in order. A method with whole-tensor statistics (TIES's magnitude
threshold) gets them from side tasks, one per model, that run before the tensor's chunks;
when the inputs are small enough they are kept and the chunks are cut from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from merge_studio.core.checkpoints import Checkpoint
from merge_studio.core.finite import all_finite, fits_dtype, holders_of_non_finite, non_finite_error
from merge_studio.core.methods.spec import TensorContext
from merge_studio.core.progress import CancelToken, check_cancel
from merge_studio.errors import MethodError

if TYPE_CHECKING:
    from merge_studio.core.merge_plan import MergePlan
    from merge_studio.core.pool import OrderedPool
    from merge_studio.core.writer import PlannedTensor

# 1M elements (4 MB per float32 chunk): small enough that a method's temporaries stay in
# cache between its passes, large enough that per-task overhead is negligible.
CHUNK_ELEMENTS = 1 << 20
# A method with whole-tensor statistics reads each large tensor twice unless its inputs,
# converted, fit in this much memory; then the chunks are cut from them.
HELD_BYTES = 192 << 20
# The per-layer change statistics (‖merged − reference‖², ‖reference‖²) of a large tensor come
# from one chunk in this many: they cost two passes over a chunk (a fifth of an average's
# compute) and the overlay needs the ratio, which a regular sample of whole chunks estimates well.
METRIC_EVERY = 4

# Tensors up to this many elements are merged in batches, one task for a run of them, up to
# BATCH_ELEMENTS in all (or BATCH_TENSORS tensors): handing each of a file's thousands of
# norms and biases to a worker on its own cost ~0.3 ms of locking and waking per tensor,
# far more than merging it.
SMALL_ELEMENTS = 1 << 16
BATCH_ELEMENTS = 1 << 20
BATCH_TENSORS = 512

Task = Callable[[], "ChunkOutcome"]
BatchTask = Callable[[], "list[ChunkOutcome]"]


@dataclass
class ChunkOutcome:
    """One finished piece of the output: flat tensors in the output dtype, one per output model."""

    name: str
    start: int
    stop: int
    outputs: list[torch.Tensor]
    bytes_read: int
    metrics: dict[str, float] = field(default_factory=dict)  # summed per layer by the engine


def chunk_ranges(numel: int, size: int | None = None) -> list[tuple[int, int]]:
    size = size or CHUNK_ELEMENTS
    if numel == 0:
        return [(0, 0)]
    return [(s, min(s + size, numel)) for s in range(0, numel, size)]


def require_finite(
    name: str, out: torch.Tensor, out_dtype: torch.dtype, input_names: list[str],
    inputs: list[torch.Tensor | None], made_by: str,
) -> None:
    """Stop before writing NaN/inf (or values the output dtype cannot hold), naming who holds them."""
    if _within_narrower(out, out_dtype):
        return
    if not all_finite(out):
        raise non_finite_error(name, holders_of_non_finite(input_names, inputs), produced_by=made_by)
    if not fits_dtype(out, out_dtype):
        limit = torch.finfo(out_dtype).max
        raise non_finite_error(
            name, [], produced_by=f"values beyond {str(out_dtype).removeprefix('torch.')}'s range of ±{limit:g}; "
            "they would be written as infinity",
        )


def merge_tasks(plan: MergePlan, pool: OrderedPool, cancel: CancelToken | None) -> Iterator[BatchTask]:
    """The tasks that produce the whole output in order, each giving a list of outcomes.

    A large tensor gives one task per chunk (a list of one); a run of consecutive small
    tensors gives one task that merges them one after the other on one worker. Each
    tensor is computed by the same code on a worker thread either way, so the bytes do
    not depend on the batching.
    """
    small_limit = min(SMALL_ELEMENTS, CHUNK_ELEMENTS)
    batch_limit = max(BATCH_ELEMENTS, CHUNK_ELEMENTS)
    run: list[PlannedTensor] = []
    elements = 0
    for planned in plan.planned:
        if planned.numel <= small_limit:  # one task, and no side tasks for statistics
            run.append(planned)
            elements += planned.numel
            if elements < batch_limit and len(run) < BATCH_TENSORS:
                continue
        if run:
            yield _batch_task(plan, run, pool, cancel)
            run, elements = [], 0
        if planned.numel > small_limit:
            for task in tensor_tasks(plan, planned, pool, cancel):
                yield lambda task=task: [task()]
    if run:
        yield _batch_task(plan, run, pool, cancel)


def _batch_task(plan: MergePlan, run: list[PlannedTensor], pool: OrderedPool, cancel: CancelToken | None) -> BatchTask:
    # Parameters are resolved here, on the engine's thread, as for any other tensor.
    tasks = [task for planned in run for task in tensor_tasks(plan, planned, pool, cancel)]
    return lambda: [task() for task in tasks]


def _within_narrower(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """True when ``t`` is finite and fits a narrower float ``dtype``, in one pass (``aminmax``).

    The separate checks (a sum for NaN/inf, then ``abs().max()`` for the range) take
    three passes and a temporary; NaN fails both comparisons here, so any doubt, and
    every other case, goes to them to be decided and named.
    """
    if not (t.is_floating_point() and dtype.is_floating_point) or t.numel() == 0:
        return False
    limit = torch.finfo(dtype).max
    if limit >= torch.finfo(t.dtype).max:
        return False  # nothing to range-check: the single sum is cheaper
    lo, hi = torch.aminmax(t)
    return bool(lo >= -limit) and bool(hi <= limit)


def tensor_tasks(plan: MergePlan, planned: PlannedTensor, pool: OrderedPool, cancel: CancelToken | None) -> Iterator[Task]:
    """The tasks that produce ``planned`` in order (side tasks for its statistics go to ``pool``)."""
    action = plan.actions[planned.name]
    if action.kind == "copy":
        yield from _copy_tasks(plan, planned, action.source, cancel)
    else:
        yield from _TensorMerge(plan, planned, pool, cancel).tasks()


def _copy_tasks(plan: MergePlan, planned: PlannedTensor, source: Checkpoint, cancel: CancelToken | None) -> Iterator[Task]:
    name, check = planned.name, not plan.recipe.allow_non_finite

    def copy(s: int, e: int) -> ChunkOutcome:
        check_cancel(cancel)
        chunk = source.get_flat(name, s, e)
        if check:
            require_finite(name, chunk, planned.dtype, [source.name], [chunk], "copied")
        nbytes = chunk.numel() * chunk.element_size()
        return ChunkOutcome(name, s, e, [chunk.to(planned.dtype)], nbytes)

    for s, e in chunk_ranges(planned.numel):
        yield lambda s=s, e=e: copy(s, e)


class _TensorMerge:
    """Everything the tasks of one merged tensor share: parameters, inputs, statistics."""

    def __init__(self, plan: MergePlan, planned: PlannedTensor, pool: OrderedPool, cancel: CancelToken | None) -> None:
        self.plan, self.planned, self.pool, self.cancel = plan, planned, pool, cancel
        spec, name = plan.spec, planned.name
        self.spec, self.name = spec, name
        depth = plan.depths[name]
        self.params = plan.params_for(name, depth)
        self.model_params = plan.model_params_for(name, depth)
        self.ctx_args = dict(name=name, shape=planned.shape, depth=depth, model_names=plan.model_names,
                             seed=plan.recipe.seed, device=plan.device)
        given = plan.inputs_for(name)
        self.models, self.base_ck = given.models, given.base
        self.whole = not spec.elementwise or planned.numel <= CHUNK_ELEMENTS
        self.n_out = len(plan.models) if spec.outputs == "per_model" else 1
        inputs = [*self.models, *([self.base_ck] if self.base_ck is not None else [])]
        itemsizes = [ck.info(name).nbytes // max(1, ck.info(name).numel) for ck in inputs]
        self.stored_itemsize, self.bytes_per_element = max(itemsizes), sum(itemsizes)
        self.input_names = [ck.name for ck in inputs]
        self.stats: list[Future[tuple[Any, torch.Tensor | None]]] = []
        self.base_full: Future[torch.Tensor | None] | None = None
        # Statistics that convert what they need themselves get the tensors as stored: no
        # tensor-sized float32 copies (each cost more than the statistic) and half the memory.
        self.stats_on_stored = (
            spec.statistics_on_stored and plan.device.type == "cpu" and plan.compute_dtype == torch.float32
        )
        # a compiled pass computes in float32 on the CPU, from the inputs as stored
        self.fusable = spec.fused is not None and plan.device.type == "cpu" and plan.compute_dtype == torch.float32

    def read(self, ck: Checkpoint, rng: tuple[int, int] | None) -> torch.Tensor:
        """The tensor (or a flat range of it) as stored."""
        return ck.get_tensor(self.name) if rng is None else ck.get_flat(self.name, *rng)

    def load(self, ck: Checkpoint, rng: tuple[int, int] | None) -> torch.Tensor:
        return self.compute(self.read(ck, rng))

    def compute(self, t: torch.Tensor) -> torch.Tensor:
        return to_compute(t, self.plan.device, self.plan.compute_dtype)

    def tasks(self) -> Iterator[Task]:
        if self.spec.statistics is not None and not self.whole:
            self._start_statistics()
        ranges: list[tuple[int, int] | None] = [None] if self.whole else list(chunk_ranges(self.planned.numel))
        for rng in ranges:
            yield lambda rng=rng: self.merge(rng)

    # --- whole-tensor statistics, one side task per model ------------------------------
    def _start_statistics(self) -> None:
        plan, numel = self.plan, self.planned.numel
        n_inputs = len(self.models) + (self.base_ck is not None)
        # what the statistics read is kept for the chunks when it is small enough: as stored
        # (converted chunk by chunk) or already converted
        itemsize = self.stored_itemsize if self.stats_on_stored else plan.compute_dtype.itemsize
        keep = n_inputs * numel * itemsize <= HELD_BYTES
        base_ck, whole = self.base_ck, (self.read if self.stats_on_stored else self.load)
        self.base_full = self.pool.submit(lambda: whole(base_ck, None) if base_ck is not None else None)
        for ck, mp in zip(self.models, self.model_params, strict=True):
            self.stats.append(self.pool.submit(lambda ck=ck, mp=mp: self._statistic(ck, mp, keep)))

    def _statistic(self, ck: Checkpoint, mp: Any, keep: bool) -> tuple[Any, torch.Tensor | None]:
        check_cancel(self.cancel)
        assert self.base_full is not None
        full = (self.read if self.stats_on_stored else self.load)(ck, None)
        value = self.spec.statistics(full, self.base_full.result(), self.params, mp, TensorContext(**self.ctx_args))
        return value, (full.reshape(-1) if keep else None)

    # --- one chunk ------------------------------------------------------------------------
    def _inputs(self, rng: tuple[int, int] | None) -> tuple[list[torch.Tensor], torch.Tensor | None, tuple[Any, ...]]:
        """The inputs of ``rng`` (read as stored, or cut from held tensors) and the statistics."""
        if not self.stats:
            base_t = self.read(self.base_ck, rng) if self.base_ck is not None else None
            return [self.read(ck, rng) for ck in self.models], base_t, ()
        results = [f.result() for f in self.stats]
        values = tuple(v for v, _ in results)
        assert rng is not None
        s, e = rng
        if all(held is not None for _, held in results):
            assert self.base_full is not None
            base_full = self.base_full.result()
            base_t = base_full.reshape(-1)[s:e] if base_full is not None else None
            return [held[s:e] for _, held in results], base_t, values  # type: ignore[index]
        self.base_full = None  # every statistic is known: the whole base is not needed any more
        base_t = self.read(self.base_ck, rng) if self.base_ck is not None else None
        return [self.read(ck, rng) for ck in self.models], base_t, values

    def merge(self, rng: tuple[int, int] | None) -> ChunkOutcome:
        """Merge one chunk (or the whole tensor) and cast it to the output dtype."""
        check_cancel(self.cancel)
        stored, base_stored, stat_values = self._inputs(rng)
        if self.fusable and rng is not None:
            fused = self._fused(rng, stored, base_stored, stat_values)
            if fused is not None:
                return fused
        elif self.fusable and self.planned.numel > 0 and (self.spec.statistics is None or self.stats_on_stored):
            # a whole tensor (up to a chunk) goes through the compiled pass too, as one chunk
            flat = [t.reshape(-1) for t in stored]
            flat_base = base_stored.reshape(-1) if base_stored is not None else None
            if self.spec.statistics is not None:  # from the inputs as stored: the same numbers
                stat_values = self._whole_statistics(stored, base_stored)
            fused = self._fused((0, self.planned.numel), flat, flat_base, stat_values)
            if fused is not None:
                return fused
        tensors = [self.compute(t) for t in stored]
        base_t = self.compute(base_stored) if base_stored is not None else None
        s, e = rng if rng is not None else (0, self.planned.numel)
        sampled = rng is None or (s // CHUNK_ELEMENTS) % METRIC_EVERY == 0
        merged, metrics = self._merge_piece(rng, tensors, base_t, stat_values, sampled)
        outputs = [m.reshape(-1).to(device="cpu", dtype=self.planned.dtype) for m in merged]
        return ChunkOutcome(self.name, s, e, outputs, (e - s) * self.bytes_per_element, metrics)

    def _fused(
        self, rng: tuple[int, int], stored: list[torch.Tensor], base_stored: torch.Tensor | None,
        stat_values: tuple[Any, ...],
    ) -> ChunkOutcome | None:
        """The chunk by the method's compiled pass, or ``None`` when it declines."""
        s, e = rng
        sampled = (s // CHUNK_ELEMENTS) % METRIC_EVERY == 0
        ctx = TensorContext(**self.ctx_args, chunk=rng, stats=stat_values, wants_metrics=sampled)
        assert self.spec.fused is not None
        merged = self.spec.fused(stored, base_stored, self.params, self.model_params, ctx, self.planned.dtype)
        if merged is None:
            return None
        metrics = dict(ctx.metrics) if sampled else {}
        return ChunkOutcome(self.name, s, e, [m.reshape(-1) for m in merged], (e - s) * self.bytes_per_element, metrics)

    def _whole_statistics(self, tensors: list[torch.Tensor], base: torch.Tensor | None) -> tuple[Any, ...]:
        """Each model's statistic of a tensor merged whole (computed with the chunk, not in side tasks)."""
        return tuple(
            self.spec.statistics(t, base, self.params, mp, TensorContext(**self.ctx_args))  # type: ignore[misc]
            for t, mp in zip(tensors, self.model_params, strict=True)
        )

    def _merge_piece(
        self, rng: tuple[int, int] | None, tensors: list[torch.Tensor], base_t: torch.Tensor | None,
        stat_values: tuple[Any, ...], sampled: bool,
    ) -> tuple[list[torch.Tensor], dict[str, float]]:
        """Apply the method to the converted inputs, check the result and measure the change."""
        spec, name, planned = self.spec, self.name, self.planned
        if spec.statistics is not None and self.whole and not stat_values:
            stat_values = self._whole_statistics(tensors, base_t)
        ctx = TensorContext(**self.ctx_args, chunk=rng, stats=stat_values, wants_metrics=sampled)
        result = spec.merge(tensors, base_t, self.params, self.model_params, ctx)
        merged = result if isinstance(result, list) else [result]
        if len(merged) != self.n_out:
            raise MethodError(f"{spec.label} returned {len(merged)} tensors for {name}, expected {self.n_out}")
        inputs = [*tensors, *([base_t] if base_t is not None else [])]
        if not self.plan.recipe.allow_non_finite:
            for m in merged:
                require_finite(name, m, planned.dtype, self.input_names, inputs, spec.label)
        ref = base_t if base_t is not None else tensors[0]
        out0 = merged[0].reshape(ref.shape)
        if out0.shape != ref.shape:
            raise MethodError(f"{spec.label} changed the shape of {name}")
        metrics: dict[str, float] = {}
        if sampled:
            flat_ref = ref.reshape(-1)
            metrics = {"diff_sq": float(torch.dist(out0, ref)) ** 2, "ref_sq": float(torch.dot(flat_ref, flat_ref))}
        for key, value in ctx.metrics.items():
            metrics[key] = metrics.get(key, 0.0) + value
        return merged, metrics


def to_compute(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Move a freshly read tensor to the compute device and dtype.

    On a GPU the bytes go through pinned memory with a non-blocking copy, so the next
    task's transfer overlaps this one's kernels (each worker thread has its own stream).
    """
    if device.type == "cuda":
        stream = _worker_stream(device)
        with torch.cuda.stream(stream):
            return t.pin_memory().to(device, non_blocking=True).to(dtype)
    return t.to(device=device, dtype=dtype)


_streams: dict[tuple[int, int], Any] = {}


def _worker_stream(device: torch.device) -> Any:
    import threading

    key = (threading.get_ident(), device.index or 0)
    if key not in _streams:
        _streams[key] = torch.cuda.Stream(device=device)
    return _streams[key]
