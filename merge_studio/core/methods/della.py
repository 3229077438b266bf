"""DELLA: drop task-vector entries at random, keeping large ones more often (mergekit's definitions).

DELLA's MagPrune ranks the entries of each row of a task vector τ = θ − base by
magnitude and keeps each with a probability that rises linearly with its rank, from
density − ε for the smallest to density + ε for the largest. The kept entries are
rescaled and combined with TIES's sign election (``della``) or summed
(``della_linear``). The masks are drawn from the recipe's seed and the tensor's
name, so a merge is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from merge_studio.core.lazy_torch import torch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.sparsify import Consensus, l1_norm, l1_rescale_factor, merge_task_vectors
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

# Rows are ranked in blocks of about this many entries, so the int64 ranks of a large
# embedding never exist all at once.
_BLOCK_ELEMENTS = 1 << 22


class DellaLinearParams(MethodParams):
    lambda_: float = lambda_field()
    normalize: bool = normalize_field(False)
    rescale: bool = rescale_field(True, L1_RESCALE)


class DellaParams(DellaLinearParams):
    normalize: bool = normalize_field(True)
    consensus: Consensus = consensus_field()


class DellaModelParams(SparseTaskModelParams):
    epsilon: float = Field(
        0.15,
        ge=0.0,
        lt=1.0,
        title="ε (spread)",
        description=(
            "How far the keep probability spreads around the density: the smallest entries of a row "
            "are kept with probability density − ε, the largest with density + ε."
        ),
        json_schema_extra=ui("slider", step=0.01),
    )

    @model_validator(mode="after")
    def _probabilities_inside(self) -> DellaModelParams:
        if self.density < 1.0 and not (0.0 < self.density - self.epsilon and self.density + self.epsilon < 1.0):
            raise ValueError(
                f"density ± epsilon must lie inside (0, 1) (density {self.density}, epsilon {self.epsilon}); "
                "lower epsilon"
            )
        return self


def _row_view(delta: torch.Tensor) -> torch.Tensor:
    """The rows MagPrune ranks within: along dimension 1 (the whole vector for 1-D tensors)."""
    if delta.dim() < 2:
        return delta.reshape(1, -1)
    return delta.movedim(1, -1).reshape(-1, delta.shape[1])


def magprune_(delta: torch.Tensor, density: float, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability density − ε + 2ε·(its rank in the row)/(row length − 1), in place.

    Ranks are by magnitude within each row, smallest first. A row of one entry is kept
    with probability ``density``.
    """
    if density >= 1.0:
        return delta
    rows = _row_view(delta)
    width = rows.shape[1]
    if width == 0:
        return delta
    block = max(1, _BLOCK_ELEMENTS // width)
    kept_rows = []
    for start in range(0, rows.shape[0], block):
        part = rows[start : start + block].float()
        order = torch.argsort(part.abs(), dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(width, device=part.device).expand_as(order))
        del order
        spread = rank.to(torch.float32).div_(width - 1) if width > 1 else torch.full_like(part, 0.5)
        del rank
        probability = spread.mul_(2 * epsilon).add_(density - epsilon)
        keep = torch.bernoulli(probability, generator=generator)
        kept_rows.append(part.mul_(keep).to(delta.dtype))
    kept = torch.cat(kept_rows)
    if delta.dim() < 2:
        delta.copy_(kept.reshape(delta.shape))
    else:
        moved = list(delta.movedim(1, -1).shape)
        delta.copy_(kept.reshape(moved).movedim(-1, 1))
    return delta


def _merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: DellaLinearParams,
    model_params: Sequence[DellaModelParams],
    ctx: TensorContext,
    consensus: Consensus | None,
) -> torch.Tensor:
    if base is None:
        raise MethodError(f"DELLA needs a base model for {ctx.name}", hint="mark one model as the base")
    generator = ctx.generator()

    def thin(i: int, delta: torch.Tensor) -> float:
        mp = model_params[i]
        if mp.density >= 1.0:
            return 1.0
        total = float(l1_norm(delta)) if params.rescale else 0.0
        magprune_(delta, mp.density, mp.epsilon, generator)
        if not params.rescale:
            return 1.0
        scale = l1_rescale_factor(total, float(l1_norm(delta)))
        if scale != 1.0:
            delta.mul_(scale)
        return scale

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


def della(tensors, base, params: DellaParams, model_params, ctx) -> torch.Tensor:
    return _merge(tensors, base, params, model_params, ctx, params.consensus)


def della_linear(tensors, base, params: DellaLinearParams, model_params, ctx) -> torch.Tensor:
    return _merge(tensors, base, params, model_params, ctx, None)


_HOW = (
    "MagPrune: within each row of τᵢ = θᵢ − base (along the second dimension, as mergekit does), "
    "entries are ranked by magnitude and kept with probability from density − ε (smallest) to "
    "density + ε (largest), linearly in the rank; density ± ε must lie inside (0, 1) unless density "
    "is 1 (keep all, the default). With rescale on (the default) the kept entries are scaled so their "
    "total magnitude equals the whole task vector's."
)
_DIFFERENCES = (
    "Same definitions as mergekit's {name}, including its rescale (matching the L1 norm of the whole "
    "task vector, where the DELLA paper divides each kept entry by its own probability). The "
    "deliberate difference is the random numbers: the masks come from the recipe seed and the tensor "
    "name, so a merge is reproducible, but they are not mergekit's draws, so the tensors agree in "
    "distribution, not entry by entry. Equal magnitudes in a row are ranked in the order they "
    "appear."
)

register_method(
    MethodSpec(
        name="della",
        label="DELLA",
        family="Task arithmetic",
        description="Drop task-vector entries at random, keeping large ones more often, then TIES's sign election.",
        params=DellaParams,
        model_params=DellaModelParams,
        merge=della,
        n_models=(1, None),
        base="required",
        elementwise=False,
        mergekit_name="della",
        reference="Deep et al. 2024, DELLA-Merging: reducing interference in model merging through magnitude-based sampling (arXiv:2406.11617)",
        details=(
            f"{_HOW} The thinned vectors are combined as in TIES: per entry the sign of Σ wᵢτᵢ is elected "
            "('sum', or the majority with 'count'), the agreeing weighted entries are summed and divided "
            "by their weights' sum (normalize, on by default), scaled by λ and added to the base. Use it "
            "like DARE-TIES when the larger changes of each fine-tune matter most. Every number and "
            "on/off switch can vary by layer. " + _DIFFERENCES.format(name="della")
        ),
    )
)
register_method(
    MethodSpec(
        name="della_linear",
        label="DELLA (linear)",
        family="Task arithmetic",
        description="DELLA's magnitude-ranked random drop, then a weighted sum like task arithmetic.",
        params=DellaLinearParams,
        model_params=DellaModelParams,
        merge=della_linear,
        n_models=(1, None),
        base="required",
        elementwise=False,
        mergekit_name="della_linear",
        reference="Deep et al. 2024, DELLA-Merging: reducing interference in model merging through magnitude-based sampling (arXiv:2406.11617)",
        details=(
            f"{_HOW} The result is base + λ·Σ wᵢ·thin(τᵢ), divided by Σ wᵢ when normalize is on (off by "
            "default). Every number and on/off switch can vary by layer. "
            + _DIFFERENCES.format(name="della_linear")
        ),
    )
)
