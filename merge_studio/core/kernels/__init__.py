"""Compiled kernels for the merges that torch does as many small passes (numba, optional).

TIES on one chunk is some thirty torch calls: each is a pass over the chunk, and each
releases and retakes the GIL, so two workers spend a third of their time waiting for it.
A kernel compiled with numba does the same arithmetic, in the same order and in float32,
in one call that holds no GIL, over blocks that stay in the L1 cache, and gives the same
bytes. Without numba (it is the ``fast`` extra) or with ``MERGE_STUDIO_KERNELS=0`` every
caller falls back to its torch code; compiled kernels are cached on disk after first use.

Tensors are handed over as their raw bits: bfloat16 as ``uint16`` (widened to float32 by a
shift, exactly as torch does) and float32 as ``uint32``; any other dtype is declined.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

# How many bits a stored dtype's pattern is shifted left to become a float32 pattern.
_SHIFTS = {"torch.bfloat16": 16, "torch.float32": 0}


def available() -> bool:
    """Whether compiled kernels can be used (numba installed and not switched off)."""
    if os.environ.get("MERGE_STUDIO_KERNELS", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    return importlib.util.find_spec("numba") is not None


def shift_of(dtype: "torch.dtype") -> int | None:
    """The widening shift for ``dtype``, or ``None`` when the kernels do not take it."""
    return _SHIFTS.get(str(dtype))


def raw_bits(t: "torch.Tensor") -> "np.ndarray":
    """A flat CPU tensor's storage as unsigned integers of its width (no copy)."""
    import numpy as np
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.view(torch.int32).numpy().view(np.uint32)


def kernel_inputs(tensors: "list[torch.Tensor]") -> "tuple[list[np.ndarray], int] | None":
    """The tensors as raw bits and their common shift, or ``None`` when they cannot be taken
    (different or unsupported dtypes, not on the CPU, not flat and contiguous)."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        return None
    shift = shift_of(next(iter(dtypes)))
    if shift is None or any(t.device.type != "cpu" or t.dim() != 1 or not t.is_contiguous() for t in tensors):
        return None
    return [raw_bits(t) for t in tensors], shift


def ties_chunk(
    stored: "list[torch.Tensor]", base: "torch.Tensor", thresholds: "list[float]", weights: "list[float]", *,
    lambda_: float, normalize: bool, count_consensus: bool, out_dtype: "torch.dtype", want_metrics: bool,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    """TIES of one flat chunk as stored (see :mod:`.ties`): the merged chunk in ``out_dtype``
    and, with ``want_metrics``, its per-layer numbers; ``None`` when the kernel cannot take
    these tensors or a result is not finite (the torch path then decides what to do)."""
    import numpy as np
    import torch

    from merge_studio.core.methods.sparsify import _just_below

    taken = kernel_inputs([*stored, base])
    out_shift = shift_of(out_dtype)
    if taken is None or out_shift is None:
        return None
    from merge_studio.core.kernels.ties import ties_chunk as kernel

    bits, shift = taken
    out = torch.empty(base.numel(), dtype=out_dtype)
    metrics = np.zeros(4)
    smallest = min(weights)
    finite = kernel(
        tuple(bits[:-1]), bits[-1], shift,
        np.array([_just_below(t, torch.float32) if t > 0 else 0.0 for t in thresholds], np.float32),
        np.array([t > 0 for t in thresholds]), np.array(weights, np.float32), np.array([w != 1.0 for w in weights]),
        count_consensus, normalize, smallest > 0, np.float32(smallest), np.float32(lambda_), lambda_ != 1.0,
        raw_bits(out), out_shift, np.float32(torch.finfo(out_dtype).max), want_metrics, metrics,
    )
    if not finite:
        return None
    if not want_metrics:
        return out, {}
    numbers = dict(zip(("diff_sq", "ref_sq", "task_mass_total", "task_mass_kept"), metrics.tolist()))
    if not any(weights):
        del numbers["task_mass_kept"]  # as in torch: only models with a weight add to it
    return out, numbers


def count_and_gather(
    values: "torch.Tensor", base: "torch.Tensor", lo: float, hi: float, capacity: int
) -> "tuple[int, np.ndarray] | None":
    """How many |values − base| (float32) are above ``hi`` and those inside [lo, hi], in
    order, for flat tensors as stored; ``None`` when the kernel cannot take them or more
    than ``capacity`` are inside."""
    import numpy as np

    taken = kernel_inputs([values, base])
    if taken is None:
        return None
    from merge_studio.core.kernels.magnitude import count_and_gather as kernel

    (value_bits, base_bits), shift = taken
    out = np.empty(capacity, np.float32)
    above, written = kernel(value_bits, base_bits, shift, np.float32(max(lo, 0.0)), np.float32(hi), out)
    return None if written < 0 else (int(above), out[:written])


def task_sum_chunk(
    stored: "list[torch.Tensor]", base: "torch.Tensor", weights: "list[float]", *,
    lambda_: float, normalize: bool, out_dtype: "torch.dtype", want_metrics: bool,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    """Task arithmetic of one flat chunk as stored (see :mod:`.task_sum`), like :func:`ties_chunk`."""
    import numpy as np
    import torch

    taken = kernel_inputs([*stored, base])
    out_shift = shift_of(out_dtype)
    if taken is None or out_shift is None:
        return None
    from merge_studio.core.kernels.task_sum import task_sum_chunk as kernel

    bits, shift = taken
    out = torch.empty(base.numel(), dtype=out_dtype)
    metrics = np.zeros(2)
    divisor = float(sum(weights))
    finite = kernel(
        tuple(bits[:-1]), bits[-1], shift, np.array(weights, np.float32), np.float32(divisor),
        normalize and abs(divisor) >= 1e-8, np.float32(lambda_), lambda_ != 1.0,
        raw_bits(out), out_shift, np.float32(torch.finfo(out_dtype).max), want_metrics, metrics,
    )
    if not finite:
        return None
    return out, (dict(zip(("diff_sq", "ref_sq"), metrics.tolist())) if want_metrics else {})


def sample_magnitudes(values: "torch.Tensor", base: "torch.Tensor", step: int) -> "np.ndarray | None":
    """|values − base| in float32 at every ``step``-th entry of flat tensors as stored, or
    ``None`` when the kernel cannot take them (the same numbers as torch's strided copy)."""
    import numpy as np

    taken = kernel_inputs([values, base])
    if taken is None:
        return None
    from merge_studio.core.kernels.magnitude import sample_magnitudes as kernel

    (value_bits, base_bits), shift = taken
    out = np.empty(len(range(0, values.numel(), step)), np.float32)
    kernel(value_bits, base_bits, shift, step, out)
    return out
