"""Pieces every merge kernel uses on its blocks: widen the stored bits, check, measure, store.

Each is a small compiled function that LLVM inlines into the kernel calling it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Entries per block: a few float32 blocks of this size stay in a core's L1 cache.
BLOCK = 1024
# Metric sums may be re-associated (they are estimates shown per layer, not output bytes).
_SUMS = {"reassoc", "nsz", "contract"}


@njit(nogil=True, cache=True)
def widen(source: np.ndarray, shift: int, dest: np.ndarray) -> None:
    """Stored bits to float32 bits: bfloat16 shifted up 16 (exactly torch's conversion), float32 as is."""
    for j in range(source.shape[0]):
        dest[j] = np.uint32(source[j]) << shift


@njit(nogil=True, fastmath={"contract"}, cache=True)
def add_scaled(acc: np.ndarray, x: np.ndarray, w: np.float32) -> None:
    """acc += w·x with one rounding where the CPU has a fused multiply-add, as torch's
    vectorised ``Tensor.add_(x, alpha=w)`` computes it (LLVM contracts only this loop)."""
    for j in range(acc.shape[0]):
        acc[j] = acc[j] + x[j] * w


@njit(nogil=True, fastmath=_SUMS, cache=True)
def abs_sum(x: np.ndarray) -> float:
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += abs(x[j])
    return np.float64(s)


@njit(nogil=True, fastmath=_SUMS, cache=True)
def plain_sum(x: np.ndarray) -> float:
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += x[j]
    return np.float64(s)


@njit(nogil=True, fastmath=_SUMS, cache=True)
def dist_sq(x: np.ndarray, y: np.ndarray) -> float:
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        d = x[j] - y[j]
        s += d * d
    return np.float64(s)


@njit(nogil=True, fastmath=_SUMS, cache=True)
def sq_sum(x: np.ndarray) -> float:
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += x[j] * x[j]
    return np.float64(s)


@njit(nogil=True, cache=True)
def finish(result_bits: np.ndarray, reference: np.ndarray, dest: np.ndarray, out_shift: int, limit: np.float32,
           want_metrics: bool, metrics: np.ndarray) -> int:
    """Store a block's float32 results (bits) in the output dtype and return how many are not
    finite or beyond ``limit``; with ``want_metrics``, add Σ(result − reference)² and
    Σ reference² to ``metrics[0]`` and ``metrics[1]``."""
    result = result_bits.view(np.float32)
    bad = 0
    for j in range(result.shape[0]):
        bad += not (abs(result[j]) <= limit)
    if want_metrics:
        metrics[0] += dist_sq(result, reference)
        metrics[1] += sq_sum(reference)
    if out_shift:  # float32 → bfloat16, round to nearest even (finite values only: see `bad`)
        for j in range(result.shape[0]):
            b = result_bits[j]
            dest[j] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    else:
        for j in range(result.shape[0]):
            dest[j] = result_bits[j]
    return bad
