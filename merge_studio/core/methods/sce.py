"""SCE: select the entries where the fine-tunes differ most, weight models by their task vectors' size.

From FuseChat's merging step (mergekit's ``sce``): Select the fraction ``select_topk`` of
entries where the task vectors τᵢ = θᵢ − base vary most across models, Calculate each
model's weight from the mean square of its (selected) task vector, Erase the entries
whose sign disagrees with the elected one, then average what is left.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.sparsify import elected_sign
from merge_studio.core.methods.spec import MethodParams, MethodSpec, NoModelParams, TensorContext, ui
from merge_studio.errors import MethodError

# mergekit's floors: total weight below this gives equal weights; divisors are at least this.
_WEIGHT_FLOOR = 1e-6


class SceParams(MethodParams):
    select_topk: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        title="Selected fraction",
        description=(
            "Fraction of entries kept, those whose task vectors vary most across the models (1 keeps all)."
        ),
        json_schema_extra=ui("slider", step=0.05),
    )


def variance_mask(task_vectors: Sequence[torch.Tensor], fraction: float) -> torch.Tensor | None:
    """1 at the ``int(fraction · #nonzero)`` entries of largest variance across models, else 0.

    ``None`` when everything is kept. The variance is the population variance (÷ n).
    """
    if fraction >= 1.0:
        return None
    first = task_vectors[0]
    if fraction <= 0.0:
        return torch.zeros_like(first)
    stacked = torch.stack(list(task_vectors))
    variance = torch.var(stacked, dim=0, unbiased=False)
    del stacked
    k = int(int(torch.count_nonzero(variance)) * fraction)
    mask = torch.zeros_like(first)
    if k > 0:
        top = torch.topk(variance.reshape(-1), k, largest=True).indices
        mask.reshape(-1)[top] = 1.0
    return mask


def size_weights(task_vectors: Sequence[torch.Tensor]) -> list[float]:
    """Each model's mean square τ², as a share of the total (equal shares when all are ~0)."""
    squares = torch.stack([tv.square().mean() for tv in task_vectors])
    total = float(squares.sum())
    if abs(total) < _WEIGHT_FLOOR:
        return [1.0 / len(task_vectors)] * len(task_vectors)
    return (squares / squares.sum()).tolist()


def sce(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SceParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    if base is None:
        raise MethodError(f"SCE needs a base model for {ctx.name}", hint="mark one model as the base")
    task_vectors = [torch.sub(t, base) for t in tensors]
    mask = variance_mask(task_vectors, params.select_topk)
    if mask is not None:
        for tv in task_vectors:
            tv.mul_(mask)
        del mask
    weights = size_weights(task_vectors)
    elected = elected_sign(task_vectors, "sum")
    mixed = torch.zeros_like(base)
    divisor = torch.zeros_like(base)
    for tv, weight in zip(task_vectors, weights, strict=True):
        agrees = tv.sign().eq_(elected).to(base.dtype)  # zero entries never agree
        counted = agrees.mul_(weight)
        mixed.add_(tv.mul_(counted))
        divisor.add_(counted)
    return mixed.div_(divisor.clamp_(min=_WEIGHT_FLOOR)).add_(base)


register_method(
    MethodSpec(
        name="sce",
        label="SCE",
        family="Task arithmetic",
        description="Keep the entries where fine-tunes differ most, weight models by task-vector size, erase sign conflicts.",
        params=SceParams,
        merge=sce,
        n_models=(1, None),
        base="required",
        elementwise=False,
        mergekit_name="sce",
        reference="Wan et al. 2024, FuseChat: knowledge fusion of chat models (SCE merging, arXiv:2408.07990)",
        details=(
            "For each tensor, with task vectors τᵢ = θᵢ − base: Select keeps the int(select_topk · m) "
            "entries of largest variance across the models (m counts the entries whose variance is not "
            "zero); Calculate gives model i the weight wᵢ = mean(τᵢ²)/Σⱼ mean(τⱼ²) on the selected "
            "vectors (equal weights when they are all ~0); Erase keeps, per entry, only the models whose "
            "sign agrees with the sign of Σ τᵢ. The result is base + Σ wᵢmᵢτᵢ / max(Σ wᵢmᵢ, 1e-6), mᵢ "
            "being 1 where model i agrees. It needs no coefficients; the weights come from the data. "
            "select_topk can vary by layer. Same definitions as mergekit's sce; per-model weights "
            "given in a config are not used by it (mergekit ignores them too)."
        ),
    )
)
