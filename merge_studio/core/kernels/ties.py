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
over entries would not vectorise), in few passes: per model one that makes δᵢ and adds it to
the election, per model one that keeps what agrees and sums it, and one for the result.
A step that is skipped in torch when it would change nothing (× wᵢ when wᵢ is 1, × λ when λ
is 1, no trim) is done here as an exact identity (× 1, a trim below every magnitude), so
every variant runs the same loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels import TIES_SCRATCH_ROWS as SCRATCH_ROWS
from merge_studio.core.kernels.blocks import BLOCK, SUMS, change_sums, plain_sum, store, stored_float, widen_into


@njit(nogil=True, error_model="numpy", cache=True)
def delta_into(row, source, base_f, by, edge, w):
    """row = δ trimmed where |δ| ≤ edge, × w."""
    zero = np.float32(0.0)
    for j in range(source.shape[0]):
        d = stored_float(source, j, by) - base_f[j]
        row[j] = (zero if abs(d) <= edge else d) * w


@njit(nogil=True, error_model="numpy", cache=True)
def dropped_delta_into(row, source, base_f, by, keep, density, edge, w):
    """row = δ × the keep mask (1 or 0) ÷ density, trimmed where |δ| ≤ edge, × w."""
    zero = np.float32(0.0)
    for j in range(source.shape[0]):
        d = ((stored_float(source, j, by) - base_f[j]) * np.float32(keep[j])) / density
        row[j] = (zero if abs(d) <= edge else d) * w


@njit(nogil=True, error_model="numpy", fastmath=SUMS, cache=True)
def delta_abs_sum(source, base_f, by):
    """Σ|θ − base| over a block (a metric: re-associated)."""
    s = np.float32(0.0)
    for j in range(source.shape[0]):
        s += abs(stored_float(source, j, by) - base_f[j])
    return np.float64(s)


@njit(nogil=True, error_model="numpy", cache=True)
def add_signs_into(total, row):
    zero = np.float32(0.0)
    for j in range(row.shape[0]):
        v = row[j]
        total[j] = total[j] + np.float32((v > zero) - (v < zero))


@njit(nogil=True, error_model="numpy", cache=True)
def add_into(total, row):
    for j in range(row.shape[0]):
        total[j] = total[j] + row[j]


@njit(nogil=True, error_model="numpy", cache=True)
def elect_and_keep_first(row, total, elected, mixed, divisor, w):
    """The elected sign e (+ where the total is ≥ 0), the first model's agreeing magnitude
    max(wδ·e, 0) (−0.0 and NaN kept, as torch's clamp keeps them) and its weight if it counted
    (min(ceil(k), 1) is 1 for k > 0, else k itself)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for j in range(row.shape[0]):
        e = one if total[j] >= zero else -one
        elected[j] = e
        k = row[j] * e
        c = zero if k < zero else k
        row[j] = c
        mixed[j] = c
        divisor[j] = (one if c > zero else c) * w


@njit(nogil=True, error_model="numpy", cache=True)
def keep_and_add(row, elected, mixed, divisor, w):
    """The next model's agreeing magnitude, added to the sum, and its weight if it counted."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for j in range(row.shape[0]):
        k = row[j] * elected[j]
        c = zero if k < zero else k
        row[j] = c
        mixed[j] = mixed[j] + c
        divisor[j] = divisor[j] + (one if c > zero else c) * w


@njit(nogil=True, error_model="numpy", cache=True)
def result_into(result, mixed, elected, divisor, base_f, normalize, smallest_positive, smallest, lam):
    """result = Σ kept · e ÷ the weights that counted (clamped as ``_no_zero_divisor_`` does)
    × λ + base; × 1 is exact, so λ = 1 needs no other loop."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    if normalize and smallest_positive:
        for j in range(mixed.shape[0]):
            d = divisor[j]
            result[j] = ((mixed[j] * elected[j]) / (smallest if d < smallest else d)) * lam + base_f[j]
    elif normalize:
        for j in range(mixed.shape[0]):
            d = divisor[j]
            result[j] = ((mixed[j] * elected[j]) / (one if d == zero else d)) * lam + base_f[j]
    else:
        for j in range(mixed.shape[0]):
            result[j] = (mixed[j] * elected[j]) * lam + base_f[j]


@njit(nogil=True, error_model="numpy", cache=True)
def ties_chunk(
    models, base, shift, below, trim, keeps, dropped, densities, rescaled, weights, weighted, count_consensus,
    normalize, smallest_positive, smallest, lam, scaled, kept_scales, out, out_shift, limit, want_metrics, metrics,
    scratch,
):
    """Merge one chunk into ``out`` (raw bits); False when a result is not finite or beyond
    ``limit`` (the caller then lets torch redo the chunk and name the culprits).

    DARE-TIES passes ``dropped`` models with their keep masks (``keeps``, 0/1 bytes drawn as
    ``sparsify.random_drop_`` draws them) and densities instead of a trim.
    ``metrics`` (float64[4]) gains, when ``want_metrics``: Σ(out − base)², Σ base², Σ|δᵢ|
    and Σᵢ kept magnitude / ``kept_scales[i]`` (|wᵢ| times the rescale factor): the engine's
    and TIES's per-layer numbers. (``weighted`` and ``scaled`` are implied by the weights
    and λ: × 1 is exact.) ``scratch`` is float32[SCRATCH_ROWS + models, BLOCK].
    """
    n_models = len(models)
    n = base.shape[0]
    by = np.uint32(shift)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    never = np.float32(-1.0)  # a trim edge no magnitude (nor NaN) is at or below
    # float32[SCRATCH_ROWS + n_models, BLOCK], the caller's: the kernel allocates nothing
    base_f, total, elected, mixed, divisor, result = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4], scratch[5]
    bad = 0
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        base_block = base[start:start + m]
        widen_into(base_f, base_block, by)
        total[:m] = zero  # 0 + x is x but for −0.0, whose sign the election (≥ 0) ignores
        # δᵢ: thinned, trimmed, weighted, and added to the election
        for i in range(n_models):
            source = models[i][start:start + m]
            row = scratch[SCRATCH_ROWS + i][:m]
            edge = below[i] if trim[i] else never
            if want_metrics:
                metrics[2] += delta_abs_sum(source, base_f, by)
            if dropped[i]:
                density = densities[i] if rescaled[i] else one
                dropped_delta_into(row, source, base_f, by, keeps[i][start:start + m], density, edge, weights[i])
            else:
                delta_into(row, source, base_f, by, edge, weights[i])
            if count_consensus:
                add_signs_into(total, row)
            else:
                add_into(total, row)
        # the elected sign, each model's agreeing magnitude summed, the weights that counted
        for i in range(n_models):
            row = scratch[SCRATCH_ROWS + i][:m]
            w = weights[i]
            if i == 0:
                elect_and_keep_first(row, total, elected, mixed, divisor, w)
            else:
                keep_and_add(row, elected, mixed, divisor, w)
            if want_metrics and w != zero:
                metrics[3] += plain_sum(row) / kept_scales[i]
        result_into(result[:m], mixed, elected, divisor, base_f, normalize, smallest_positive, smallest, lam)
        bad += store(result[:m], out[start:start + m], out_shift, limit)
        if want_metrics:
            change_sums(result[:m], base_block, by, metrics)
    return bad == 0
