"""Averages: simple, weighted (mergekit's ``linear``) and two-model interpolation."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core import kernels
from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import (
    MethodParams,
    MethodSpec,
    ModelParams,
    NoModelParams,
    TensorContext,
    fused_outputs,
    ui,
)
from merge_studio.errors import MethodError


class SimpleAverageParams(MethodParams):
    """Simple average takes no parameters."""


def simple_average(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SimpleAverageParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    out = torch.add(tensors[0], tensors[1]) if len(tensors) > 1 else tensors[0].clone()
    for t in tensors[2:]:
        out.add_(t)
    return out.div_(len(tensors))


def simple_average_fused(
    stored: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SimpleAverageParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
    out_dtype: torch.dtype,
) -> list[torch.Tensor] | None:
    """The mean of one chunk by the compiled kernel, when there is one and it takes these tensors."""
    if base is not None or not kernels.available():
        return None  # an unused base is the engine's reference for the change numbers: torch measures it
    found = kernels.weighted_sum_chunk(
        list(stored), [1.0] * len(stored), float(len(stored)), out_dtype=out_dtype,
        want_metrics=ctx.wants_metrics, wait=False,
    )
    return fused_outputs(found, ctx)


class WeightedAverageParams(MethodParams):
    normalize: bool = Field(
        True,
        title="Normalise weights",
        description="Divide by the sum of the weights, so weights 2 and 1 mean 2/3 and 1/3.",
        json_schema_extra=ui("check"),
    )


class WeightedAverageModelParams(ModelParams):
    weight: float = Field(
        1.0,
        ge=-10.0,
        le=10.0,
        title="Weight",
        description="This model's coefficient in the weighted sum.",
        json_schema_extra=ui("slider", step=0.05),
    )


def weighted_average(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: WeightedAverageParams,
    model_params: Sequence[WeightedAverageModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    weights = [mp.weight for mp in model_params]
    out = torch.mul(tensors[0], weights[0])
    for t, w in zip(tensors[1:], weights[1:], strict=True):
        out.add_(t, alpha=w)
    if params.normalize:
        total = sum(weights)
        if abs(total) < 1e-8:
            raise MethodError(
                f"weights sum to zero for {ctx.name}; cannot normalise",
                hint="change the weights or turn normalisation off",
            )
        out.div_(total)
    return out


def weighted_average_fused(
    stored: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: WeightedAverageParams,
    model_params: Sequence[WeightedAverageModelParams],
    ctx: TensorContext,
    out_dtype: torch.dtype,
) -> list[torch.Tensor] | None:
    """The weighted sum of one chunk by the compiled kernel, when there is one and it takes these tensors."""
    weights = [mp.weight for mp in model_params]
    total = sum(weights)
    if base is not None or not kernels.available() or (params.normalize and abs(total) < 1e-8):
        return None  # torch measures against the base, or stops with the zero-sum error
    found = kernels.weighted_sum_chunk(
        list(stored), weights, total if params.normalize else None, out_dtype=out_dtype,
        want_metrics=ctx.wants_metrics, wait=False,
    )
    return fused_outputs(found, ctx)


class LerpParams(MethodParams):
    t: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        title="t",
        description="Position between the models: 0 gives the first model, 1 the second.",
        json_schema_extra=ui("slider", step=0.01),
    )


def lerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: LerpParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    a, b = tensors
    return torch.lerp(a, b, params.t)


register_method(
    MethodSpec(
        name="simple_average",
        label="Simple average",
        family="Averaging",
        description="Element-wise mean of all models (a model soup).",
        params=SimpleAverageParams,
        merge=simple_average,
        fused=simple_average_fused,
        n_models=(1, None),
        elementwise=True,
        reference="Wortsman et al. 2022, Model soups (arXiv:2203.05482)",
        details=(
            "The result is (θ₁ + … + θₙ)/n, entry by entry. Averaging works when the models share "
            "a pre-trained starting point (fine-tunes of one base, or checkpoints of one run); "
            "models trained from different random starts usually need aligning first. Equal to "
            "mergekit's linear with every weight 1."
        ),
    )
)
register_method(
    MethodSpec(
        name="weighted_average",
        label="Weighted average",
        family="Averaging",
        description="Sum of the models times per-model weights, optionally divided by their sum.",
        params=WeightedAverageParams,
        model_params=WeightedAverageModelParams,
        merge=weighted_average,
        fused=weighted_average_fused,
        n_models=(1, None),
        elementwise=True,
        mergekit_name="linear",
        reference="Wortsman et al. 2022, Model soups (arXiv:2203.05482)",
        details=(
            "The result is Σ wᵢθᵢ, divided by Σ wᵢ when normalize is on (the default), entry by "
            "entry. Use it like a simple average when some models should count more; weights can "
            "vary by layer. With one model it re-saves that model (to change its dtype, or its "
            "shards), as mergekit's linear of one model does. Same definitions as mergekit's linear, with two deliberate "
            "differences: a missing weight means 1 (mergekit requires one), and weights that sum "
            "to zero with normalize on stop the merge with an error naming the tensor (mergekit "
            "would divide by zero)."
        ),
    )
)
register_method(
    MethodSpec(
        name="lerp",
        label="Linear interpolation",
        family="Interpolation",
        description="(1 − t)·A + t·B between two models.",
        params=LerpParams,
        merge=lerp,
        n_models=(2, 2),
        elementwise=True,
        reference=(
            "Frankle et al. 2020, Linear mode connectivity and the lottery ticket hypothesis "
            "(arXiv:1912.05671)"
        ),
        details=(
            "The result is (1 − t)·A + t·B, entry by entry: t = 0 gives the first model, t = 1 the"
            " second, and t can vary by layer. With a base model, the base is A. Equal to "
            "mergekit's linear with weights 1 − t and t; SLERP follows the arc instead of the "
            "straight line."
        ),
    )
)
