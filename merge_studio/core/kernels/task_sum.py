"""Task arithmetic over one chunk in one compiled pass: the same bytes as torch.

Mirrors ``sparsify.merge_task_vectors`` without thinning or consensus: mixed = w₀δ₀, then
mixed += wᵢδᵢ as torch's ``add_(δ, alpha=w)`` does it (a fused multiply-add where the CPU
has one, which LLVM forms from the ``contract`` flag of ``blocks.add_scaled``), ÷ Σw
(normalize), × λ, + base, rounded to the output dtype as torch rounds.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.blocks import BLOCK, add_scaled, finish, widen


@njit(nogil=True, cache=True)
def task_sum_chunk(models, base, shift, weights, divisor, normalize, lam, scaled, out, out_shift, limit,
                   want_metrics, metrics):
    """Merge one chunk into ``out`` (raw bits); False when a result is not finite or beyond
    ``limit``. ``metrics`` gains Σ(out − base)² and Σ base² when ``want_metrics``."""
    n_models = len(models)
    n = base.shape[0]
    one = np.float32(1.0)
    loaded = np.empty(BLOCK, np.uint32)
    loaded_f = loaded.view(np.float32)
    base_bits = np.empty(BLOCK, np.uint32)
    base_f = base_bits.view(np.float32)
    delta = np.empty(BLOCK, np.float32)
    result_bits = np.empty(BLOCK, np.uint32)
    result = result_bits.view(np.float32)
    bad = 0
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        widen(base[start:start + m], shift, base_bits)
        for i in range(n_models):
            widen(models[i][start:start + m], shift, loaded)
            w = weights[i]
            if i == 0:
                if w == one:
                    for j in range(m):
                        result[j] = loaded_f[j] - base_f[j]
                else:
                    for j in range(m):
                        result[j] = (loaded_f[j] - base_f[j]) * w
            else:
                for j in range(m):
                    delta[j] = loaded_f[j] - base_f[j]
                add_scaled(result[:m], delta[:m], w)
        if normalize:
            for j in range(m):
                result[j] = result[j] / divisor
        if scaled:
            for j in range(m):
                result[j] = result[j] * lam
        for j in range(m):
            result[j] = result[j] + base_f[j]
        bad += finish(result_bits[:m], base_f[:m], out[start:start + m], out_shift, limit, want_metrics, metrics)
    return bad == 0
