"""A1111's and supermerger's "Add difference": A + α·(B − C), under the name those users know.

It is task arithmetic with C as the base and weights 1 for A and α for B:
C + (A − C) + α·(B − C) = A + α·(B − C). It is computed in that last form, which
rounds once less. α can vary by layer and by SD block (``{blocks: …}``), as in
supermerger's block-weighted add difference.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, NoModelParams, TensorContext, ui
from merge_studio.errors import MethodError


class AddDifferenceParams(MethodParams):
    alpha: float = Field(
        1.0,
        ge=-10.0,
        le=10.0,
        title="Multiplier α",
        description="How much of the difference B − C is added to A (A1111's multiplier M); "
        "give block weights to vary it by UNet block.",
        json_schema_extra=ui("slider", step=0.05),
    )


def add_difference(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: AddDifferenceParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    if base is None:
        raise MethodError(f"Add difference needs model C (the base) for {ctx.name}", hint="mark model C as the base")
    a, b = tensors
    return torch.sub(b, base).mul_(params.alpha).add_(a)


register_method(
    MethodSpec(
        name="add_difference",
        label="Add difference",
        family="Task arithmetic",
        description="A + α·(B − C): add what B learned on top of C to A (A1111 / supermerger).",
        params=AddDifferenceParams,
        merge=add_difference,
        n_models=(2, 2),
        base="required",
        elementwise=True,
        reference="AUTOMATIC1111 stable-diffusion-webui, Checkpoint Merger ('Add difference')",
        details=(
            "The first model is A, the second B, and the base is C. The result is A + α·(B − C), entry "
            "by entry: B − C is what B's training added to C (for example an inpainting or a style "
            "fine-tune of the model C), and it is grafted onto A. It is task arithmetic with C as the "
            "base and weights 1 for A and α for B. α can vary by layer, and by UNet block for Stable "
            "Diffusion checkpoints ({blocks: 'BASE,IN00,…,OUT11'} as in supermerger). Same definition "
            "as AUTOMATIC1111's 'Add difference' with multiplier M = α."
        ),
    )
)
