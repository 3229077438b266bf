"""Arcee Fusion: take a second model's changes only where they matter most to its outputs.

Each entry's importance is the size of its change from the base times how much the
change shifts the row's softmax (a KL divergence); entries whose importance is an
outlier (above median + 1.5·IQR) take the other model's value, the rest keep the base's.
"""

from __future__ import annotations

from collections.abc import Sequence

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, NoModelParams, TensorContext
from merge_studio.errors import MethodError

_SOFTMAX_FLOOR = 1e-8


class ArceeFusionParams(MethodParams):
    """Arcee Fusion takes no parameters."""


def importance(tensor: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|θ − base| times the KL divergence of the rows' softmax (each row one value)."""
    p = torch.softmax(tensor, dim=-1).add_(_SOFTMAX_FLOOR)
    q = torch.softmax(base, dim=-1).add_(_SOFTMAX_FLOOR)
    kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    return torch.sub(tensor, base).abs_().mul_(kl)


def outlier_threshold(scores: torch.Tensor) -> torch.Tensor:
    """median + 1.5·(q3 − q1), each quantile the sorted value at floor(q·(n − 1)), exactly."""
    flat = scores.reshape(-1)
    n = flat.numel()
    ranks = [int(q * (n - 1)) for q in (0.25, 0.5, 0.75)]
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        array = flat.numpy().copy()
        array.partition(sorted(set(ranks)))
        q1, median, q3 = (torch.tensor(array[r], dtype=flat.dtype) for r in ranks)
    else:
        ordered = torch.sort(flat).values
        q1, median, q3 = (ordered[r] for r in ranks)
    return median + 1.5 * (q3 - q1)


def arcee_fusion(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: ArceeFusionParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    if base is None:
        raise MethodError(f"Arcee Fusion needs a base model for {ctx.name}", hint="mark one model as the base")
    (other,) = tensors
    scores = importance(other, base)
    mask = scores.ge_(outlier_threshold(scores)).to(base.dtype)
    return base + (other - base) * mask


register_method(
    MethodSpec(
        name="arcee_fusion",
        label="Arcee Fusion",
        family="Task arithmetic",
        description="Take a second model's changes only at the entries whose change matters most (outlier importance).",
        params=ArceeFusionParams,
        merge=arcee_fusion,
        n_models=(1, 1),
        base="required",
        elementwise=False,
        mergekit_name="arcee_fusion",
        reference="Arcee AI, Arcee Fusion (arcee.ai; mergekit's arcee_fusion)",
        details=(
            "For each tensor, the importance of an entry of the other model B is |B − base| times the KL "
            "divergence between the softmax of its row in B and in the base (each over the last "
            "dimension, with 1e-8 added). Entries whose importance is at least median + 1.5·(q3 − q1) "
            "of all importances take B's value; the others keep the base's. The result is a sparse, "
            "selective update that keeps the base and brings in only B's most consequential changes. "
            "Same definition as mergekit's arcee_fusion, with one deliberate difference: the quartiles are "
            "exact on every tensor, where mergekit estimates them from a random sample of a million "
            "entries on larger tensors (so its result there changes from run to run)."
        ),
    )
)
