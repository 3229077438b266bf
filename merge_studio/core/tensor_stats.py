"""Summary statistics of tensors, for the Graph tab's properties panel and ``inspect``.

Mean, standard deviation, minimum, maximum, L2 norm and the share of exact
zeros, computed in float64 from float32 chunks, so a large tensor is summarised
without a float64 copy of it. :func:`iter_layer_stats` reads the tensors of one
layer from several checkpoints, one tensor at a time (a job: it yields progress
and can be cancelled between tensors).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

from merge_studio.core.lazy_torch import torch
from merge_studio.core.progress import CancelToken, Progress, check_cancel

CHUNK = 1 << 22  # elements summed at a time (16 MiB of float32)


@dataclass(frozen=True)
class TensorStats:
    """What a tensor's values look like, in numbers."""

    numel: int
    mean: float
    std: float
    min: float
    max: float
    norm: float
    zeros: float  # share of elements exactly 0

    def to_json(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("numel", "mean", "std", "min", "max", "norm", "zeros")}


def tensor_stats(tensor: torch.Tensor) -> TensorStats:
    """Statistics of any tensor (integers and booleans are read as numbers)."""
    flat = tensor.detach().reshape(-1)
    n = flat.numel()
    if n == 0:
        nan = float("nan")
        return TensorStats(0, nan, nan, nan, nan, 0.0, 0.0)
    total = square = 0.0
    low, high = math.inf, -math.inf
    zeros = 0
    for start in range(0, n, CHUNK):
        chunk = flat[start:start + CHUNK].to(torch.float32)
        total += float(chunk.sum(dtype=torch.float64))
        square += float(chunk.square().sum(dtype=torch.float64))
        low = min(low, float(chunk.min()))
        high = max(high, float(chunk.max()))
        zeros += int(torch.count_nonzero(chunk == 0))
    mean = total / n
    variance = max(square / n - mean * mean, 0.0) * (n / (n - 1) if n > 1 else 0.0)
    return TensorStats(n, mean, math.sqrt(variance), low, high, math.sqrt(square), zeros / n)


def layer_tensors(names: Sequence[str], module_path: str) -> list[str]:
    """The tensors of a module: its own first (``layer.weight``), then those of its submodules."""
    if not module_path:
        return list(names)
    prefix = module_path + "."
    inside = [n for n in names if n.startswith(prefix) or n == module_path]
    return sorted(inside, key=lambda n: (n.count("."), n))


def iter_layer_stats(
    models: Sequence[tuple[str, str | Path]],
    tensor_names: Sequence[str],
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, dict[str, dict[str, TensorStats]]]:
    """Statistics of ``tensor_names`` in each model ``(name, path)``: model → tensor → stats.

    A tensor a model does not have is left out of that model's entry.
    """
    from merge_studio.core.checkpoints import open_checkpoint

    out: dict[str, dict[str, TensorStats]] = {}
    total = len(models) * len(tensor_names)
    done = 0
    for name, path in models:
        per_model: dict[str, TensorStats] = {}
        with open_checkpoint(path) as checkpoint:
            available = set(checkpoint.infos)
            for tensor_name in tensor_names:
                check_cancel(cancel)
                if tensor_name in available:
                    per_model[tensor_name] = tensor_stats(checkpoint.get_tensor(tensor_name))
                done += 1
                yield Progress("statistics", done, total, current=f"{name}: {tensor_name}", unit="tensors")
        out[name] = per_model
    return out


__all__ = ["TensorStats", "iter_layer_stats", "layer_tensors", "tensor_stats"]
