"""NaN and infinity: found cheaply while merging, and on demand in a checkpoint.

A merge that averages a NaN into a model silently ruins every weight that touches
it, so the engine checks each merged chunk before writing it and stops, naming the
tensor and the model that holds the bad values. The check is one reduction per
chunk (a sum is NaN or infinite exactly when an element is, unless finite values
overflow, which the exact check then rules out), so it costs a fraction of the merge.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from merge_studio.core.lazy_torch import torch
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import MergeStudioError

if TYPE_CHECKING:
    from merge_studio.core.checkpoints.base import Checkpoint

SCAN_CHUNK = 1 << 22  # elements read at a time by a scan


class NonFiniteValuesError(MergeStudioError):
    """A tensor holds NaN or infinite values where a merge needs numbers."""


@dataclass(frozen=True)
class NonFinite:
    """How many NaN and infinite elements one tensor holds."""

    name: str
    nan: int
    inf: int

    def describe(self) -> str:
        parts = [f"{self.nan:,} NaN" if self.nan else "", f"{self.inf:,} infinite" if self.inf else ""]
        return f"{self.name} ({' and '.join(p for p in parts if p)})"


def all_finite(t: torch.Tensor) -> bool:
    """True when every element is a number (integer tensors always are)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if bool(torch.isfinite(t.sum(dtype=torch.float32 if t.dtype != torch.float64 else None))):
        return True
    return bool(torch.isfinite(t).all())  # a sum of large finite values can overflow


def count_non_finite(name: str, t: torch.Tensor) -> NonFinite | None:
    """Counts for a tensor that is not all finite, else ``None``."""
    if all_finite(t):
        return None
    nan = int(torch.isnan(t).sum())
    return NonFinite(name, nan, int((~torch.isfinite(t)).sum()) - nan)


def fits_dtype(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether casting ``t`` to a narrower float type keeps every value finite."""
    if not dtype.is_floating_point or not t.is_floating_point() or t.numel() == 0:
        return True
    limit = torch.finfo(dtype).max
    if limit >= torch.finfo(t.dtype).max:
        return True
    return float(t.abs().max()) <= limit


def non_finite_error(
    tensor: str,
    holders: Sequence[str],
    *,
    produced_by: str | None = None,
) -> NonFiniteValuesError:
    """The error a merge stops with: which tensor, which model (or that the method made them)."""
    hint = "check that model (a failed training run or a bad conversion?), or allow non-finite values " \
           "(allow_non_finite: true in the recipe, --allow-non-finite) to merge it anyway"
    if holders:
        models = ", ".join(holders)
        return NonFiniteValuesError(
            f"{tensor} holds NaN or infinite values in {models}; the merge stopped and wrote nothing",
            hint=hint,
        )
    return NonFiniteValuesError(
        f"the merge produced NaN or infinite values in {tensor}"
        + (f" ({produced_by})" if produced_by else "")
        + "; it stopped and wrote nothing",
        hint="try other parameters or a wider output dtype, or allow non-finite values to write it anyway",
    )


def scan_checkpoint(
    checkpoint: Checkpoint, cancel: CancelToken | None = None
) -> Generator[Progress, None, list[NonFinite]]:
    """Read every float tensor in chunks and list those holding NaN or infinity.

    A generator of :class:`Progress` in elements, cancellable between chunks, so a
    huge (or sparse, all-zero) file can be checked with a way out.
    """
    infos = [i for i in checkpoint.infos.values() if i.dtype.is_floating_point]
    total = sum(i.numel for i in infos) or 1
    done = 0
    found: list[NonFinite] = []
    for info in infos:
        nan = inf = 0
        for start in range(0, max(info.numel, 1), SCAN_CHUNK):
            check_cancel(cancel)
            stop = min(start + SCAN_CHUNK, info.numel)
            part = count_non_finite(info.name, checkpoint.get_flat(info.name, start, stop))
            if part is not None:
                nan, inf = nan + part.nan, inf + part.inf
            done += stop - start
            yield Progress("scan", done, total, current=info.name, unit="elements")
        if nan or inf:
            found.append(NonFinite(info.name, nan, inf))
    return found


def holders_of_non_finite(names: Sequence[str], tensors: Sequence[Any]) -> list[str]:
    """The names of the inputs whose tensor (or chunk) is not all finite."""
    return [n for n, t in zip(names, tensors, strict=True) if t is not None and not all_finite(t)]
