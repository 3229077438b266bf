"""Task vectors and the ways TIES and DARE thin them out before they are mixed.

Kept apart from the methods so the trimming rules (what "density" means, how
ties at the threshold are treated, how DARE rescales) live in one place and are
tested on their own. Every function works on a whole tensor or on a flat chunk
of one; the magnitude threshold is the one step that needs the whole tensor,
which is why it is computed separately (by the method's ``statistics``).
"""

from __future__ import annotations

import torch


def task_vector(tensor: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``tensor − base`` as a new tensor (the inputs are left untouched)."""
    return torch.sub(tensor, base)


def keep_count(numel: int, density: float) -> int:
    """How many entries a magnitude trim keeps: ``int(density·n)`` as in mergekit, but at least one.

    mergekit refuses a tensor where the count rounds to zero; keeping the single
    largest entry lets a low density still merge tiny tensors such as biases.
    """
    if numel == 0:
        return 0
    return min(numel, max(1, int(density * numel)))


def magnitude_threshold(delta: torch.Tensor, density: float) -> float:
    """The smallest magnitude a trim at ``density`` keeps (the k-th largest |δ|).

    ``0.0`` when everything is kept, so ``|δ| >= threshold`` is always true then.
    Uses a selection (``kthvalue``) rather than a full sort, so it is linear in
    the tensor size.
    """
    n = delta.numel()
    k = keep_count(n, density)
    if density >= 1.0 or k >= n:
        return 0.0
    magnitudes = delta.detach().reshape(-1).abs()
    if magnitudes.device.type == "cpu" and magnitudes.dtype in (torch.float16, torch.bfloat16):
        magnitudes = magnitudes.float()
    return float(torch.kthvalue(magnitudes, n - k + 1).values)


def trim_below_(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero, in place, every entry with ``|δ| < threshold``; entries equal to it are kept."""
    if threshold > 0.0:
        delta.mul_(delta.abs().ge_(threshold))  # a float 0/1 mask built in place: no bool copy
    return delta


def random_drop_(
    delta: torch.Tensor, density: float, generator: torch.Generator, *, rescale: bool
) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` and, with ``rescale``, divide by it.

    The division keeps the expected value of every entry unchanged.
    """
    if density >= 1.0:
        return delta
    keep = torch.rand(delta.shape, generator=generator, device=delta.device, dtype=torch.float32)
    delta.mul_(keep.lt_(density))  # 1.0 where kept, 0.0 where dropped, built in place
    if rescale:
        delta.div_(density)
    return delta
