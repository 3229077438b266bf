"""NearSwap: take the other model's value only where it is already close to the base's."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, NoModelParams, TensorContext, ui
from merge_studio.errors import MethodError

# mergekit's floor on |base − other| so identical entries do not divide by zero.
_DIFFERENCE_FLOOR = 1e-6


class NearSwapParams(MethodParams):
    t: float = Field(
        0.0001,
        ge=0.0,
        le=1e6,
        title="t (distance)",
        description=(
            "Entries that differ by at most t take the other model's value; farther ones move toward it "
            "by t/|difference|."
        ),
        json_schema_extra=ui("spin", step=0.0001, decimals=6),
    )


def nearswap(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: NearSwapParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    if base is None:
        raise MethodError(f"NearSwap needs a base model for {ctx.name}", hint="mark one model as the base")
    (other,) = tensors
    weight = torch.sub(base, other).abs_().clamp_(min=_DIFFERENCE_FLOOR)
    weight = torch.div(params.t, weight).clamp_(0.0, 1.0)
    return weight * other + (1 - weight) * base


register_method(
    MethodSpec(
        name="nearswap",
        label="NearSwap",
        family="Interpolation",
        description="Move the base toward a second model entry by entry, fully where the two are already close.",
        params=NearSwapParams,
        merge=nearswap,
        n_models=(1, 1),
        base="required",
        elementwise=True,
        mergekit_name="nearswap",
        reference="alchemonaut, QuartetAnemoi-70B-t0.0001 (huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001), as in mergekit",
        details=(
            "Per entry, with d = |base − B| (at least 1e-6), the weight is w = min(1, t/d) and the result is "
            "w·B + (1 − w)·base: entries where the two models are within t of each other take B's value, "
            "entries far apart barely move. A tiny t (1e-4 is typical) keeps the base's distinctive "
            "weights and borrows the other model's where they nearly agree. t can vary by layer. Same "
            "definition as mergekit's nearswap; mergekit requires t, here it defaults to 1e-4."
        ),
    )
)
