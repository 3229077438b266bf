"""Interpolation on the sphere beyond two-model SLERP: NuSLERP, Multi-SLERP and the Karcher mean.

All three treat a tensor (or each of its rows) as a point on a hypersphere and
interpolate along great circles rather than straight lines, which keeps the size of
the weights closer to the inputs' than a plain average does (mergekit's ``nuslerp``,
``multislerp`` and ``karcher``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, ModelParams, NoModelParams, TensorContext, ui
from merge_studio.errors import MethodError


class WeightModelParams(ModelParams):
    weight: float = Field(
        1.0,
        ge=-10.0,
        le=10.0,
        title="Weight",
        description="This model's share of the interpolation (relative to the other models' weights).",
        json_schema_extra=ui("slider", step=0.05),
    )


# --- NuSLERP ------------------------------------------------------------------------------------
class NuSlerpParams(MethodParams):
    nuslerp_flatten: bool = Field(
        True,
        title="Whole tensor",
        description="Interpolate each tensor as one long vector; off: interpolate each row (or column) on its own.",
        json_schema_extra=ui("check"),
    )
    nuslerp_row_wise: bool = Field(
        False,
        title="Columns",
        description="When not flattening, interpolate the columns (vectors along the first dimension) instead of the rows.",
        json_schema_extra=ui("check"),
    )


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=1e-7)


def slerp_rows(t: float, a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SLERP between matching rows (last dimension) of ``a`` and ``b``; (near-)colinear rows are lerped."""
    cosine = torch.sum(_unit(a) * _unit(b), dim=-1, keepdim=True).clamp(-1.0, 1.0)
    colinear = (1 - cosine.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0.0, cosine))
    sin_theta = torch.sin(theta)
    arc = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / sin_theta
    return torch.where(colinear, (1 - t) * a + t * b, arc)


def nuslerp_tensors(t: float, a: torch.Tensor, b: torch.Tensor, *, flatten: bool, columns: bool) -> torch.Tensor:
    """NuSLERP of two tensors: flattened, row by row, or column by column."""
    if flatten:
        return slerp_rows(t, a.reshape(-1), b.reshape(-1)).reshape(a.shape)
    if columns and a.dim() > 1:
        return slerp_rows(t, a.transpose(0, -1), b.transpose(0, -1)).transpose(0, -1).reshape(a.shape)
    return slerp_rows(t, a, b).reshape(a.shape)


def nuslerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: NuSlerpParams,
    model_params: Sequence[WeightModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    a, b = tensors
    w0, w1 = (mp.weight for mp in model_params)
    total = w0 + w1
    t = 0.5 if abs(total) < 1e-6 else w1 / total
    options = {"flatten": params.nuslerp_flatten, "columns": params.nuslerp_row_wise}
    if base is None:
        return nuslerp_tensors(t, a, b, **options)
    return nuslerp_tensors(t, a - base, b - base, **options).add_(base)


# --- Multi-SLERP --------------------------------------------------------------------------------
class MultiSlerpParams(MethodParams):
    normalize_weights: bool = Field(
        True,
        title="Normalise weights",
        description="Divide the weights by their sum, so weights 2 and 1 mean 2/3 and 1/3.",
        json_schema_extra=ui("check"),
    )
    eps: float = Field(
        1e-8,
        gt=0.0,
        le=1e-2,
        title="ε",
        description="Small constant added to norms so zero tensors do not divide by zero.",
        json_schema_extra=ui("spin", step=1e-9, decimals=10, per_layer=False),
    )


def multislerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: MultiSlerpParams,
    model_params: Sequence[WeightModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0].clone()
    eps = params.eps
    shape = tensors[0].shape
    points = torch.stack([t.reshape(-1) for t in tensors])
    if base is not None:
        points.sub_(base.reshape(1, -1))
    weights = torch.tensor([mp.weight for mp in model_params], dtype=points.dtype, device=points.device)
    if params.normalize_weights:
        if abs(float(weights.sum())) < 1e-12:
            raise MethodError(
                f"Multi-SLERP weights sum to zero for {ctx.name}; cannot normalise",
                hint="change the weights or turn normalize_weights off",
            )
        weights = weights / weights.sum()
    norms = torch.linalg.vector_norm(points, dim=-1, keepdim=True)
    units = points / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if len(tensors) == 2:
            result = (points[0] * weights[0] + points[1] * weights[1]).reshape(shape)
            return result if base is None else result.add_(base)
        raise MethodError(
            f"Multi-SLERP: the weighted directions of {ctx.name} cancel out (antipodal tensors with balancing weights)",
            hint="change the weights",
        )
    mean = mean / mean_norm
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    step = (tangents * weights.view(-1, 1)).sum(0)
    step_norm = torch.linalg.vector_norm(step) + eps
    result = mean * torch.cos(step_norm) + step * (torch.sin(step_norm) / step_norm)
    result = (result * (norms.squeeze(-1) * weights).sum()).reshape(shape)
    return result if base is None else result.add_(base)


# --- Karcher mean -------------------------------------------------------------------------------
class KarcherParams(MethodParams):
    max_iter: int = Field(
        10,
        ge=1,
        le=1000,
        title="Iterations",
        description="Most Riemannian gradient steps taken to find the mean direction.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    tol: float = Field(
        1e-5,
        gt=0.0,
        le=1e-1,
        title="Tolerance",
        description="Stop when the step is shorter than this; norms below it count as zero.",
        json_schema_extra=ui("spin", step=1e-6, decimals=7),
    )


def karcher_mean(tensors: Sequence[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    """Equal-weight Karcher (Fréchet) mean of the directions, scaled by the mean norm."""
    if len(tensors) == 1:
        return tensors[0].clone()
    alphas = [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [torch.zeros_like(t) if float(n) == 0.0 else t / n for t, n in zip(tensors, norms, strict=True)]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    total = sum(alphas[i] for i in valid)
    shares = [alphas[i] / total for i in valid]
    points = [units[i] for i in valid]
    mean = torch.zeros_like(points[0])
    for share, unit in zip(shares, points, strict=True):
        mean += share * unit
    mean_norm = torch.linalg.vector_norm(mean)
    mean = points[0].clone() if float(mean_norm) < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for share, unit in zip(shares, points, strict=True):
            dot = torch.clamp(torch.dot(mean.reshape(-1), unit.reshape(-1)), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += share * (theta / torch.sin(theta)) * (unit - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if float(tangent_norm) < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if float(unit_norm) > tol:
            mean = mean / unit_norm
    scale = sum(a * n for a, n in zip(alphas, norms, strict=True))
    return scale * mean


def karcher(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: KarcherParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    return karcher_mean(tensors, params.max_iter, params.tol)


# --- declarations -------------------------------------------------------------------------------
register_method(
    MethodSpec(
        name="nuslerp",
        label="NuSLERP",
        family="Interpolation",
        description="SLERP between two models set by their weights, whole tensors or row by row, optionally around a base.",
        params=NuSlerpParams,
        model_params=WeightModelParams,
        merge=nuslerp,
        n_models=(2, 2),
        base="optional",
        elementwise=False,
        mergekit_name="nuslerp",
        reference="mergekit's NuSLERP (arcee-ai/mergekit), after Shoemake 1985, Animating rotation with quaternion curves (SIGGRAPH)",
        details=(
            "The position on the arc is t = w₂/(w₁ + w₂) from the two models' weights (0.5 when they sum "
            "to ~0). Each tensor is interpolated as one vector (nuslerp_flatten, the default), or each row "
            "on its own, or each column with nuslerp_row_wise: sin((1−t)Ω)/sin Ω·A + sin(tΩ)/sin Ω·B, "
            "lerped where the vectors are (anti)parallel. With a base model the two task vectors A − base "
            "and B − base are interpolated and added to the base, which makes it a spherical version of "
            "task arithmetic for two fine-tunes. Weights and switches can vary by layer. Same definitions "
            "as mergekit's nuslerp."
        ),
    )
)
register_method(
    MethodSpec(
        name="multislerp",
        label="Multi-SLERP",
        family="Interpolation",
        description="Spherical interpolation of any number of models by weight, optionally around a base.",
        params=MultiSlerpParams,
        model_params=WeightModelParams,
        merge=multislerp,
        n_models=(1, None),
        base="optional",
        elementwise=False,
        mergekit_name="multislerp",
        reference="Goddard 2025, Multi-SLERP (goddard.blog/posts/multislerp-wow-what-a-cool-idea), as in mergekit",
        details=(
            "Barycentric interpolation on the hypersphere: each tensor (minus the base when one is given) "
            "is projected onto the unit sphere, the weighted mean direction is found, the points are "
            "mapped to the tangent plane there, mixed by weight and mapped back with the exponential map; "
            "the result is scaled by the weighted mean of the norms (and the base added back). With two "
            "models it is close to SLERP at t = w₂/(w₁ + w₂). Weights can vary by layer. Same definitions "
            "as mergekit's multislerp; where the weighted directions cancel out with three or more models "
            "the merge stops with an error naming the tensor (as mergekit does), and weights that sum to "
            "zero with normalize_weights on are refused (mergekit would divide by zero)."
        ),
    )
)
register_method(
    MethodSpec(
        name="karcher",
        label="Karcher mean",
        family="Averaging",
        description="The mean direction of the models on the sphere (Riemannian centre of mass), scaled by their mean norm.",
        params=KarcherParams,
        merge=karcher,
        n_models=(1, None),
        elementwise=False,
        mergekit_name="karcher",
        reference="Karcher 1977, Riemannian center of mass and mollifier smoothing; Karcher-mean merging (arXiv:2603.04972)",
        details=(
            "Each tensor is split into its norm and its direction. The direction of the result is the "
            "Karcher mean of the directions, the point on the sphere that minimises the summed squared "
            "arc lengths to them, found by at most max_iter Riemannian gradient steps (stopping when a "
            "step is shorter than tol); its norm is the mean of the norms. Models are weighted equally. "
            "It is the many-model generalisation of SLERP at t = 0.5. Tensors whose norm is below tol "
            "take no part in the direction. A base model given in a mergekit config joins the mean, as "
            "in mergekit. Same definitions as mergekit's karcher."
        ),
    )
)
