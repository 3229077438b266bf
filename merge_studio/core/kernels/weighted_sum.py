"""Weighted sums (simple and weighted averages) over one chunk in one compiled pass: torch's bytes.

Mirrors ``linear.weighted_average``: out = θ₀·w₀, then out += θᵢ·wᵢ as torch's
``add_(θ, alpha=w)`` does it (a fused multiply-add from the ``contract`` flag of
``task_sum._add_scaled``), then ÷ the divisor; ``simple_average`` is the same with every
weight 1 (θ·1 and a multiply-add by 1 are exact, so they equal torch's plain adds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.task_sum import _add_scaled
from merge_studio.core.kernels.ties import _dist_sq, _sq_sum

BLOCK = 1024


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
            source = models[i][start:start + m]
            for j in range(m):
                loaded[j] = np.uint32(source[j]) << shift
            w = weights[i]
            if i == 0:
                for j in range(m):
                    first[j] = loaded_f[j]
                    result[j] = loaded_f[j] * w
            else:
                _add_scaled(result[:m], loaded_f[:m], w)
        if divide:
            for j in range(m):
                result[j] = result[j] / divisor
        for j in range(m):
            bad += not (abs(result[j]) <= limit)
        if want_metrics:
            metrics[0] += _dist_sq(result[:m], first[:m])
            metrics[1] += _sq_sum(first[:m])
        dest = out[start:start + m]
        if out_shift:
            for j in range(m):
                b = result_bits[j]
                dest[j] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        else:
            for j in range(m):
                dest[j] = result_bits[j]
    return bad == 0
