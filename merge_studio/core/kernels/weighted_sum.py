"""Weighted sums (simple and weighted averages) over one chunk in one compiled pass: torch's bytes.

Mirrors ``linear.weighted_average``: out = θ₀·w₀, then out += θᵢ·wᵢ as torch's
``add_(θ, alpha=w)`` does it (a fused multiply-add from the ``contract`` flag of
``blocks.add_scaled``), then ÷ the divisor; ``simple_average`` is the same with every
weight 1 (θ·1 and a multiply-add by 1 are exact, so they equal torch's plain adds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.blocks import BLOCK, add_scaled, finish, widen


@njit(nogil=True, cache=True)
def weighted_sum_chunk(models, shift, weights, divisor, divide, out, out_shift, limit, want_metrics, metrics):
    """Merge one chunk into ``out`` (raw bits); False when a result is not finite or beyond
    ``limit``. ``metrics`` gains Σ(out − θ₀)² and Σ θ₀² when ``want_metrics``."""
    n_models = len(models)
    n = models[0].shape[0]
    loaded = np.empty(BLOCK, np.uint32)
    loaded_f = loaded.view(np.float32)
    first = np.empty(BLOCK, np.float32)
    result_bits = np.empty(BLOCK, np.uint32)
    result = result_bits.view(np.float32)
    bad = 0
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        for i in range(n_models):
            widen(models[i][start:start + m], shift, loaded)
            w = weights[i]
            if i == 0:
                for j in range(m):
                    first[j] = loaded_f[j]
                    result[j] = loaded_f[j] * w
            else:
                add_scaled(result[:m], loaded_f[:m], w)
        if divide:
            for j in range(m):
                result[j] = result[j] / divisor
        bad += finish(result_bits[:m], first[:m], out[start:start + m], out_shift, limit, want_metrics, metrics)
    return bad == 0
