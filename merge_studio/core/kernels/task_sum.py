"""Task arithmetic over one chunk in one compiled pass: the same bytes as torch.

Mirrors ``sparsify.merge_task_vectors`` without thinning or consensus: mixed = w₀δ₀, then
mixed += wᵢδᵢ as torch's ``add_(δ, alpha=w)`` does it (a fused multiply-add where the CPU
has one, which LLVM forms here from the ``contract`` flag of :func:`_add_scaled`), ÷ Σw
(normalize), × λ, + base, rounded to the output dtype as torch rounds.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.ties import _dist_sq, _sq_sum

BLOCK = 1024


@njit(nogil=True, fastmath={"contract"}, cache=True)
def _add_scaled(acc: np.ndarray, x: np.ndarray, w: np.float32) -> None:
    """acc += w·x with one rounding (as ``Tensor.add_(x, alpha=w)``'s vectorised fmadd)."""
    for j in range(acc.shape[0]):
        acc[j] = acc[j] + x[j] * w


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
        source = base[start:start + m]
        for j in range(m):
            base_bits[j] = np.uint32(source[j]) << shift
        for i in range(n_models):
            source = models[i][start:start + m]
            for j in range(m):
                loaded[j] = np.uint32(source[j]) << shift
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
                _add_scaled(result[:m], delta[:m], w)
        if normalize:
            for j in range(m):
                result[j] = result[j] / divisor
        if scaled:
            for j in range(m):
                result[j] = result[j] * lam
        for j in range(m):
            result[j] = result[j] + base_f[j]
        for j in range(m):
            bad += not (abs(result[j]) <= limit)
        if want_metrics:
            metrics[0] += _dist_sq(result[:m], base_f[:m])
            metrics[1] += _sq_sum(base_f[:m])
        dest = out[start:start + m]
        if out_shift:
            for j in range(m):
                b = result_bits[j]
                dest[j] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        else:
            for j in range(m):
                dest[j] = result_bits[j]
    return bad == 0
