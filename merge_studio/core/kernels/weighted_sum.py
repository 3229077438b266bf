"""Weighted sums (simple and weighted averages) over one chunk in one compiled pass: torch's bytes.

Mirrors ``linear.weighted_average``: out = θ₀·w₀, then out += θᵢ·wᵢ as torch's
``add_(θ, alpha=w)`` does it (a fused multiply-add from the ``contract`` flag of
``blocks.add_scaled``), then ÷ the divisor; ``simple_average`` is the same with every
weight 1 (θ·1 and a multiply-add by 1 are exact, so they equal torch's plain adds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.blocks import BLOCK, add_scaled_into, change_sums, divide_into, scale_into, store


@njit(nogil=True, error_model="numpy", cache=True)
def weighted_sum_chunk(models, shift, weights, divisor, divide, out, out_shift, limit, want_metrics, metrics, scratch):
    """Merge one chunk into ``out`` (raw bits); False when a result is not finite or beyond
    ``limit``. ``metrics`` gains Σ(out − θ₀)² and Σ θ₀² when ``want_metrics``.

    One pass over a block per model (θ₀·w₀, then each + θᵢ·wᵢ), one to divide, one to check
    and store."""
    n_models = len(models)
    n = models[0].shape[0]
    by = np.uint32(shift)
    result = scratch[0]  # float32[BLOCK]: the caller's, so the kernel allocates nothing
    bad = 0
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        first = models[0][start:start + m]
        scale_into(result, first, by, weights[0])
        for i in range(1, n_models):
            add_scaled_into(result, models[i][start:start + m], by, weights[i])
        if divide:
            divide_into(result[:m], divisor)
        bad += store(result[:m], out[start:start + m], out_shift, limit)
        if want_metrics:
            change_sums(result[:m], first, by, metrics)
    return bad == 0
