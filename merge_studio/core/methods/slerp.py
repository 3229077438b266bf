"""Spherical linear interpolation between two models, tensor by tensor (mergekit's ``slerp``)."""

from __future__ import annotations

import math
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

# mergekit's DOT_THRESHOLD: above this |cos| the tensors are treated as parallel and lerped.
PARALLEL_COSINE = 0.9995
# Norms at or below this count as zero (mergekit's eps).
ZERO_NORM = 1e-8


class SlerpParams(MethodParams):
    t: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        title="t",
        description=(
            "Position along the arc between the models: 0 gives the first model, 1 the second."
        ),
        json_schema_extra=ui("slider", step=0.01),
    )


def _reducible(x: torch.Tensor) -> torch.Tensor:
    """Flat view in a dtype whose sums are accurate enough (half precision is widened)."""
    flat = x.reshape(-1)
    return flat if flat.dtype in (torch.float32, torch.float64) else flat.float()


def slerp_tensors(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Interpolate along the great circle through the flattened ``a`` and ``b``.

    The angle comes from the directions, the result mixes the original tensors:
    ``sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b`` with ``cos Ω = â·b̂``. Falls back
    to ``(1−t)·a + t·b`` when the tensors are (anti)parallel or one is zero.
    """
    flat_a, flat_b = _reducible(a), _reducible(b)
    norm_a = float(torch.linalg.vector_norm(flat_a))
    norm_b = float(torch.linalg.vector_norm(flat_b))
    if norm_a <= ZERO_NORM or norm_b <= ZERO_NORM:
        return torch.lerp(a, b, t)
    dot = float(torch.dot(flat_a, flat_b))
    cosine = dot / (norm_a * norm_b)
    if abs(cosine) > PARALLEL_COSINE:
        return torch.lerp(a, b, t)
    omega = math.acos(cosine)
    sin_omega = math.sin(omega)
    coef_a = math.sin((1.0 - t) * omega) / sin_omega
    coef_b = math.sin(t * omega) / sin_omega
    return torch.mul(a, coef_a).add_(b, alpha=coef_b)


def slerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: SlerpParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    a, b = tensors
    return slerp_tensors(a, b, params.t)


register_method(
    MethodSpec(
        name="slerp",
        label="SLERP",
        family="Interpolation",
        description=(
            "Interpolate two models along the arc between them rather than the straight line."
        ),
        params=SlerpParams,
        merge=slerp,
        n_models=(2, 2),
        elementwise=False,
        mergekit_name="slerp",
        reference="Shoemake 1985, Animating rotation with quaternion curves (SIGGRAPH)",
        details=(
            "Each tensor is treated as one long vector. With Ω the angle between the two (cos Ω = "
            "â·b̂), the result is sin((1−t)Ω)/sin Ω·A + sin(tΩ)/sin Ω·B, which keeps the size of "
            "the weights closer to the originals than a straight average when the models point in "
            "different directions. When |cos Ω| > 0.9995 it is a plain (1−t)·A + t·B, as in "
            "mergekit. t can vary by layer (e.g. [0, 0.5, 1] to move from A to B through the "
            "network); with a base model the base is A. Same definition as mergekit's slerp, with "
            "one deliberate difference: a tensor that is all zeros in either model is interpolated"
            " linearly (mergekit treats it as perpendicular and mixes with sin/cos weights)."
        ),
    )
)
