"""Task arithmetic over one chunk in one compiled pass: the same bytes as torch.

Mirrors ``sparsify.merge_task_vectors`` without thinning or consensus: mixed = w₀δ₀, then
mixed += wᵢδᵢ as torch's ``add_(δ, alpha=w)`` does it (a fused multiply-add where the CPU
has one, which LLVM forms from the ``contract`` flag of ``blocks.add_scaled``), ÷ Σw
(normalize), × λ, + base, rounded to the output dtype as torch rounds.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.blocks import BLOCK, add_scaled, change_sums, store, stored_float


@njit(nogil=True, error_model="numpy", cache=True)
def delta_scaled_into(result, source, base, by, w):
    """result = (θ − base)·w (× 1 is exact, so a weight of 1 needs no other loop)."""
    for j in range(source.shape[0]):
        result[j] = (stored_float(source, j, by) - stored_float(base, j, by)) * w


@njit(nogil=True, error_model="numpy", cache=True)
def add_scaled_delta_into(result, source, base, by, w):
    """result += (θ − base)·w, fused as torch's ``add_(δ, alpha=w)`` is."""
    for j in range(source.shape[0]):
        result[j] = add_scaled(result[j], stored_float(source, j, by) - stored_float(base, j, by), w)


@njit(nogil=True, error_model="numpy", cache=True)
def finish_into(result, base, by, normalize, divisor, lam):
    """result = (result ÷ Σw if normalize) × λ + base, each step rounded on its own as torch's
    separate calls round it (× 1 is exact)."""
    if normalize:
        for j in range(base.shape[0]):
            result[j] = (result[j] / divisor) * lam + stored_float(base, j, by)
    else:
        for j in range(base.shape[0]):
            result[j] = result[j] * lam + stored_float(base, j, by)


@njit(nogil=True, error_model="numpy", cache=True)
def task_sum_chunk(models, base, shift, weights, divisor, normalize, lam, scaled, out, out_shift, limit,
                   want_metrics, metrics, scratch):
    """Merge one chunk into ``out`` (raw bits); False when a result is not finite or beyond
    ``limit``. ``metrics`` gains Σ(out − base)² and Σ base² when ``want_metrics``.

    One pass over a block per model, one for ÷ Σw, × λ and + base, one to check and store.
    (``scaled`` is implied by λ: × 1 is exact.)"""
    n_models = len(models)
    n = base.shape[0]
    by = np.uint32(shift)
    result = scratch[0]  # float32[BLOCK]: the caller's, so the kernel allocates nothing
    bad = 0
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        base_block = base[start:start + m]
        delta_scaled_into(result, models[0][start:start + m], base_block, by, weights[0])
        for i in range(1, n_models):
            add_scaled_delta_into(result, models[i][start:start + m], base_block, by, weights[i])
        finish_into(result, base_block, by, normalize, divisor, lam)
        bad += store(result[:m], out[start:start + m], out_shift, limit)
        if want_metrics:
            change_sums(result[:m], base_block, by, metrics)
    return bad == 0
