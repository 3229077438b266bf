"""Parameters shared by the task-vector methods (task arithmetic, TIES, DARE, Breadcrumbs, DELLA).

Kept in one place so every method that takes λ, normalize, rescale, a sign election,
a weight or a density describes and bounds them the same way.
"""

from __future__ import annotations

from pydantic import Field

from merge_studio.core.methods.sparsify import Consensus
from merge_studio.core.methods.spec import MethodParams, ModelParams, ui


# --- fields --------------------------------------------------------------------------------
def lambda_field() -> float:
    return Field(
        1.0,
        alias="lambda",
        ge=-10.0,
        le=10.0,
        title="λ (scale)",
        description="Multiplies the combined task vector before it is added to the base; "
        "below 1 softens the merge, above 1 exaggerates it.",
        json_schema_extra=ui("slider", step=0.05),
    )


def normalize_field(default: bool) -> bool:
    return Field(
        default,
        title="Normalise",
        description=(
            "Divide the combined task vector by the total weight that contributed to each entry."
        ),
        json_schema_extra=ui("check"),
    )


DARE_RESCALE = (
    "Divide the entries DARE keeps by the density, so the task vector keeps its expected size."
)
L1_RESCALE = (
    "Scale the kept entries so the thinned task vector has the same total magnitude (L1 norm) as "
    "before thinning, as mergekit does."
)


def rescale_field(default: bool = True, description: str = DARE_RESCALE) -> bool:
    return Field(
        default,
        title="Rescale kept entries",
        description=description,
        json_schema_extra=ui("check"),
    )


def consensus_field() -> Consensus:
    return Field(
        "sum",
        title="Sign election",
        description="How each entry's sign is chosen: 'sum' follows the larger total "
        "(the TIES paper), 'count' follows the majority of models.",
        json_schema_extra=ui("combo", per_layer=False),
    )


class TaskArithmeticParams(MethodParams):
    lambda_: float = lambda_field()
    normalize: bool = normalize_field(False)


class TiesParams(MethodParams):
    lambda_: float = lambda_field()
    normalize: bool = normalize_field(True)
    consensus: Consensus = consensus_field()


class DareLinearParams(MethodParams):
    lambda_: float = lambda_field()
    normalize: bool = normalize_field(False)
    rescale: bool = rescale_field()


class DareTiesParams(MethodParams):
    lambda_: float = lambda_field()
    normalize: bool = normalize_field(False)
    rescale: bool = rescale_field()
    consensus: Consensus = consensus_field()


class TaskModelParams(ModelParams):
    weight: float = Field(
        1.0,
        ge=-10.0,
        le=10.0,
        title="Weight",
        description=(
            "How much of this model's task vector (its difference from the base) goes into the "
            "merge."
        ),
        json_schema_extra=ui("slider", step=0.05),
    )


class SparseTaskModelParams(TaskModelParams):
    density: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        title="Density",
        description=(
            "Fraction of this model's task vector to keep (1 keeps all; 0.2 to 0.5 is typical)."
        ),
        json_schema_extra=ui("slider", step=0.05),
    )
