"""TIES and DARE-TIES over one chunk in one compiled pass: the same bytes as torch.

Mirrors ``sparsify.merge_task_vectors`` with a magnitude trim and a consensus, operation by
operation in float32: δᵢ = θᵢ − base, trimmed where |δᵢ| ≤ the float just below the
threshold (``hardshrink``), times wᵢ unless wᵢ is 1, the sign elected from Σ wᵢδᵢ or from
the count of signs, each model's agreeing magnitude ``max(wᵢδᵢ·e, 0)`` summed, divided by
the weights that counted (clamped, as ``_no_zero_divisor_`` does), times λ unless it is 1,
plus base, rounded to bfloat16 to nearest-even as torch rounds. Every step is the same
IEEE operation on the same operands, so the result is bit-identical; a test holds it to that.

It works on blocks of :data:`BLOCK` entries that stay in the L1 cache, one model at a time
(the number of models is only known at run time, and a loop over models inside the loop
over entries would not vectorise).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.blocks import BLOCK, abs_sum, finish, plain_sum, widen

@njit(nogil=True, cache=True)
def ties_chunk(
    models, base, shift, below, trim, keeps, dropped, densities, rescaled, weights, weighted, count_consensus,
    normalize, smallest_positive, smallest, lam, scaled, kept_scales, out, out_shift, limit, want_metrics, metrics,
):
    """Merge one chunk into ``out`` (raw bits); False when a result is not finite or beyond
    ``limit`` (the caller then lets torch redo the chunk and name the culprits).

    DARE-TIES passes ``dropped`` models with their keep masks (``keeps``, 0/1 bytes drawn as
    ``sparsify.random_drop_`` draws them) and densities instead of a trim.
    ``metrics`` (float64[4]) gains, when ``want_metrics``: Σ(out − base)², Σ base², Σ|δᵢ|
    and Σᵢ kept magnitude / ``kept_scales[i]`` (|wᵢ| times the rescale factor): the engine's
    and TIES's per-layer numbers.
    """
    n_models = len(models)
    n = base.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    loaded = np.empty(BLOCK, np.uint32)
    loaded_f = loaded.view(np.float32)
    base_bits = np.empty(BLOCK, np.uint32)
    base_f = base_bits.view(np.float32)
    deltas = np.empty((n_models, BLOCK), np.float32)
    total = np.empty(BLOCK, np.float32)
    elected = np.empty(BLOCK, np.float32)
    mixed = np.empty(BLOCK, np.float32)
    divisor = np.empty(BLOCK, np.float32)
    result_bits = np.empty(BLOCK, np.uint32)
    result = result_bits.view(np.float32)
    bad = 0
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        widen(base[start:start + m], shift, base_bits)
        # δᵢ, trimmed and weighted
        for i in range(n_models):
            widen(models[i][start:start + m], shift, loaded)
            row = deltas[i]
            for j in range(m):
                row[j] = loaded_f[j] - base_f[j]
            if want_metrics:
                metrics[2] += abs_sum(row[:m])
            if dropped[i]:  # DARE: × the keep mask (1 or 0), then ÷ the density
                keep = keeps[i][start:start + m]
                for j in range(m):
                    row[j] = row[j] * np.float32(keep[j])
                if rescaled[i]:
                    density = densities[i]
                    for j in range(m):
                        row[j] = row[j] / density
            if trim[i]:
                edge = below[i]
                for j in range(m):
                    d = row[j]
                    row[j] = zero if abs(d) <= edge else d
            if weighted[i]:
                w = weights[i]
                for j in range(m):
                    row[j] = row[j] * w
        # the elected sign e: + where the sum (or the count of signs) is ≥ 0
        row = deltas[0]
        if count_consensus:
            for j in range(m):
                v = row[j]
                total[j] = np.float32((v > zero) - (v < zero))
        else:
            for j in range(m):
                total[j] = row[j]
        for i in range(1, n_models):
            row = deltas[i]
            if count_consensus:
                for j in range(m):
                    v = row[j]
                    total[j] = total[j] + np.float32((v > zero) - (v < zero))
            else:
                for j in range(m):
                    total[j] = total[j] + row[j]
        for j in range(m):
            elected[j] = one if total[j] >= zero else -one
        # agreeing magnitudes, summed; the weights that counted, summed
        for i in range(n_models):
            row = deltas[i]
            w = weights[i]
            for j in range(m):
                k = row[j] * elected[j]
                row[j] = zero if k < zero else k  # clamp(min=0) keeps −0.0 and NaN as torch does
            if want_metrics and w != zero:
                metrics[3] += plain_sum(row[:m]) / kept_scales[i]
            if i == 0:
                for j in range(m):
                    mixed[j] = row[j]
            else:
                for j in range(m):
                    mixed[j] = mixed[j] + row[j]
            if normalize:  # min(ceil(k), 1) is 1 for k > 0 and k itself for ±0 and NaN
                if i == 0 and weighted[i]:
                    for j in range(m):
                        c = row[j]
                        divisor[j] = (one if c > zero else c) * w
                elif i == 0:
                    for j in range(m):
                        c = row[j]
                        divisor[j] = one if c > zero else c
                else:
                    for j in range(m):
                        c = row[j]
                        divisor[j] = divisor[j] + (one if c > zero else c) * w
        for j in range(m):
            result[j] = mixed[j] * elected[j]
        if normalize and smallest_positive:
            for j in range(m):
                d = divisor[j]
                result[j] = result[j] / (smallest if d < smallest else d)
        elif normalize:
            for j in range(m):
                d = divisor[j]
                result[j] = result[j] / (one if d == zero else d)
        if scaled:
            for j in range(m):
                result[j] = result[j] * lam
        for j in range(m):
            result[j] = result[j] + base_f[j]
        bad += finish(result_bits[:m], base_f[:m], out[start:start + m], out_shift, limit, want_metrics, metrics)
    return bad == 0
