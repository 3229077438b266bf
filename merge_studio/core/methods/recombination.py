"""Model recombination: N models in, N new models out, each module taken whole from one input."""

from __future__ import annotations

import zlib
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


class RecombinationParams(MethodParams):
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        title="Seed",
        description=(
            "Chooses the shuffle; the same seed and models always give the same new models."
        ),
        json_schema_extra=ui("seed", per_layer=False),
    )


def module_of(name: str) -> str:
    """A tensor's module: its name without the last part (``a.0.fc.weight`` -> ``a.0.fc``)."""
    return name.rpartition(".")[0]


def module_permutation(module: str, n_models: int, seed: int) -> list[int]:
    """Which input model each output model takes ``module`` from.

    Seeded by crc32 of the seed and the module name (stable across runs and
    Python processes, unlike ``hash``), so it depends on neither the order in
    which tensors are merged nor the device.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(zlib.crc32(f"{seed}:{module}".encode()))
    return torch.randperm(n_models, generator=generator).tolist()


def model_recombination(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    params: RecombinationParams,
    model_params: Sequence[NoModelParams],
    ctx: TensorContext,
) -> list[torch.Tensor]:
    """Output model j gets this tensor from input model ``perm[j]`` (returned as is, not copied)."""
    order = module_permutation(module_of(ctx.name), len(tensors), params.seed)
    return [tensors[i] for i in order]


register_method(
    MethodSpec(
        name="model_recombination",
        label="Model recombination",
        family="Recombination",
        description=(
            "Shuffle whole modules between the models to make as many new models as there are "
            "inputs."
        ),
        params=RecombinationParams,
        merge=model_recombination,
        n_models=(2, None),
        elementwise=True,
        outputs="per_model",
        reference=(
            "Hu et al. 2023, FedMR: federated learning via model recombination "
            "(arXiv:2305.10730); Tang et al. 2024, FusionBench (arXiv:2406.03280)"
        ),
        details=(
            "For every module (a tensor name without its last part, so a layer's weight and bias "
            "move together), a seeded shuffle decides which input model each output model takes it"
            " from; every input module appears in exactly one output. Nothing is averaged, so each"
            " output is a patchwork of intact layers. Use it to explore combinations of models "
            "trained from one initialisation (as in federated learning) or to build diverse models"
            " for an ensemble. The shuffle depends only on the seed and the module name. "
            "FusionBench shuffles the layers of a module list with Python's random generator; here"
            " every named module is shuffled and the draw is reproducible from the seed alone."
        ),
    )
)
