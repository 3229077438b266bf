"""Re-basin as merge methods: ``weight_matching``, ``activation_matching``, ``rebasin_auto`` (two
models) and ``merge_many`` (N models).

Declared like every other method, so recipes, ``--param``, the GUI form and the
docs come from the pydantic parameters below. All are whole-model jobs: they build
the architecture from ``ctx.arch`` (or the checkpoints' recorded one); the jobs
live in :mod:`merge_studio.core.rebasin.method_jobs`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Literal

from pydantic import Field

from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import MethodParams, MethodSpec, ModelJobContext, ModelMergeOutput, NoModelParams, ui
from merge_studio.core.progress import Progress

# Equal to rebasin.align.DEFAULT_TOLERANCE; repeated so declaring these methods
# (done when the window lists methods) does not import the re-basin machinery.
DEFAULT_TOLERANCE = 1e-6


def _alpha() -> Any:
    return Field(
        0.5, ge=0.0, le=1.0, title="α (towards aligned B)",
        description="After aligning B to A: 0 gives A, 1 gives the aligned B, 0.5 their midpoint.",
        json_schema_extra=ui("slider", step=0.05, per_layer=False),
    )


def _seed(what: str) -> Any:
    return Field(0, ge=0, title="Seed", description=what, json_schema_extra=ui("seed", per_layer=False))


def _tolerance(what: str) -> Any:
    return Field(
        DEFAULT_TOLERANCE, gt=0.0, le=1.0, title="Tolerance", description=what,
        json_schema_extra=ui("spin", decimals=9, per_layer=False),
    )


def _reset_bn(what: str) -> Any:
    return Field(False, title="Re-estimate BatchNorm statistics", description=what, json_schema_extra=ui("check", per_layer=False))


def _repair(default: bool) -> Any:
    return Field(
        default, title="REPAIR",
        description="After interpolating, reset every hidden unit's mean and spread to the interpolation of the models' "
        "(Jordan et al. 2023), folded into the layers' weights and biases; BatchNorm statistics are re-estimated. "
        "Needs data.",
        json_schema_extra=ui("check", per_layer=False),
    )


def _examples() -> Any:
    return Field(
        2000, ge=2, le=1_000_000, title="Examples",
        description="Training examples of the data both models are run on to compare their activations.",
        json_schema_extra=ui("spin", per_layer=False),
    )


def _max_sweeps() -> Any:
    return Field(
        100, ge=1, le=10000, title="Max sweeps",
        description="Stop coordinate descent after this many passes over the groups, even if it still improves.",
        json_schema_extra=ui("spin", per_layer=False),
    )


def _restarts() -> Any:
    return Field(
        0, ge=0, le=100, title="Restarts",
        description="Run the descent from this many seeds (seed, seed+1, ...) and keep the best match; "
        "helps narrow residual networks, costs time proportionally. 0: automatic (8 for models with "
        "at most 1024 hidden units to permute, else 1).",
        json_schema_extra=ui("spin", per_layer=False),
    )


CHECK = "Largest relative output change of B allowed after permuting (checked in float64); above it the merge fails."


class WeightMatchingParams(MethodParams):
    alpha: float = _alpha()
    max_sweeps: int = _max_sweeps()
    seed: int = _seed("Order in which groups are visited.")
    restarts: int = _restarts()
    tolerance: float = _tolerance(CHECK)
    reset_bn: bool = _reset_bn("Recompute BatchNorm running statistics of the result on the evaluation data (needs data).")
    repair: bool = _repair(False)


class ActivationMatchingParams(MethodParams):
    alpha: float = _alpha()
    examples: int = _examples()
    seed: int = _seed("Recorded with the result (activation matching itself is deterministic).")
    tolerance: float = _tolerance(CHECK)
    repair: bool = _repair(True)
    reset_bn: bool = _reset_bn("Without REPAIR: recompute BatchNorm running statistics of the result on the evaluation data.")


class AutoAlignmentParams(MethodParams):
    alpha: float = _alpha()
    examples: int = _examples()
    max_sweeps: int = _max_sweeps()
    seed: int = _seed("Order in which weight matching visits the groups.")
    restarts: int = _restarts()
    tolerance: float = _tolerance(CHECK)
    repair: bool = _repair(True)
    reset_bn: bool = _reset_bn("Without REPAIR: recompute BatchNorm running statistics of the result on the evaluation data.")


class MergeManyParams(MethodParams):
    matching: Literal["weight", "activation"] = Field(
        "weight", title="Matching",
        description="Align each model to the others by their weights, or by their activations on the data.",
        json_schema_extra=ui("combo", per_layer=False),
    )
    max_iterations: int = Field(
        100, ge=1, le=10000, title="Max rounds",
        description="Stop after this many rounds of aligning each model to the others' average.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    seed: int = _seed("Order of models and groups.")
    examples: int = _examples()
    tolerance: float = _tolerance("Largest relative output change allowed for each permuted model (checked in float64).")
    reset_bn: bool = _reset_bn("Recompute BatchNorm running statistics of the average on the evaluation data (needs data).")
    repair: bool = _repair(False)


def weight_matching_merge(
    checkpoints: Sequence[Any], base: Any, params: WeightMatchingParams, model_params: Sequence[NoModelParams], ctx: ModelJobContext
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align B to A by weight matching, then interpolate (1 − α)·A + α·π(B)."""
    from merge_studio.core.rebasin.method_jobs import two_model_merge

    return (yield from two_model_merge(checkpoints, params, ctx, choose="weight", label="Weight matching"))


def activation_matching_merge(
    checkpoints: Sequence[Any], base: Any, params: ActivationMatchingParams, model_params: Sequence[NoModelParams],
    ctx: ModelJobContext,
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align B to A by activation matching on the data, then interpolate (1 − α)·A + α·π(B)."""
    from merge_studio.core.rebasin.method_jobs import two_model_merge

    return (yield from two_model_merge(checkpoints, params, ctx, choose="activation", label="Activation matching"))


def auto_alignment_merge(
    checkpoints: Sequence[Any], base: Any, params: AutoAlignmentParams, model_params: Sequence[NoModelParams],
    ctx: ModelJobContext,
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align B to A by both methods, keep the one whose midpoint has the lower loss, then interpolate."""
    from merge_studio.core.rebasin.method_jobs import two_model_merge

    return (yield from two_model_merge(checkpoints, params, ctx, choose="auto", label="Re-basin (auto)"))


def merge_many_merge(
    checkpoints: Sequence[Any], base: Any, params: MergeManyParams, model_params: Sequence[NoModelParams], ctx: ModelJobContext
) -> Generator[Progress, None, ModelMergeOutput]:
    """Align every model to the others in turns, then average (Ainsworth et al., Algorithm 3)."""
    from merge_studio.core.rebasin import method_jobs

    return (yield from method_jobs.merge_many_merge(checkpoints, base, params, model_params, ctx))


SPEC_NOTE = ("Groups of units that must move together come from the traced graph (residual adds, BatchNorm "
             "statistics, attention heads). The permuted B is checked to compute the same outputs before merging; "
             "parts the spec could not follow keep their order and are listed in the report.")
REFERENCE = "Ainsworth, Hayase & Srinivasa 2023, Git Re-Basin (arXiv:2209.04836)"
REPAIR_REFERENCE = "Jordan et al. 2023, REPAIR (ICLR, arXiv:2211.08403)"

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
        reference=f"{REFERENCE}, Algorithm 1; {REPAIR_REFERENCE}",
        details=SPEC_NOTE + " Works best on models trained with weight decay; otherwise try activation matching.",
    )
)
register_method(
    MethodSpec(
        name="activation_matching",
        label="Activation matching (Git Re-Basin)",
        family="Re-basin",
        description="Permute B's hidden units so its activations on the data correlate best with A's, then interpolate.",
        params=ActivationMatchingParams,
        merge_model=activation_matching_merge,
        n_models=(2, 2),
        needs_arch=True,
        needs_data=True,
        reference=f"{REFERENCE}, §3.1; {REPAIR_REFERENCE}",
        details=SPEC_NOTE + " Correlations are accumulated batch by batch at every place the graph shows a group's "
        "units (layer outputs, residual streams, attention projections).",
    )
)
register_method(
    MethodSpec(
        name="rebasin_auto",
        label="Re-basin, best alignment (auto)",
        family="Re-basin",
        description="Align B by weight matching and by activation matching, keep the one whose merge has the lower "
        "loss on the data, then interpolate.",
        params=AutoAlignmentParams,
        merge_model=auto_alignment_merge,
        n_models=(2, 2),
        needs_arch=True,
        needs_data=True,
        reference=f"{REFERENCE}; {REPAIR_REFERENCE}",
        details=SPEC_NOTE + " The report names the alignment kept, both midpoint losses, and how much the two "
        "alignments agree in each group.",
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
        reference=f"{REFERENCE}, Algorithm 3",
        details="BatchNorm models usually need their statistics re-estimated after averaging (reset_bn), or REPAIR.",
    )
)
