"""Model Stock: average the fine-tunes, then pull toward the base by how much they disagree."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import (
    MethodParams,
    MethodSpec,
    NoModelParams,
    TensorContext,
    ui,
)
from merge_studio.errors import MethodError

# mergekit's floor on the product of norms, so zero task vectors give cos = 0 rather than NaN.
NORM_PRODUCT_FLOOR = 1e-6


class ModelStockParams(MethodParams):
    filter_wise: bool = Field(
        False,
        title="Per output row",
        description="Compute the pull toward the base separately for each output row (filter) "
        "instead of once for the whole tensor.",
        json_schema_extra=ui("check", per_layer=False),
    )


def _rows(x: torch.Tensor, filter_wise: bool) -> torch.Tensor:
    """The vectors whose angles are measured: one per output row, or the whole tensor as one."""
    if filter_wise and x.dim() >= 2:
        return x.reshape(x.shape[0], -1)
    return x.reshape(1, -1)


def mean_pairwise_cosine(offsets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean cosine over all pairs of rows of the task vectors (one value per row)."""
    norms = [torch.linalg.vector_norm(o, dim=-1) for o in offsets]
    total = torch.zeros_like(norms[0])
    pairs = 0
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            dot = (offsets[i] * offsets[j]).sum(dim=-1)
            total.add_((dot / (norms[i] * norms[j]).clamp(min=NORM_PRODUCT_FLOOR)).clamp(-1.0, 1.0))
            pairs += 1
    return total.div_(pairs)


def stock_ratio(cosine: torch.Tensor, n_models: int) -> torch.Tensor:
    """t = N·cos θ / (1 + (N−1)·cos θ); where undefined (cos θ = −1/(N−1)) the base is kept."""
    ratio = n_models * cosine / (1.0 + (n_models - 1) * cosine)
    return torch.where(torch.isfinite(ratio), ratio, torch.zeros_like(ratio))


def model_stock(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: ModelStockParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    if base is None:
        raise MethodError(
            f"Model Stock needs a base model for {ctx.name}",
            hint="mark the pre-trained model as the base",
        )
    if len(tensors) < 2:
        raise MethodError(
            "Model Stock needs at least two fine-tuned models besides the base, "
            f"got {len(tensors)} for {ctx.name}"
        )
    base_rows = _rows(base, params.filter_wise)
    models = [_rows(t, params.filter_wise) for t in tensors]
    cosine = mean_pairwise_cosine([m - base_rows for m in models])
    ratio = stock_ratio(cosine, len(models)).unsqueeze(-1)
    average = models[0].clone()
    for m in models[1:]:
        average.add_(m)
    average.div_(len(models))
    merged = average.mul_(ratio).add_(base_rows * (1.0 - ratio))
    return merged.reshape(base.shape)


register_method(
    MethodSpec(
        name="model_stock",
        label="Model Stock",
        family="Averaging",
        description=(
            "Average the fine-tuned models, then move toward the base by an amount set by their "
            "agreement."
        ),
        params=ModelStockParams,
        merge=model_stock,
        n_models=(2, None),
        base="required",
        elementwise=False,
        mergekit_name="model_stock",
        reference=(
            "Jang et al. 2024, Model Stock: all we need is just a few fine-tuned models "
            "(arXiv:2403.19522)"
        ),
        details=(
            "For each tensor, cos θ is the mean cosine between every pair of task vectors θᵢ − "
            "base (clamped to [−1, 1], with a 1e-6 floor on the product of norms). With N "
            "fine-tuned models, t = N·cos θ / (1 + (N−1)·cos θ) and the result is t·mean(θᵢ) + "
            "(1−t)·base: fine-tunes that agree keep most of their average, fine-tunes that go "
            "different ways are pulled toward the base. Needs no coefficients, so it suits several"
            " fine-tunes of one pre-trained model (two to five runs with different seeds or data "
            "orders). With filter_wise, cos θ and t are computed per output row. Same definitions "
            "as mergekit's model_stock, with two deliberate differences: for tensors with more "
            "than two dimensions, filter_wise uses one row per output channel (mergekit uses the "
            "last dimension), and where t is undefined the base is kept."
        ),
    )
)
