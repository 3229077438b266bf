"""The merge jobs behind the re-basin methods (declared in :mod:`merge_studio.core.rebasin.methods`).

Each builds the architecture, aligns (weight matching, activation matching, or
both and the better), interpolates, and optionally corrects the result with
REPAIR or BatchNorm re-estimation on the evaluation data.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from merge_studio.core.lazy_torch import nn, torch
from merge_studio.core.methods.spec import ModelJobContext, ModelMergeOutput, NoModelParams
from merge_studio.core.progress import Progress, check_cancel
from merge_studio.errors import MethodError


def architecture(checkpoints: Sequence[Any], ctx: ModelJobContext, label: str) -> tuple[str, nn.Module, Any]:
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


def eval_data(module: nn.Module, ctx: ModelJobContext, label: str, why: str) -> Any:
    """The evaluation data of the merge (its ``data:``), loaded for ``module``; a clear error without it."""
    from merge_studio.core.evaluate import DataSpec, load_data

    if ctx.data is None:
        raise MethodError(
            f"{label}: {why} needs evaluation data",
            hint="give data (e.g. 'data: {source: digits}' in the recipe, or choose data in the window)",
        )
    return load_data(DataSpec.model_validate(ctx.data), for_module=module)


def reset_bn(module: nn.Module, state: dict[str, torch.Tensor], ctx: ModelJobContext, label: str) -> dict[str, torch.Tensor]:
    from merge_studio.core.evaluate import reset_batchnorm

    data = eval_data(module, ctx, label, "re-estimating BatchNorm statistics")
    dtypes = {k: v.dtype for k, v in state.items()}
    module.load_state_dict(_float_copy(state))
    module.to(ctx.device)
    reset_batchnorm(module, data.train, device=ctx.device)
    return {k: v.detach().to("cpu", dtypes[k]) for k, v in module.state_dict().items()}


def repair(module: nn.Module, spec: Any, states: Sequence[Mapping[str, torch.Tensor]], merged: dict[str, torch.Tensor],
           weights: Sequence[float], data: Any, ctx: ModelJobContext) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """REPAIR ``merged`` (the average of ``states`` with ``weights``) on the training split."""
    from merge_studio.core.rebasin.repair import Repairer, calibration_batches

    repairer = Repairer(module, spec, [_float_copy(s) for s in states], calibration_batches(data.train.inputs), device=ctx.device)
    return repairer.repaired_state(module, merged, weights), repairer.describe()


def check_inputs(module: nn.Module, ctx: ModelJobContext, n: int = 64) -> list[torch.Tensor] | None:
    """A batch of the evaluation data, so the function check also runs on real inputs when given."""
    if ctx.data is None:
        return None
    from merge_studio.core.evaluate import DataSpec, load_data

    data = load_data(DataSpec.model_validate(ctx.data), for_module=module)
    return [data.test.inputs[:n].cpu()]


def two_model_merge(
    checkpoints: Sequence[Any], params: Any, ctx: ModelJobContext, *, choose: str, label: str
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align B to A (``choose``: weight, activation or auto), interpolate (1 − α)·A + α·π(B), then correct."""
    from merge_studio.core.rebasin.align import interpolate_states
    from merge_studio.core.rebasin.choose import iter_chosen_alignment
    from merge_studio.core.rebasin.report import permutation_metadata

    arch, module, example = architecture(checkpoints, ctx, label)
    state_a, state_b = checkpoints[0].state_dict(), checkpoints[1].state_dict()
    names = ctx.model_names or tuple(ck.name for ck in checkpoints)
    wants_repair = getattr(params, "repair", False)
    needs_data = choose != "weight" or wants_repair
    if needs_data:
        data = eval_data(module, ctx, label, "activation matching" if choose != "weight" else "REPAIR")
    else:
        data = eval_data(module, ctx, label, "") if ctx.data is not None else None  # real inputs for the check
    result = yield from iter_chosen_alignment(
        module, state_a, state_b, example, data, choose=choose, repair=wants_repair, compare=choose == "auto",
        examples=getattr(params, "examples", 2000), arch=arch, max_sweeps=getattr(params, "max_sweeps", 100),
        seed=params.seed, restarts=getattr(params, "restarts", 0), device=ctx.device, tolerance=params.tolerance,
        models=(names[0], names[1]), cancel=ctx.cancel,
    )
    check_cancel(ctx.cancel)
    merged = interpolate_states(state_a, result.aligned, params.alpha)
    report = {**result.report, "alpha": params.alpha, "reset_bn": params.reset_bn, "repair": wants_repair}
    if wants_repair:
        yield Progress("repair", 0, None, message="REPAIR: resetting unit statistics of the merge")
        merged, report["repair_layers"] = repair(module, result.spec, [state_a, result.aligned], merged,
                                                 (1.0 - params.alpha, params.alpha), data, ctx)
    elif params.reset_bn:
        merged = reset_bn(module, merged, ctx, label)
    return ModelMergeOutput(state_dicts=[merged], metadata=permutation_metadata(report), report=report)


def merge_many_merge(
    checkpoints: Sequence[Any], base: Any, params: Any, model_params: Sequence[NoModelParams], ctx: ModelJobContext
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align every model to the others' average in turns, then average (Ainsworth et al., Algorithm 3)."""
    from merge_studio.core.rebasin.apply import verify_function
    from merge_studio.core.rebasin.merge_many import iter_merge_many
    from merge_studio.core.rebasin.repair import calibration_batches
    from merge_studio.core.rebasin.spec import analyse_module

    arch, module, example = architecture(checkpoints, ctx, "MergeMany")
    states = [ck.state_dict() for ck in checkpoints]
    names = ctx.model_names or tuple(ck.name for ck in checkpoints)
    matching = getattr(params, "matching", "weight")
    data = None
    if matching == "activation" or params.repair:
        data = eval_data(module, ctx, "MergeMany", "activation matching" if matching == "activation" else "REPAIR")
    yield Progress("merge many", 0, None, message="tracing the model for its permutation groups")
    analysis = analyse_module(module, example)
    spec = analysis.spec
    batches = calibration_batches(data.train.inputs[: params.examples]) if data is not None else None
    result = yield from iter_merge_many(
        spec, states, max_iterations=params.max_iterations, seed=params.seed, device=ctx.device, cancel=ctx.cancel,
        matching=matching, analysis=analysis, batches=batches,
    )
    diffs = []
    for state, aligned, perms in zip(states, result.aligned, result.perms, strict=True):
        diffs.append(verify_function(module, state, aligned, example, tol=params.tolerance, spec=spec, perms=perms, seed=params.seed))
    merged = result.merged
    report: dict[str, Any] = {}
    if params.repair:
        yield Progress("repair", 0, None, message="REPAIR: resetting unit statistics of the average")
        merged, report["repair_layers"] = repair(module, spec, result.aligned, merged, [1.0 / len(states)] * len(states), data, ctx)
    elif params.reset_bn:
        merged = reset_bn(module, merged, ctx, "MergeMany")
    report = {
        "format": "merge_studio.merge_many_report",
        "arch": arch,
        "method": matching,
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
        "repair": params.repair,
        **report,
    }
    metadata = {
        "merge_studio.permutation": json.dumps({"models": report["perms"], "rounds": result.rounds, "method": matching},
                                               separators=(",", ":")),
        "merge_studio.arch": arch,
    }
    return ModelMergeOutput(state_dicts=[merged], metadata=metadata, report=report)
