"""Passthrough: each output tensor is one model's tensor, optionally scaled.

On its own it re-saves one model; with ``slices`` it is layer stacking (mergekit's
frankenmerges and depth up-scaling): slices of different models and layer ranges
make a model of a new depth (see :mod:`merge_studio.core.stacking`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, ModelParams, TensorContext, ui
from merge_studio.errors import MethodError


class PassthroughParams(MethodParams):
    """Passthrough takes no parameters of its own."""


class PassthroughModelParams(ModelParams):
    scale: float = Field(
        1.0,
        ge=-100.0,
        le=100.0,
        title="Scale",
        description="Multiply the tensor by this (with a filter, e.g. 0 on o_proj and down_proj of "
        "repeated layers, as in depth up-scaling recipes).",
        json_schema_extra=ui("spin", step=0.1),
    )


def passthrough(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: PassthroughParams,
    model_params: Sequence[PassthroughModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    if len(tensors) != 1:
        raise MethodError(
            f"passthrough copies one model's tensor, but {ctx.name} has {len(tensors)} sources",
            hint="give each slice a single source, or pick a merge method for slices with several",
        )
    scale = model_params[0].scale
    return tensors[0] if scale == 1.0 else tensors[0] * scale


register_method(
    MethodSpec(
        name="passthrough",
        label="Passthrough (layer stacking)",
        family="Layer stacking",
        description="Copy one model's tensors unchanged (or scaled); with slices, stack layer ranges "
        "of several models into a model of a new depth.",
        params=PassthroughParams,
        model_params=PassthroughModelParams,
        merge=passthrough,
        n_models=(1, 1),
        elementwise=True,
        mergekit_name="passthrough",
        reference="Kim et al. 2023, SOLAR 10.7B: depth up-scaling (arXiv:2312.15166); mergekit's passthrough",
        details=(
            "Without slices the output is the one model, re-saved (in another dtype or sharding). "
            "With slices, each slice names a layer range of one model, and the slices are stacked "
            "in order: output layer k of a slice is layer start + k of its model, renumbered. "
            "Tensors outside the numbered layers (embeddings, final norm, head) come from the "
            "first slice's model (input side) and the last slice's (output side), as in mergekit. "
            "The output folder's config gets the new layer count and the model card lists the "
            "slices. A per-model scale multiplies the copied tensors; filtered (scale 0 on o_proj "
            "and down_proj) it makes repeated layers start as identities. Slices with several "
            "sources need a merging method instead (every method accepts stacked slices)."
        ),
    )
)
