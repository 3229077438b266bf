"""Count and gather task-vector magnitudes against a bracket in one compiled pass.

Finding TIES's threshold needs, over the whole tensor, how many |θ − base| lie above a
bracket and which lie inside it. In torch and numpy that is a dozen passes per block of
the tensor; here it is one read of the stored inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from merge_studio.core.kernels.blocks import BLOCK, as_bits, stored_float


@njit(nogil=True, error_model="numpy", cache=True)
def count_and_gather(
    values: np.ndarray, base: np.ndarray, shift: int, lo: np.float32, hi: np.float32, out: np.ndarray,
    counts: np.ndarray, scratch: np.ndarray,
) -> None:
    """Set ``counts`` (int64[2]) to how many |values − base| are above ``hi`` and how many
    inside [lo, hi] were written to ``out`` in order (−1 when ``out`` is too small). Inputs are
    raw bits (see the package); ``scratch`` is float32[2, BLOCK] (the kernel allocates nothing).

    ``lo`` ≥ 0; magnitudes compare as unsigned integers of their bits, so "inside" is one
    well-predicted branch (a float ``a >= lo`` is true for a third of the entries at random).
    """
    n = base.shape[0]
    by = np.uint32(shift)
    mag = scratch[0]
    hits = scratch[1].view(np.uint8)[:BLOCK]  # 1 where the magnitude is inside; read 8 at a time to skip empty runs
    hit_words = hits.view(np.uint64)
    lo_bits = as_bits(np.float32(lo))
    width = np.uint32(as_bits(np.float32(hi)) - lo_bits)
    high = np.float32(hi)
    above = 0
    written = 0
    capacity = out.shape[0]
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        value_block = values[start:start + m]
        base_block = base[start:start + m]
        inside = np.uint32(0)
        over = np.uint32(0)
        for j in range(m):  # vectorised: no stores that depend on earlier entries
            a = abs(stored_float(value_block, j, by) - stored_float(base_block, j, by))
            mag[j] = a
            over += np.uint32(a > high)
            hit = np.uint32(as_bits(a) - lo_bits) <= width
            hits[j] = hit
            inside += np.uint32(hit)
        above += over
        if inside:
            if written + inside > capacity:
                counts[0] = above
                counts[1] = -1
                return
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
    counts[0] = above
    counts[1] = written


@njit(nogil=True, error_model="numpy", cache=True)
def sample_magnitudes(values: np.ndarray, base: np.ndarray, shift: int, step: int, out: np.ndarray) -> None:
    """|values − base| (float32) at every ``step``-th entry, into ``out``: the regular sample
    the bracket is taken from (torch's strided copy of a stored tensor is 5× slower)."""
    by = np.uint32(shift)
    for j in range(out.shape[0]):
        out[j] = abs(stored_float(values, j * step, by) - stored_float(base, j * step, by))
