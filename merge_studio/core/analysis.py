"""Per-layer numbers that say what a merge did, computed tensor by tensor.

A layer is a tensor name without its last dotted part (``layer1.0.conv1.weight`` →
``layer1.0.conv1``), the same grouping the engine uses for its statistics, so the
numbers line up with graph nodes and tree rows. Only floating-point tensors count
(BatchNorm's ``num_batches_tracked`` is a counter, not a weight). Tensors are read
in chunks from lazy checkpoints; nothing holds a whole model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Iterable
from typing import Any

import torch

from merge_studio.core.checkpoints import Checkpoint
from merge_studio.core.progress import CancelToken, Progress, check_cancel, drive
from merge_studio.errors import CheckpointError

LAYER_STATS_KEY = "merge_studio.layer_stats"
CHUNK_ELEMENTS = 1 << 22

OVERLAY_TITLES = {
    "relative-change": "relative change ‖merged − A‖ / ‖A‖",
    "cosine": "cosine similarity",
    "kept-fraction": "task-vector mass kept",
}


def layer_of(name: str) -> str:
    """The layer (module path) a tensor belongs to; a name without dots is its own layer."""
    return name.rsplit(".", 1)[0] if "." in name else name


def group_by_layer(names: Iterable[str]) -> dict[str, list[str]]:
    """Tensor names grouped by layer, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(layer_of(name), []).append(name)
    return groups


def _comparable(a: Checkpoint, b: Checkpoint) -> list[str]:
    """Float tensors present in both with the same shape, in ``a``'s order."""
    names = []
    for name in a.keys():
        if name not in b:
            continue
        ia, ib = a.info(name), b.info(name)
        if ia.shape == ib.shape and ia.dtype.is_floating_point and ib.dtype.is_floating_point:
            names.append(name)
    if not names:
        raise CheckpointError(
            f"{a.name} and {b.name} share no floating-point tensor of the same shape",
            hint="compare checkpoints of the same architecture",
        )
    return names


def _pair_sums(
    a: Checkpoint, b: Checkpoint, stage: str, cancel: CancelToken | None
) -> Generator[Progress, None, dict[str, tuple[float, float, float, float]]]:
    """Per layer: (Σa·b, Σa², Σb², Σ(b−a)²), in float64, chunk by chunk."""
    names = _comparable(a, b)
    sums: dict[str, list[float]] = {}
    for done, name in enumerate(names):
        check_cancel(cancel)
        acc = sums.setdefault(layer_of(name), [0.0, 0.0, 0.0, 0.0])
        numel = a.info(name).numel
        for start in range(0, max(numel, 1), CHUNK_ELEMENTS):
            stop = min(numel, start + CHUNK_ELEMENTS)
            x = a.get_flat(name, start, stop).to(torch.float64)
            y = b.get_flat(name, start, stop).to(torch.float64)
            acc[0] += float(torch.dot(x, y))
            acc[1] += float(torch.dot(x, x))
            acc[2] += float(torch.dot(y, y))
            acc[3] += float(torch.sum((y - x) ** 2))
        yield Progress(stage, done + 1, len(names), current=name, unit="tensors")
    return {layer: (s[0], s[1], s[2], s[3]) for layer, s in sums.items()}


def iter_layer_relative_change(
    reference: Checkpoint, merged: Checkpoint, cancel: CancelToken | None = None
) -> Generator[Progress, None, dict[str, float]]:
    """Job form of :func:`layer_relative_change` (yields progress per tensor)."""
    sums = yield from _pair_sums(reference, merged, "relative change", cancel)
    return {layer: math.sqrt(d2) / math.sqrt(a2) for layer, (_, a2, _, d2) in sums.items() if a2 > 0}


def iter_layer_cosine(
    a: Checkpoint, b: Checkpoint, cancel: CancelToken | None = None
) -> Generator[Progress, None, dict[str, float]]:
    """Job form of :func:`layer_cosine` (yields progress per tensor)."""
    sums = yield from _pair_sums(a, b, "cosine similarity", cancel)
    return {
        layer: ab / math.sqrt(a2 * b2) for layer, (ab, a2, b2, _) in sums.items() if a2 > 0 and b2 > 0
    }


def layer_relative_change(reference: Checkpoint, merged: Checkpoint, cancel: CancelToken | None = None) -> dict[str, float]:
    """‖merged − A‖ / ‖A‖ per layer (layers whose reference is all zeros are left out)."""
    return drive(iter_layer_relative_change(reference, merged, cancel))


def layer_cosine(a: Checkpoint, b: Checkpoint, cancel: CancelToken | None = None) -> dict[str, float]:
    """Cosine similarity between two models' weights, per layer (all of a layer's tensors together)."""
    return drive(iter_layer_cosine(a, b, cancel))


def layer_stats(merged: Checkpoint) -> dict[str, dict[str, float]]:
    """The per-layer statistics the engine stored in a merged file (empty when none)."""
    raw = merged.metadata.get(LAYER_STATS_KEY)
    if not raw:
        return {}
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{merged.name}: metadata {LAYER_STATS_KEY} is not valid JSON", hint="re-run the merge"
        ) from exc
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def layer_kept_fraction(merged: Checkpoint) -> dict[str, float]:
    """Fraction of each layer's task-vector mass kept by TIES/DARE, from the file's metadata.

    Empty when the merge recorded none (methods that keep everything do not).
    """
    out: dict[str, float] = {}
    for layer, stats in layer_stats(merged).items():
        total = stats.get("task_mass_total")
        if isinstance(total, (int, float)) and total > 0:
            out[layer] = float(stats.get("task_mass_kept", 0.0)) / float(total)
        elif isinstance(stats.get("kept_fraction"), (int, float)):
            out[layer] = float(stats["kept_fraction"])
    return out
