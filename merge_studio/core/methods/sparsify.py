"""Task vectors: how TIES and DARE thin them out, and how they are mixed back onto the base.

This is mergekit's "generalized task arithmetic", kept apart from the method
declarations so the rules (what "density" means, how ties at the threshold are
treated, how DARE rescales, how signs are elected) live in one place. Every
function works on a whole tensor or on a flat chunk of one; the magnitude
threshold is the one step that needs the whole tensor, which is why it is
computed separately (by the TIES method's ``statistics``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from merge_studio.core import kernels
from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.spec import TensorContext
from merge_studio.errors import MethodError

if TYPE_CHECKING:
    import numpy as np

Consensus = Literal["sum", "count"]
# thin(i, delta) trims or drops in place; returns the factor the kept entries were scaled by
Thinner = Callable[[int, "torch.Tensor"], float]


def task_vector(tensor: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``tensor − base`` as a new tensor (the inputs are left untouched)."""
    return torch.sub(tensor, base)


def keep_count(numel: int, density: float) -> int:
    """How many entries a magnitude trim keeps: ``int(density·n)``, but at least one (as mergekit).

    Keeping the single largest entry lets a low density still merge tiny tensors such as biases.
    """
    if numel == 0:
        return 0
    return min(numel, max(1, int(density * numel)))


def magnitude_threshold(delta: torch.Tensor, density: float, *, overwrite: bool = False) -> float:
    """The smallest magnitude a trim at ``density`` keeps (the k-th largest |δ|).

    ``0.0`` when everything is kept, so ``|δ| >= threshold`` is always true then.
    ``overwrite=True`` takes |δ| in place (and reorders it), saving a tensor-sized
    copy when the caller no longer needs ``delta``.
    """
    n = delta.numel()
    k = keep_count(n, density)
    if density >= 1.0 or k >= n:
        return 0.0
    flat = delta.detach().reshape(-1)
    magnitudes = flat.abs_() if overwrite else flat.abs()
    return kth_largest_(magnitudes, k)


def kth_largest_(values: torch.Tensor, k: int) -> float:
    """The k-th largest of a flat tensor, exactly; may reorder ``values``.

    On the CPU a large tensor goes through :func:`_bracketed_kth` (a sample brackets the
    answer, one counting pass and one gathering pass find it: ~4× faster than a full
    selection); small ones, and the rare case where the sample's bracket misses, use
    numpy's in-place introselect, which takes no extra memory and is ~10× faster than
    ``torch.kthvalue`` (that copies the input and allocates int64 indices).
    """
    n = values.numel()
    if values.device.type == "cpu":
        if values.dtype not in (torch.float32, torch.float64):
            values = values.float()  # numpy has no bfloat16
        array = values.numpy()
        if n >= BRACKET_MIN:
            found = _bracketed_kth(array, k)
            if found is not None:
                return found
        array.partition(n - k)
        return float(array[n - k])
    return float(torch.kthvalue(values, n - k + 1).values)


# Tensors from this size on find their threshold by bracketing; the sample has this many entries.
BRACKET_MIN = 1 << 20
BRACKET_SAMPLE = 1 << 17


def _bracket(sample: "np.ndarray", k: int, n: int) -> tuple[float, float]:
    """[lo, hi] holding the k-th largest of n values with near certainty, from a regular sample.

    The sample's order statistics a few standard deviations either side of rank k; a
    miss (p < 1e-5) is detected by the exact count that follows and only costs the
    fallback. ``sample`` is reordered.
    """
    import numpy as np

    m = sample.size
    q = k / n
    margin = 4.5 * (q * (1.0 - q) * m) ** 0.5 + 4.0
    hi_rank = int(q * m - margin)  # sample entries above hi ~ fewer than k·m/n
    lo_rank = int(q * m + margin)
    ranks = [r for r in (m - 1 - lo_rank if lo_rank < m else None, m - hi_rank if hi_rank >= 1 else None) if r is not None]
    if ranks:
        sample.partition(ranks)  # both order statistics in one selection
    lo = -np.inf if lo_rank >= m else float(sample[m - 1 - lo_rank])
    hi = np.inf if hi_rank < 1 else float(sample[m - hi_rank])
    return lo, hi


def _count_and_gather(array: "np.ndarray", lo: float, hi: float) -> tuple[int, "np.ndarray"]:
    """How many entries are above ``hi``, and the entries inside [lo, hi] in order."""
    import numpy as np

    above = 0 if hi == np.inf else int(np.count_nonzero(array > hi))
    inside = array >= lo
    if hi != np.inf:
        inside &= array <= hi
    return above, np.extract(inside, array)


def _kth_of_candidates(candidates: "np.ndarray", j: int) -> float | None:
    """The j-th largest candidate, or ``None`` when the bracket did not hold the answer."""
    if not 0 < j <= candidates.size:
        return None
    candidates.partition(candidates.size - j)
    return float(candidates[candidates.size - j])


def _bracketed_kth(array: "np.ndarray", k: int) -> float | None:
    """The k-th largest of ``array`` via a bracket from a regular sample, or ``None`` when it misses.

    Counting the entries above the bracket and gathering those inside it (a few percent
    of the tensor) leaves a small selection. Ties are handled: what is counted is exact,
    so a bracket that does not hold the answer is detected, never trusted.
    """
    import numpy as np

    n = array.size
    step = max(1, n // BRACKET_SAMPLE)
    lo, hi = _bracket(np.array(array[::step]), k, n)  # a copy: partitioned
    above, candidates = _count_and_gather(array, lo, hi)
    return _kth_of_candidates(candidates, k - above)


# The task vector's magnitudes are made this many entries at a time when only its threshold is
# needed: two float32 blocks of this size stay in a core's L2 cache.
DELTA_CHUNK = 1 << 17


def delta_magnitude_threshold(tensor: torch.Tensor, base: torch.Tensor, density: float) -> float:
    """``magnitude_threshold(tensor − base, density)`` with δ in float32 (or float64), exactly,
    without a tensor-sized δ.

    The inputs may be stored narrower (bfloat16, float16): δ is always made from their
    float32 values. A large CPU tensor's |δ| is made a block at a time into reused buffers
    that stay in cache, and each block is counted and gathered against a bracket taken
    from a sample of |δ| at the same positions as :func:`_bracketed_kth`'s: no float32 copy
    of the inputs, no tensor-sized temporary, and the same entries are counted and
    gathered in the same order, so the result is the same number.
    """
    n = tensor.numel()
    k = keep_count(n, density)
    if density >= 1.0 or k >= n:
        return 0.0
    wide = torch.float64 if torch.float64 in (tensor.dtype, base.dtype) else torch.float32
    chunked = (
        n >= BRACKET_MIN and tensor.device.type == "cpu" and base.device == tensor.device
        and tensor.shape == base.shape
    )
    if chunked:
        flat, base_flat = tensor.detach().reshape(-1), base.detach().reshape(-1)
        found = _chunked_delta_kth(flat, base_flat, k, wide)
        if found is not None:
            return found
    return magnitude_threshold(task_vector(tensor.to(wide), base.to(wide)), density, overwrite=True)


def _chunked_delta_kth(flat: torch.Tensor, base: torch.Tensor, k: int, wide: torch.dtype) -> float | None:
    import numpy as np

    n = flat.numel()
    step = max(1, n // BRACKET_SAMPLE)
    fast = wide == torch.float32 and kernels.available()
    sample = kernels.sample_magnitudes(flat, base, step, wait=False) if fast else None
    if sample is None:
        sample = torch.sub(flat[::step].to(wide), base[::step].to(wide)).abs_().numpy()
    lo, hi = _bracket(sample, k, n)
    if fast:
        # one compiled pass over the stored inputs, with room for twice the share the sample put inside
        inside = int(np.count_nonzero((sample >= lo) & (sample <= hi)))
        room = min(n, 2 * n * (inside + 64) // sample.size)
        found = kernels.count_and_gather(flat, base, lo, hi, room, wait=False)
        if found is not None:
            above, candidates = found
            return _kth_of_candidates(candidates, k - above)
    size = min(n, DELTA_CHUNK)
    buffer, base_buffer = torch.empty(size, dtype=wide), torch.empty(size, dtype=wide)
    above = 0
    gathered = []
    for start in range(0, n, DELTA_CHUNK):
        stop = min(n, start + DELTA_CHUNK)
        values, base_values = buffer[: stop - start], base_buffer[: stop - start]
        values.copy_(flat[start:stop])  # converts, into the reused buffer
        base_values.copy_(base[start:stop])
        magnitudes = values.sub_(base_values).abs_()
        count, inside = _count_and_gather(magnitudes.numpy(), lo, hi)
        above += count
        gathered.append(inside)
    return _kth_of_candidates(np.concatenate(gathered), k - above)


def trim_below_(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero, in place, every entry with ``|δ| < threshold``; entries equal to it are kept.

    One pass of ``hardshrink`` (which zeroes ``|δ| <= λ``) with λ the largest value
    of δ's dtype below the threshold: 3× faster than building a mask and multiplying.
    """
    if threshold > 0.0:
        torch.ops.aten.hardshrink.out(delta, _just_below(threshold, delta.dtype), out=delta)
    return delta


def _just_below(value: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` below ``value`` (rounded to ``dtype`` first).

    numpy answers for float32/float64 without a round trip through torch (each torch
    call releases and retakes the GIL, which costs more than the arithmetic when
    several workers are merging).
    """
    import numpy as np

    np_type = {torch.float32: np.float32, torch.float64: np.float64}.get(dtype)
    if np_type is not None:
        return float(np.nextafter(np_type(value), np_type(0)))
    limit = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(limit, torch.zeros_like(limit)))


def random_drop_(
    delta: torch.Tensor, density: float, generator: torch.Generator, *, rescale: bool
) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` and, with ``rescale``, divide by it.

    The division keeps the expected value of every entry unchanged. On the CPU the
    keep/drop draws are 32-bit integers from numpy's SFC64 stream, seeded by one draw
    from ``generator`` (so the result depends only on the generator's seed): 2.5× faster
    than ``torch.rand``'s Mersenne Twister, which was most of a DARE merge's time.
    """
    if density >= 1.0:
        return delta
    if delta.device.type == "cpu" and delta.is_contiguous():
        delta.mul_(_keep_mask(delta.numel(), density, generator).view(delta.shape))
    else:
        keep = torch.rand(delta.shape, generator=generator, device=delta.device, dtype=torch.float32)
        delta.mul_(keep.lt_(density))  # 1.0 where kept, 0.0 where dropped, built in place
    if rescale:
        delta.div_(density)
    return delta


def _keep_mask(n: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` independent draws, True with probability ``density`` (to 2⁻³²)."""
    return torch.from_numpy(keep_mask_array(n, density, generator))


def keep_mask_array(n: int, density: float, generator: torch.Generator) -> "np.ndarray":
    """:func:`_keep_mask` as a numpy array (what the compiled DARE-TIES kernel takes)."""
    import numpy as np

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    draws = np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]
    return draws < np.uint32(min(int(density * 2**32), 2**32 - 1))


def elected_sign(weighted: Sequence[torch.Tensor], consensus: Consensus) -> torch.Tensor:
    """+1 or −1 per entry: the sign of the summed weighted deltas ('sum') or of the
    sign count ('count'); a tie goes to +, as in mergekit. Built in one float tensor."""
    total = weighted[0].clone() if consensus == "sum" else weighted[0].sign()
    for wd in weighted[1:]:
        total.add_(wd if consensus == "sum" else wd.sign())
    return total.ge_(0).mul_(2).sub_(1)


def scale_(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x *= factor`` in place, skipped for 1 (a pass over the chunk that changes no bit)."""
    return x if factor == 1.0 else x.mul_(factor)


def l1_norm(x: torch.Tensor) -> torch.Tensor:
    """Σ|x|. Materialising |x| and summing is faster than ``vector_norm(x, 1)`` for a
    1M-element chunk in torch 2.13 (0.23 against 0.37 ms on two threads)."""
    return x.abs().sum()


def merge_task_vectors(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    weights: Sequence[float],
    ctx: TensorContext,
    *,
    lambda_: float = 1.0,
    normalize: bool = False,
    consensus: Consensus | None = None,
    thin: Thinner | None = None,
) -> torch.Tensor:
    """base + λ·mix(wᵢ·thin(θᵢ − base)), mergekit's generalized task arithmetic.

    Without ``consensus`` the divisor is Σ wᵢ (left at 1 when it is ~0); with it,
    an entry of model i counts only where its weighted sign matches the elected
    sign, and the divisor is the sum of the weights that counted (0 becomes 1).
    When ``thin`` is given, ``task_mass_total``/``task_mass_kept`` metrics record
    how much of the task vectors (Σ|τᵢ|) survived thinning and the sign election.
    """
    if len(tensors) != len(weights):
        raise MethodError(
            f"{len(tensors)} tensors but {len(weights)} per-model parameter sets for {ctx.name}"
        )
    track = thin is not None and ctx.wants_metrics
    mixed: torch.Tensor | None = None  # the first contribution becomes it: no zero-filled start
    scales: list[float] = []
    weighted: list[torch.Tensor] = []
    for i, (tensor, weight) in enumerate(zip(tensors, weights, strict=True)):
        delta = task_vector(tensor, base)
        if track:
            ctx.add_metric("task_mass_total", l1_norm(delta))
        scale = thin(i, delta) if thin is not None else 1.0
        scales.append(scale)
        if consensus is None:
            if track:
                ctx.add_metric("task_mass_kept", l1_norm(delta) / scale)
            mixed = scale_(delta, weight) if mixed is None else mixed.add_(delta, alpha=weight)
        else:
            weighted.append(scale_(delta, weight))
    if consensus is None:
        assert mixed is not None  # at least one model (checked by the method's n_models)
        divisor = float(sum(weights))
        if normalize and abs(divisor) >= 1e-8:
            mixed.div_(divisor)
    else:
        mixed = _agreeing_mix(weighted, weights, scales, consensus, normalize, ctx if track else None)
    if lambda_ != 1.0:
        mixed.mul_(lambda_)
    return mixed.add_(base)


def _agreeing_mix(
    weighted: list[torch.Tensor], weights: Sequence[float], scales: Sequence[float],
    consensus: Consensus, normalize: bool, ctx: TensorContext | None,
) -> torch.Tensor:
    """Σ of the weighted deltas whose sign is the elected one, divided (with ``normalize``)
    by the weights that counted there; consumes ``weighted``.

    Worked in "elected-sign space": each kept entry is ``wd·e`` clamped at 0 (its magnitude
    where it agrees with the elected sign ``e``, 0 where it does not), the magnitudes are
    summed and ``e`` is applied once at the end: multiplying by ±1 is exact and commutes
    with the sum, so this equals summing the signed entries. A model counted where its
    magnitude is non-zero: ``ceil`` turns any positive value into ≥ 1 and the clamp makes
    it 1, two branch-free passes (``sign`` branches per entry and is 6× slower on the
    half-zero tensors a trim leaves).
    """
    elected = elected_sign(weighted, consensus)
    mixed: torch.Tensor | None = None
    divisor: torch.Tensor | None = None
    for weight, scale in zip(weights, scales, strict=True):
        kept = weighted.pop(0).mul_(elected).clamp_(min=0)  # let each delta go as soon as it is added
        if ctx is not None and weight != 0:
            ctx.add_metric("task_mass_kept", kept.sum() / (abs(weight) * scale))
        if normalize:
            counted = torch.ceil(kept).clamp_(max=1)
            divisor = scale_(counted, weight) if divisor is None else divisor.add_(counted, alpha=weight)
        mixed = kept if mixed is None else mixed.add_(kept)
    assert mixed is not None
    mixed.mul_(elected)
    if divisor is not None:
        _no_zero_divisor_(divisor, weights)
        mixed.div_(divisor)
    return mixed


def _no_zero_divisor_(divisor: torch.Tensor, weights: Sequence[float]) -> None:
    """Make zero divisors 1 (no model counted there, so the mix is 0 and stays 0).

    With positive weights every non-zero divisor is at least the smallest weight, and
    the mix is exactly 0 wherever the divisor is, so raising the divisor to that
    weight gives the same result as mergekit's "0 → 1" in one cheap pass; a
    zero-filled mask is only built when some weight is zero or negative.
    """
    smallest = min(weights)
    if smallest > 0:
        divisor.clamp_(min=smallest)
    else:
        divisor.masked_fill_(divisor == 0, 1.0)


# --- Model Breadcrumbs: drop the smallest and the largest magnitudes ----------------------------
def band_counts(numel: int, density: float, gamma: float) -> tuple[int, int]:
    """(first kept rank, how many kept) in ascending order of magnitude, as mergekit counts them.

    ``int(density·n)`` entries are kept; ``int(gamma·n)`` of the largest are dropped as
    outliers, fewer when that would leave too few entries (then the band ends at the top).
    """
    keep = int(density * numel)
    top = int(gamma * numel)
    return max(0, numel - keep - top), keep


def magnitude_band(delta: torch.Tensor, density: float, gamma: float) -> tuple[float, float]:
    """The smallest and largest magnitude Breadcrumbs keeps (``lo > hi`` when it keeps nothing).

    Both are order statistics of |δ| found by one selection (numpy's introselect on the CPU).
    """
    n = delta.numel()
    first, keep = band_counts(n, density, gamma)
    if keep == 0:
        return 1.0, 0.0
    magnitudes = delta.detach().reshape(-1).abs()
    if magnitudes.device.type != "cpu":
        ordered = torch.sort(magnitudes).values
        return float(ordered[first]), float(ordered[first + keep - 1])
    array = magnitudes.float().numpy() if magnitudes.dtype not in (torch.float32, torch.float64) else magnitudes.numpy()
    last = first + keep - 1
    array.partition([first, last] if last != first else [first])
    return float(array[first]), float(array[last])


def keep_band_(delta: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Zero, in place, every entry with ``|δ| < lo`` or ``|δ| > hi`` (the band's ends are kept)."""
    if lo > hi:
        return delta.zero_()
    trim_below_(delta, lo)
    delta.masked_fill_(delta.abs() > hi, 0.0)
    return delta


def l1_rescale_factor(total: float, kept: float, eps: float = 1e-7) -> float:
    """mergekit's L1 rescale: Σ|δ| before over Σ|δ| after thinning, 1 when either is ~0."""
    if total < eps or kept < eps:
        return 1.0
    return total / kept
