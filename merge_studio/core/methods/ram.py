"""RAM: average task-vector entries where several models changed them, keep unique changes whole.

Reinforced Agent Merging (mergekit's ``ram`` and ``ramplus_tl``): an entry of a task
vector τᵢ = θᵢ − base counts as changed when |τᵢ| > ε. Entries only one model changed
are kept as they are (plain averaging would dilute them by the number of models);
entries several models changed are averaged over those models. RAM+ also scales a
model's unique changes up by how much it overlaps with the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, NoModelParams, TensorContext, ui
from merge_studio.errors import MethodError


def _epsilon_field() -> float:
    return Field(
        1e-5,
        ge=0.0,
        le=1.0,
        title="ε (changed)",
        description="A task-vector entry counts as changed by a model when its magnitude exceeds this.",
        json_schema_extra=ui("spin", step=1e-6, decimals=7),
    )


class RamParams(MethodParams):
    epsilon: float = _epsilon_field()


class RamPlusParams(MethodParams):
    r: float = Field(
        0.1,
        ge=0.0,
        le=10.0,
        title="r (boost)",
        description="How much a model's unique changes are scaled up per unit of overlap ratio.",
        json_schema_extra=ui("slider", step=0.01),
    )
    alpha: float = Field(
        0.2,
        ge=0.0,
        le=100.0,
        title="α (ratio cap)",
        description="Cap on the overlap ratio (shared over unique changes) used for the boost.",
        json_schema_extra=ui("spin", step=0.05),
    )
    epsilon: float = _epsilon_field()


def _changes(tensors: Sequence[torch.Tensor], base: torch.Tensor, epsilon: float):
    """Task vectors with unchanged entries zeroed, their changed masks, and the count per entry."""
    deltas, changed = [], []
    count = torch.zeros_like(base)
    for t in tensors:
        delta = torch.sub(t, base)
        mask = delta.abs().gt_(epsilon)
        delta.mul_(mask)
        count.add_(mask)
        deltas.append(delta)
        changed.append(mask.bool())
    return deltas, changed, count


def _require_base(base: torch.Tensor | None, ctx: TensorContext, label: str) -> torch.Tensor:
    if base is None:
        raise MethodError(f"{label} needs a base model for {ctx.name}", hint="mark one model as the base")
    return base


def ram(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: RamParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    base = _require_base(base, ctx, "RAM")
    deltas, _, count = _changes(tensors, base, params.epsilon)
    total = deltas[0]
    for d in deltas[1:]:
        total.add_(d)
    return total.div_(count.clamp_(min=1.0)).add_(base)


def ramplus_tl(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: RamPlusParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    base = _require_base(base, ctx, "RAM+")
    deltas, changed, count = _changes(tensors, base, params.epsilon)
    unique = count.eq(1.0)
    shared = count.gt(1.0)
    merged = torch.zeros_like(base)
    divisor = count.clamp(min=1.0)
    for delta, mask in zip(deltas, changed, strict=True):
        n_shared = float(torch.count_nonzero(mask & shared))
        n_unique = float(torch.count_nonzero(mask & unique))
        ratio = n_shared / max(n_unique, params.epsilon) if n_unique > 0 or params.epsilon > 0 else 0.0
        boost = 1.0 + params.r * min(max(ratio, 0.0), params.alpha)
        merged.add_(torch.where(unique, delta * boost, delta / divisor))
    return merged.add_(base)


_SAME = (
    "Same definitions as mergekit's {name} (compared with mergekit 0.1.5 on the same configs); "
    "per-model weights given in a config are not used (mergekit ignores them too)."
)

register_method(
    MethodSpec(
        name="ram",
        label="RAM",
        family="Task arithmetic",
        description="Keep changes only one fine-tune made, average those several made.",
        params=RamParams,
        merge=ram,
        n_models=(1, None),
        base="required",
        elementwise=True,
        mergekit_name="ram",
        reference="Reinforced Agent Merging (RAM), arXiv:2601.13572",
        details=(
            "With task vectors τᵢ = θᵢ − base and cᵢ = 1 where |τᵢ| > ε (entry changed by model i), "
            "the result is base + Σ cᵢτᵢ / max(Σ cᵢ, 1): an entry changed by one model takes that "
            "model's change in full, an entry changed by several takes their mean, an entry nobody "
            "changed stays the base's. Unlike an average it does not dilute changes that only one "
            "fine-tune made, which suits merging agents trained for different skills from one base. "
            "ε can vary by layer. " + _SAME.format(name="ram")
        ),
    )
)
register_method(
    MethodSpec(
        name="ramplus_tl",
        label="RAM+ (tensor-local)",
        family="Task arithmetic",
        description="RAM, with each model's unique changes scaled up by how much it overlaps the others.",
        params=RamPlusParams,
        merge=ramplus_tl,
        n_models=(1, None),
        base="required",
        elementwise=False,
        mergekit_name="ramplus_tl",
        reference="Reinforced Agent Merging (RAM+), arXiv:2601.13572",
        details=(
            "As RAM (entries changed by several models are averaged over them), but the entries only "
            "model i changed are multiplied by λᵢ = 1 + r·min(ρᵢ, α), where ρᵢ is, in this tensor, "
            "the number of model i's changed entries that others changed too over the number only it "
            "changed (with ε as the floor of the divisor). A model whose changes mostly overlap the "
            "others has its few unique changes boosted, making up for what averaging takes away from "
            "it. r, α and ε can vary by layer. " + _SAME.format(name="ramplus_tl")
        ),
    )
)
