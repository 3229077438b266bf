"""Count and gather task-vector magnitudes against a bracket in one compiled pass.

Finding TIES's threshold needs, over the whole tensor, how many |θ − base| lie above a
bracket and which lie inside it. In torch and numpy that is a dozen passes per block of
the tensor; here it is one read of the stored inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.blocks import BLOCK, widen


@njit(nogil=True, cache=True)
def count_and_gather(
    values: np.ndarray, base: np.ndarray, shift: int, lo: np.float32, hi: np.float32, out: np.ndarray
) -> tuple[int, int]:
    """How many |values − base| are above ``hi``, and how many inside [lo, hi] were written
    to ``out`` in order (−1 when ``out`` is too small). Inputs are raw bits (see the package).

    ``lo`` ≥ 0; magnitudes compare as unsigned integers of their bits, so "inside" is one
    well-predicted branch (a float ``a >= lo`` is true for a third of the entries at random).
    """
    n = base.shape[0]
    value_bits = np.empty(BLOCK, np.uint32)
    value_f = value_bits.view(np.float32)
    base_bits = np.empty(BLOCK, np.uint32)
    base_f = base_bits.view(np.float32)
    mag_bits = np.empty(BLOCK, np.uint32)
    mag = mag_bits.view(np.float32)
    hits = np.zeros(BLOCK, np.uint8)  # 1 where the magnitude is inside; read 8 at a time to skip empty runs
    hit_words = hits.view(np.uint64)
    bounds = np.empty(2, np.float32)
    bounds[0] = lo
    bounds[1] = hi
    lo_bits = bounds.view(np.uint32)[0]
    width = np.uint32(bounds.view(np.uint32)[1] - lo_bits)
    above = 0
    written = 0
    capacity = out.shape[0]
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        widen(values[start:start + m], shift, value_bits)
        widen(base[start:start + m], shift, base_bits)
        inside = 0
        for j in range(m):  # vectorised: no stores that depend on earlier entries
            a = abs(value_f[j] - base_f[j])
            mag[j] = a
            above += a > hi
            hit = np.uint32(mag_bits[j] - lo_bits) <= width
            hits[j] = hit
            inside += hit
        if inside:
            if written + inside > capacity:
                return above, -1
            for j in range(m, BLOCK):
                hits[j] = 0
            # a few percent are inside: most 8-entry runs have none and cost one test
            q = written
            for w in range(BLOCK // 8):
                if hit_words[w]:
                    for j in range(w * 8, w * 8 + 8):
                        if hits[j]:
                            out[q] = mag[j]
                            q += 1
            written = q
    return above, written


@njit(nogil=True, cache=True)
def sample_magnitudes(values: np.ndarray, base: np.ndarray, shift: int, step: int, out: np.ndarray) -> None:
    """|values − base| (float32) at every ``step``-th entry, into ``out``: the regular sample
    the bracket is taken from (torch's strided copy of a stored tensor is 5× slower)."""
    bits = np.empty(2, np.uint32)
    as_float = bits.view(np.float32)
    for j in range(out.shape[0]):
        bits[0] = np.uint32(values[j * step]) << shift
        bits[1] = np.uint32(base[j * step]) << shift
        out[j] = abs(as_float[0] - as_float[1])
