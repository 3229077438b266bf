"""Re-basin as merge methods: ``weight_matching`` (two models) and ``merge_many`` (N models).

Declared like every other method, so recipes, ``--param``, the GUI form and the
docs come from the pydantic parameters below. Both are whole-model jobs: they
build the architecture from ``ctx.arch`` (or the checkpoints' recorded one).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from pydantic import Field

from merge_studio.core.lazy_torch import nn, torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, ModelJobContext, ModelMergeOutput, NoModelParams, ui
from merge_studio.core.progress import Progress, check_cancel
from merge_studio.errors import MethodError

# Equal to rebasin.align.DEFAULT_TOLERANCE; repeated so declaring these methods
# (done when the window lists methods) does not import the re-basin machinery.
DEFAULT_TOLERANCE = 1e-6


class WeightMatchingParams(MethodParams):
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, title="α (towards aligned B)",
        description="After aligning B to A: 0 gives A, 1 gives the aligned B, 0.5 their midpoint.",
        json_schema_extra=ui("slider", step=0.05, per_layer=False),
    )
    max_sweeps: int = Field(
        100, ge=1, le=10000, title="Max sweeps",
        description="Stop coordinate descent after this many passes over the groups, even if it still improves.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    seed: int = Field(0, ge=0, title="Seed", description="Order in which groups are visited.", json_schema_extra=ui("seed", per_layer=False))
    restarts: int = Field(
        0, ge=0, le=100, title="Restarts",
        description="Run the descent from this many seeds (seed, seed+1, ...) and keep the best match; "
        "helps narrow residual networks, costs time proportionally. 0: automatic (8 for models with "
        "at most 1024 hidden units to permute, else 1).",
        json_schema_extra=ui("spin", per_layer=False),
    )
    tolerance: float = Field(
        DEFAULT_TOLERANCE, gt=0.0, le=1.0, title="Tolerance",
        description="Largest relative output change of B allowed after permuting (checked in float64); above it the merge fails.",
        json_schema_extra=ui("spin", decimals=9, per_layer=False),
    )
    reset_bn: bool = Field(
        False, title="Re-estimate BatchNorm statistics",
        description="Recompute BatchNorm running statistics of the result on the evaluation data (needs data).",
        json_schema_extra=ui("check", per_layer=False),
    )


class MergeManyParams(MethodParams):
    max_iterations: int = Field(
        100, ge=1, le=10000, title="Max rounds",
        description="Stop after this many rounds of aligning each model to the others' average.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    seed: int = Field(0, ge=0, title="Seed", description="Order of models and groups.", json_schema_extra=ui("seed", per_layer=False))
    tolerance: float = Field(
        DEFAULT_TOLERANCE, gt=0.0, le=1.0, title="Tolerance",
        description="Largest relative output change allowed for each permuted model (checked in float64).",
        json_schema_extra=ui("spin", decimals=9, per_layer=False),
    )
    reset_bn: bool = Field(
        False, title="Re-estimate BatchNorm statistics",
        description="Recompute BatchNorm running statistics of the average on the evaluation data (needs data).",
        json_schema_extra=ui("check", per_layer=False),
    )


def _architecture(checkpoints: Sequence[Any], ctx: ModelJobContext, label: str) -> tuple[str, nn.Module, Any]:
    from merge_studio.core.arch import detect_arch, example_input
    from merge_studio.core.rebasin.align import module_for_alignment

    arch = ctx.arch or detect_arch(checkpoints[0])
    if arch is None:
        raise MethodError(
            f"{label} needs the architecture of {checkpoints[0].name}",
            hint="choose one (e.g. zoo:mlp) in the window or give --arch / 'arch:' in the recipe",
        )
    return arch, module_for_alignment(arch), example_input(arch)


def _float_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _reset_bn(module: nn.Module, state: dict[str, torch.Tensor], ctx: ModelJobContext, label: str) -> dict[str, torch.Tensor]:
    from merge_studio.core.evaluate import DataSpec, load_data, reset_batchnorm

    if ctx.data is None:
        raise MethodError(
            f"{label}: re-estimating BatchNorm statistics needs evaluation data",
            hint="give data (e.g. 'data: {source: digits}' in the recipe) or turn reset_bn off",
        )
    dtypes = {k: v.dtype for k, v in state.items()}
    module.load_state_dict(_float_copy(state))
    data = load_data(DataSpec.model_validate(ctx.data), for_module=module)
    module.to(ctx.device)
    reset_batchnorm(module, data.train, device=ctx.device)
    return {k: v.detach().to("cpu", dtypes[k]) for k, v in module.state_dict().items()}


def _check_inputs(module: nn.Module, ctx: ModelJobContext, n: int = 64) -> list[torch.Tensor] | None:
    """A batch of the evaluation data, so the function check also runs on real inputs when given."""
    if ctx.data is None:
        return None
    from merge_studio.core.evaluate import DataSpec, load_data

    data = load_data(DataSpec.model_validate(ctx.data), for_module=module)
    return [data.test.inputs[:n].cpu()]


def weight_matching_merge(
    checkpoints: Sequence[Any], base: Any, params: WeightMatchingParams, model_params: Sequence[NoModelParams], ctx: ModelJobContext
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align B to A by weight matching, then interpolate (1 − α)·A + α·π(B)."""
    from merge_studio.core.rebasin.align import interpolate_states, iter_align
    from merge_studio.core.rebasin.report import permutation_metadata

    arch, module, example = _architecture(checkpoints, ctx, "Weight matching")
    state_a, state_b = checkpoints[0].state_dict(), checkpoints[1].state_dict()
    names = ctx.model_names or tuple(ck.name for ck in checkpoints)
    result = yield from iter_align(
        module, state_a, state_b, example, arch=arch, max_sweeps=params.max_sweeps, seed=params.seed, restarts=params.restarts,
        device=ctx.device, tolerance=params.tolerance, models=(names[0], names[1]), cancel=ctx.cancel,
        data=_check_inputs(module, ctx),
    )
    check_cancel(ctx.cancel)
    merged = interpolate_states(state_a, result.aligned, params.alpha)
    if params.reset_bn:
        merged = _reset_bn(module, merged, ctx, "Weight matching")
    report = {**result.report, "alpha": params.alpha, "reset_bn": params.reset_bn}
    return ModelMergeOutput(state_dicts=[merged], metadata=permutation_metadata(report), report=report)


def merge_many_merge(
    checkpoints: Sequence[Any], base: Any, params: MergeManyParams, model_params: Sequence[NoModelParams], ctx: ModelJobContext
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align every model to the others' average in turns, then average (Ainsworth et al., Algorithm 3)."""
    from merge_studio.core.rebasin.apply import verify_function
    from merge_studio.core.rebasin.merge_many import iter_merge_many
    from merge_studio.core.rebasin.spec import spec_from_module

    arch, module, example = _architecture(checkpoints, ctx, "MergeMany")
    states = [ck.state_dict() for ck in checkpoints]
    names = ctx.model_names or tuple(ck.name for ck in checkpoints)
    yield Progress("merge many", 0, None, message="tracing the model for its permutation groups")
    spec = spec_from_module(module, example)
    result = yield from iter_merge_many(
        spec, states, max_iterations=params.max_iterations, seed=params.seed, device=ctx.device, cancel=ctx.cancel
    )
    diffs = []
    for state, aligned, perms in zip(states, result.aligned, result.perms, strict=True):
        diffs.append(verify_function(module, state, aligned, example, tol=params.tolerance, spec=spec, perms=perms, seed=params.seed))
    merged = result.merged
    if params.reset_bn:
        merged = _reset_bn(module, merged, ctx, "MergeMany")
    report = {
        "format": "merge_studio.merge_many_report",
        "arch": arch,
        "models": list(names),
        "groups": [g.to_json() for g in spec.groups],
        "unpermuted": [p.to_json() for p in spec.unpermuted],
        "blocked": {k: list(v) for k, v in spec.blocked.items()},
        "perms": {name: {g: p.tolist() for g, p in perms.items()} for name, perms in zip(names, result.perms, strict=True)},
        "moved_fraction": dict(zip(names, result.moved_fraction(), strict=True)),
        "rounds": result.rounds,
        "converged": result.converged,
        "changes_per_round": list(result.changes_per_round),
        "max_output_difference": max(diffs),
        "reset_bn": params.reset_bn,
    }
    metadata = {
        "merge_studio.permutation": json.dumps({"models": report["perms"], "rounds": result.rounds}, separators=(",", ":")),
        "merge_studio.arch": arch,
    }
    return ModelMergeOutput(state_dicts=[merged], metadata=metadata, report=report)


register_method(
    MethodSpec(
        name="weight_matching",
        label="Weight matching (Git Re-Basin)",
        family="Re-basin",
        description="Permute B's hidden units to match A's weights, then interpolate between A and the aligned B.",
        params=WeightMatchingParams,
        merge_model=weight_matching_merge,
        n_models=(2, 2),
        needs_arch=True,
        reference="Ainsworth, Hayase & Srinivasa 2023, Git Re-Basin (arXiv:2209.04836), Algorithm 1",
        details="Groups of units that must move together come from the traced graph (residual adds, BatchNorm "
        "statistics, attention heads). The permuted B is checked to compute the same outputs before merging; "
        "parts the spec could not follow keep their order and are listed in the report.",
    )
)
register_method(
    MethodSpec(
        name="merge_many",
        label="MergeMany (Git Re-Basin)",
        family="Re-basin",
        description="Align each model to the average of the others in turns until nothing changes, then average them.",
        params=MergeManyParams,
        merge_model=merge_many_merge,
        n_models=(2, None),
        needs_arch=True,
        reference="Ainsworth, Hayase & Srinivasa 2023, Git Re-Basin (arXiv:2209.04836), Algorithm 3",
        details="BatchNorm models usually need their statistics re-estimated after averaging (reset_bn).",
    )
)
