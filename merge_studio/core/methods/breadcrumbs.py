"""Model Breadcrumbs: keep a band of middle magnitudes of each task vector (mergekit's definitions).

Breadcrumbs thins a task vector τ = θ − base from both ends: the smallest entries
are noise, the very largest are outliers that one fine-tune pushed too far. What is
left is added back like task arithmetic (``breadcrumbs``) or with TIES's sign
election (``breadcrumbs_ties``). The band's two magnitudes are order statistics of
the whole tensor, computed once by ``statistics``; the merge itself is element-wise,
so large tensors stream through in chunks like TIES.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.sparsify import (
    Consensus,
    keep_band_,
    l1_norm,
    l1_rescale_factor,
    magnitude_band,
    merge_task_vectors,
    task_vector,
)
from merge_studio.core.methods.spec import MethodParams, MethodSpec, TensorContext, ui
from merge_studio.core.methods.task_params import (
    L1_RESCALE,
    SparseTaskModelParams,
    consensus_field,
    lambda_field,
    normalize_field,
    rescale_field,
)
from merge_studio.errors import MethodError


class BreadcrumbsParams(MethodParams):
    lambda_: float = lambda_field()
    normalize: bool = normalize_field(False)
    rescale: bool = rescale_field(False, L1_RESCALE)


class BreadcrumbsTiesParams(BreadcrumbsParams):
    consensus: Consensus = consensus_field()


class BreadcrumbsModelParams(SparseTaskModelParams):
    gamma: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        title="γ (outliers)",
        description=(
            "Fraction of this model's task vector with the largest magnitudes to drop as outliers "
            "before the smallest are dropped down to the density."
        ),
        json_schema_extra=ui("slider", step=0.005, decimals=3),
    )


@dataclass(frozen=True)
class Band:
    """What one model's task vector keeps: magnitudes in [lo, hi], then times ``scale``."""

    lo: float
    hi: float
    scale: float = 1.0
    keep_all: bool = False


def breadcrumbs_statistics(
    tensor: torch.Tensor,
    base: torch.Tensor | None,
    params: BreadcrumbsParams,
    model_params: BreadcrumbsModelParams,
    ctx: TensorContext,
) -> Band:
    """The band of magnitudes this model keeps (and the L1 rescale factor), from the whole tensor."""
    base = _require_base(base, ctx)
    if model_params.density >= 1.0:
        return Band(0.0, 0.0, keep_all=True)
    delta = task_vector(tensor, base)
    lo, hi = magnitude_band(delta, model_params.density, model_params.gamma)
    scale = 1.0
    if params.rescale:
        total = float(l1_norm(delta))
        kept = float(l1_norm(keep_band_(delta, lo, hi)))
        scale = l1_rescale_factor(total, kept)
    return Band(lo, hi, scale)


def _require_base(base: torch.Tensor | None, ctx: TensorContext) -> torch.Tensor:
    if base is None:
        raise MethodError(f"Breadcrumbs needs a base model for {ctx.name}", hint="mark one model as the base")
    return base


def _bands(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    params: BreadcrumbsParams,
    model_params: Sequence[BreadcrumbsModelParams],
    ctx: TensorContext,
) -> tuple[Band, ...]:
    if ctx.stats:
        if len(ctx.stats) != len(tensors):
            raise MethodError(f"Breadcrumbs got {len(ctx.stats)} bands for {len(tensors)} models on {ctx.name}")
        return tuple(ctx.stats)
    if ctx.chunk is not None:
        raise MethodError(
            f"Breadcrumbs was given a chunk of {ctx.name} without its magnitude bands",
            hint="compute breadcrumbs_statistics on the whole tensor and pass them as ctx.stats",
        )
    return tuple(breadcrumbs_statistics(t, base, params, mp, ctx) for t, mp in zip(tensors, model_params, strict=True))


def _merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: BreadcrumbsParams,
    model_params: Sequence[BreadcrumbsModelParams],
    ctx: TensorContext,
    consensus: Consensus | None,
) -> torch.Tensor:
    base = _require_base(base, ctx)
    bands = _bands(tensors, base, params, model_params, ctx)

    def thin(i: int, delta: torch.Tensor) -> float:
        band = bands[i]
        if band.keep_all:
            return 1.0
        keep_band_(delta, band.lo, band.hi)
        if band.scale != 1.0:
            delta.mul_(band.scale)
        return band.scale

    return merge_task_vectors(
        tensors,
        base,
        [mp.weight for mp in model_params],
        ctx,
        lambda_=params.lambda_,
        normalize=params.normalize,
        consensus=consensus,
        thin=thin,
    )


def breadcrumbs(tensors, base, params: BreadcrumbsParams, model_params, ctx) -> torch.Tensor:
    return _merge(tensors, base, params, model_params, ctx, None)


def breadcrumbs_ties(tensors, base, params: BreadcrumbsTiesParams, model_params, ctx) -> torch.Tensor:
    return _merge(tensors, base, params, model_params, ctx, params.consensus)


_HOW = (
    "For each model, the task vector τᵢ = θᵢ − base is sorted by magnitude; the int(γ·n) largest "
    "entries are dropped as outliers, then the smallest, so that int(density·n) entries remain "
    "(when density + γ ≥ 1 fewer outliers are dropped, as in mergekit). With rescale on, the kept "
    "entries are scaled so their total magnitude equals the whole task vector's. Density 1 keeps "
    "everything (the default, as in mergekit)."
)
_SAME = (
    "Same definitions as mergekit's {name} (compared with mergekit 0.1.5 on the same configs), with "
    "one deliberate difference, as for TIES: entries whose magnitude equals one end of the band are "
    "all kept, where mergekit cuts at an index of an unstable sort; float32 task vectors almost "
    "never have such ties, bfloat16 ones do. The band is found on the whole tensor and the merge "
    "then streams in chunks."
)

register_method(
    MethodSpec(
        name="breadcrumbs",
        label="Model Breadcrumbs",
        family="Task arithmetic",
        description="Drop each task vector's largest outliers and smallest entries, then add the rest like task arithmetic.",
        params=BreadcrumbsParams,
        model_params=BreadcrumbsModelParams,
        merge=breadcrumbs,
        statistics=breadcrumbs_statistics,
        n_models=(1, None),
        base="required",
        elementwise=True,
        mergekit_name="breadcrumbs",
        reference="Davari & Belilovsky 2024, Model Breadcrumbs: scaling multi-task model merging with sparse masks (arXiv:2312.06795)",
        details=(
            f"{_HOW} The result is base + λ·Σ wᵢ·thin(τᵢ), divided by Σ wᵢ when normalize is on (off "
            "by default). Use it where a few fine-tuned weights moved far and would dominate a plain "
            "sum. Every number and on/off switch can vary by layer. " + _SAME.format(name="breadcrumbs")
        ),
    )
)
register_method(
    MethodSpec(
        name="breadcrumbs_ties",
        label="Model Breadcrumbs (TIES)",
        family="Task arithmetic",
        description="Breadcrumbs' band of middle magnitudes, then TIES's sign election and disjoint sum.",
        params=BreadcrumbsTiesParams,
        model_params=BreadcrumbsModelParams,
        merge=breadcrumbs_ties,
        statistics=breadcrumbs_statistics,
        n_models=(1, None),
        base="required",
        elementwise=True,
        mergekit_name="breadcrumbs_ties",
        reference="Davari & Belilovsky 2024, Model Breadcrumbs: scaling multi-task model merging with sparse masks (arXiv:2312.06795)",
        details=(
            f"{_HOW} The thinned vectors are then combined as in TIES: per entry, the sign of Σ wᵢτᵢ "
            "('sum') or of the majority ('count') is elected, only the models whose weighted entry "
            "has that sign are summed, divided by the sum of their weights when normalize is on (off "
            "by default, as in mergekit), scaled by λ and added to the base. Every number and on/off "
            "switch can vary by layer. " + _SAME.format(name="breadcrumbs_ties")
        ),
    )
)
