"""Task-vector methods: task arithmetic, TIES, DARE (linear and TIES), mergekit's definitions.

All four share one recipe (mergekit's "generalized task arithmetic"): take each
model's task vector τᵢ = θᵢ − base, thin it (TIES: keep the largest magnitudes;
DARE: drop at random and rescale), weight it, optionally keep only the entries
that agree with an elected sign, sum, optionally divide by the weight that
contributed, scale by λ and add back to the base. Every method here is
element-wise, so the engine can stream huge tensors through it in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

from merge_studio.core import kernels
from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.sparsify import (
    Thinner,
    delta_magnitude_threshold,
    keep_mask_array,
    magnitude_threshold,
    merge_task_vectors,
    random_drop_,
    task_vector,
    trim_below_,
)
from merge_studio.core.methods.spec import MethodSpec, TensorContext, fused_outputs
from merge_studio.core.methods.task_params import (
    DareLinearParams,
    DareTiesParams,
    SparseTaskModelParams,
    TaskArithmeticParams,
    TaskModelParams,
    TiesParams,
)
from merge_studio.errors import MethodError


# --- the shared computation --------------------------------------------------------------------
def _require_base(base: torch.Tensor | None, ctx: TensorContext, label: str) -> torch.Tensor:
    if base is None:
        raise MethodError(
            f"{label} needs a base model for {ctx.name}", hint="mark one model as the base"
        )
    return base


def _magnitude_thinner(
    tensors: Sequence[torch.Tensor],
    model_params: Sequence[SparseTaskModelParams],
    ctx: TensorContext,
) -> Thinner:
    """TIES trim: thresholds from ``ctx.stats`` (whole-tensor statistics), or computed
    here when the whole tensor was passed."""
    if not ctx.stats and ctx.chunk is not None:
        raise MethodError(
            f"TIES was given a chunk of {ctx.name} without its magnitude thresholds",
            hint="compute ties_statistics on the whole tensor and pass them as ctx.stats",
        )
    if ctx.stats and len(ctx.stats) != len(tensors):
        raise MethodError(
            f"TIES got {len(ctx.stats)} thresholds for {len(tensors)} models on {ctx.name}"
        )

    def thin(i: int, delta: torch.Tensor) -> float:
        if ctx.stats:
            threshold = float(ctx.stats[i])
        else:
            threshold = magnitude_threshold(delta, model_params[i].density)
        trim_below_(delta, threshold)
        return 1.0

    return thin


def _random_thinner(
    model_params: Sequence[SparseTaskModelParams], ctx: TensorContext, rescale: bool
) -> Thinner:
    """DARE drop: one generator per call (seeded by the recipe seed, tensor name and
    chunk), drawn model by model."""
    generator = ctx.generator()

    def thin(i: int, delta: torch.Tensor) -> float:
        density = model_params[i].density
        random_drop_(delta, density, generator, rescale=rescale)
        return 1.0 / density if rescale and density < 1.0 else 1.0

    return thin


# --- the tensor functions ----------------------------------------------------------------------
def task_arithmetic(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[TaskModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    base = _require_base(base, ctx, "Task arithmetic")
    weights = [mp.weight for mp in model_params]
    return merge_task_vectors(
        tensors, base, weights, ctx, lambda_=params.lambda_, normalize=params.normalize
    )


def task_arithmetic_fused(
    stored: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TaskArithmeticParams,
    model_params: Sequence[TaskModelParams],
    ctx: TensorContext,
    out_dtype: torch.dtype,
) -> list[torch.Tensor] | None:
    """Task arithmetic of one chunk by the compiled kernel, when there is one and it takes these tensors."""
    if base is None or not kernels.available() or len(model_params) != len(stored):
        return None  # the torch path explains what is missing
    found = kernels.task_sum_chunk(
        list(stored), base, [mp.weight for mp in model_params], lambda_=params.lambda_,
        normalize=params.normalize, out_dtype=out_dtype, want_metrics=ctx.wants_metrics, wait=False,
    )
    return fused_outputs(found, ctx)


def ties_statistics(
    tensor: torch.Tensor,
    base: torch.Tensor | None,
    params: TiesParams,
    model_params: SparseTaskModelParams,
    ctx: TensorContext,
) -> float:
    """The magnitude below which this model's task vector is trimmed (needs the whole tensor).

    Accepts tensors as stored (e.g. bfloat16): the task vector is made in float32 a block at a time.
    """
    base = _require_base(base, ctx, "TIES")
    return delta_magnitude_threshold(tensor, base, model_params.density)


def ties(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TiesParams,
    model_params: Sequence[SparseTaskModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    base = _require_base(base, ctx, "TIES")
    return merge_task_vectors(
        tensors,
        base,
        [mp.weight for mp in model_params],
        ctx,
        lambda_=params.lambda_,
        normalize=params.normalize,
        consensus=params.consensus,
        thin=_magnitude_thinner(tensors, model_params, ctx),
    )


def ties_fused(
    stored: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: TiesParams,
    model_params: Sequence[SparseTaskModelParams],
    ctx: TensorContext,
    out_dtype: torch.dtype,
) -> list[torch.Tensor] | None:
    """TIES of one chunk by the compiled kernel, when there is one and it takes these tensors."""
    if base is None or not kernels.available() or len(ctx.stats) != len(stored):
        return None  # the torch path explains what is missing
    found = kernels.ties_chunk(
        list(stored), base, [float(t) for t in ctx.stats], [mp.weight for mp in model_params],
        lambda_=params.lambda_, normalize=params.normalize, count_consensus=params.consensus == "count",
        out_dtype=out_dtype, want_metrics=ctx.wants_metrics, wait=False,
    )
    return fused_outputs(found, ctx)


def dare_ties_fused(
    stored: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DareTiesParams,
    model_params: Sequence[SparseTaskModelParams],
    ctx: TensorContext,
    out_dtype: torch.dtype,
) -> list[torch.Tensor] | None:
    """DARE-TIES of one chunk by the compiled kernel: the keep masks are drawn here, from the
    same generator in the same order as ``_random_thinner`` draws them, and applied there."""
    if base is None or not kernels.available() or len(model_params) != len(stored) or kernels.kernel_inputs(
        [*stored, base]
    ) is None:
        return None
    generator = ctx.generator()
    n = base.numel()
    drops = [
        None if mp.density >= 1.0 else (keep_mask_array(n, mp.density, generator), mp.density, params.rescale)
        for mp in model_params
    ]
    found = kernels.ties_chunk(
        list(stored), base, [0.0] * len(stored), [mp.weight for mp in model_params],
        lambda_=params.lambda_, normalize=params.normalize, count_consensus=params.consensus == "count",
        out_dtype=out_dtype, want_metrics=ctx.wants_metrics, wait=False, drops=drops,
    )
    return fused_outputs(found, ctx)


def dare_linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DareLinearParams,
    model_params: Sequence[SparseTaskModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    base = _require_base(base, ctx, "DARE")
    return merge_task_vectors(
        tensors,
        base,
        [mp.weight for mp in model_params],
        ctx,
        lambda_=params.lambda_,
        normalize=params.normalize,
        thin=_random_thinner(model_params, ctx, params.rescale),
    )


def dare_ties(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DareTiesParams,
    model_params: Sequence[SparseTaskModelParams],
    ctx: TensorContext,
) -> torch.Tensor:
    base = _require_base(base, ctx, "DARE-TIES")
    return merge_task_vectors(
        tensors,
        base,
        [mp.weight for mp in model_params],
        ctx,
        lambda_=params.lambda_,
        normalize=params.normalize,
        consensus=params.consensus,
        thin=_random_thinner(model_params, ctx, params.rescale),
    )


# --- declarations ------------------------------------------------------------------------------
_DARE_DIFFERENCES = (
    "Deliberate differences from mergekit: rescale divides by the density (the DARE paper's rule, "
    "and mergekit's before it switched to matching the L1 norm of the whole task vector, which "
    "needs the whole tensor and gives nearly the same factor on large tensors); the random masks "
    "come from the recipe seed, the tensor name and the chunk, so a merge is reproducible but "
    "does not draw mergekit's numbers."
)
_SHARED = (
    "Weights multiply the task vectors; λ multiplies the combined vector after any "
    "normalisation. Every number and on/off switch can vary by layer."
)

register_method(
    MethodSpec(
        name="task_arithmetic",
        label="Task arithmetic",
        family="Task arithmetic",
        description=(
            "Add the weighted differences between each model and the base back onto the base."
        ),
        params=TaskArithmeticParams,
        model_params=TaskModelParams,
        merge=task_arithmetic,
        fused=task_arithmetic_fused,
        n_models=(1, None),
        base="required",
        elementwise=True,
        mergekit_name="task_arithmetic",
        reference="Ilharco et al. 2023, Editing models with task arithmetic (arXiv:2212.04089)",
        details=(
            "Each fine-tuned model's task vector τᵢ = θᵢ − base is what fine-tuning taught it. The"
            " result is base + λ·Σ wᵢτᵢ, divided by Σ wᵢ first when normalize is on (off by "
            "default, as in mergekit). Use it to add skills from several fine-tunes of one base; a"
            f" negative weight removes a behaviour. {_SHARED} Same definition as mergekit's "
            "task_arithmetic; mergekit requires a weight for every model, here it defaults to 1."
        ),
    )
)
register_method(
    MethodSpec(
        name="ties",
        label="TIES",
        family="Task arithmetic",
        description=(
            "Trim each task vector to its largest entries, elect a sign per entry, average the "
            "agreeing ones."
        ),
        params=TiesParams,
        model_params=SparseTaskModelParams,
        merge=ties,
        statistics=ties_statistics,
        statistics_on_stored=True,
        fused=ties_fused,
        n_models=(1, None),
        base="required",
        elementwise=True,
        mergekit_name="ties",
        reference=(
            "Yadav et al. 2023, TIES-Merging: resolving interference when merging models "
            "(arXiv:2306.01708)"
        ),
        details=(
            "TIES reduces interference between task vectors τᵢ = θᵢ − base. Trim: keep the "
            "fraction `density` of each τᵢ with the largest magnitude. Elect: for each entry, the "
            "sign of Σ wᵢ·τᵢ ('sum') or of the majority of models ('count'); zero counts as +. "
            "Merge: Σ wᵢτᵢ over the models whose weighted entry has the elected sign, divided by "
            "the sum of their weights (normalize, on by default), times λ, added to the base. Use "
            f"it for three or more fine-tunes that disagree. {_SHARED} Same definition as "
            "mergekit's ties (compared with mergekit 0.1.5 on the same configs), with one "
            "deliberate difference: entries whose magnitude equals the trim threshold are all "
            "kept, where mergekit keeps int(density·n) entries in the order of an unstable sort, "
            "which no other tool can reproduce. On float32 models that changes a handful of "
            "entries (1–3 in tensors of 4–65 million); bfloat16 models, whose 8-bit mantissas "
            "make equal magnitudes common, differ at more of the threshold's entries. Density "
            "defaults to 1 (no trim) as in mergekit."
        ),
    )
)
register_method(
    MethodSpec(
        name="dare_linear",
        label="DARE (linear)",
        family="Task arithmetic",
        description=(
            "Randomly drop entries of each task vector, rescale the rest, then add them like task "
            "arithmetic."
        ),
        params=DareLinearParams,
        model_params=SparseTaskModelParams,
        merge=dare_linear,
        n_models=(1, None),
        base="required",
        elementwise=True,
        mergekit_name="dare_linear",
        reference="Yu et al. 2024, Language models are Super Mario (DARE, arXiv:2311.03099)",
        details=(
            "DARE keeps each entry of τᵢ = θᵢ − base with probability `density` and divides the "
            "kept entries by the density (rescale), which keeps the expected task vector unchanged"
            " while making the vectors sparse and less likely to collide. The result is base + λ·Σ"
            f" wᵢ·DARE(τᵢ), divided by Σ wᵢ when normalize is on (off by default). {_SHARED} "
            f"{_DARE_DIFFERENCES}"
        ),
    )
)
register_method(
    MethodSpec(
        name="dare_ties",
        label="DARE-TIES",
        family="Task arithmetic",
        description=(
            "DARE's random drop and rescale, then TIES's sign election and disjoint average."
        ),
        params=DareTiesParams,
        model_params=SparseTaskModelParams,
        merge=dare_ties,
        fused=dare_ties_fused,
        n_models=(1, None),
        base="required",
        elementwise=True,
        mergekit_name="dare_ties",
        reference="Yu et al. 2024, Language models are Super Mario (DARE, arXiv:2311.03099)",
        details=(
            "Each task vector τᵢ = θᵢ − base is thinned at random as in DARE (keep with "
            "probability `density`, divide by it when rescale is on), then combined as in TIES "
            "without a magnitude trim: per entry, keep only the models whose weighted entry has "
            "the elected sign, sum them, divide by the sum of their weights when normalize is on "
            f"(off by default, as in mergekit), scale by λ and add to the base. {_SHARED} "
            f"{_DARE_DIFFERENCES}"
        ),
    )
)
