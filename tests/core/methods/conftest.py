"""Small helpers for calling tensor functions the way the engine does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from merge_studio.core.methods import TensorContext, get_method


def make_ctx(name: str = "blocks.0.fc.weight", shape: tuple[int, ...] = (), **kw: Any) -> TensorContext:
    return TensorContext(name=name, shape=tuple(shape), **kw)


def call_method(
    method: str,
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    params: dict[str, Any] | None = None,
    model_params: Sequence[dict[str, Any]] | None = None,
    ctx: TensorContext | None = None,
) -> Any:
    """Validate the parameters through the method's own models, then call its tensor function."""
    spec = get_method(method)
    mps = model_params if model_params is not None else [{} for _ in tensors]
    return spec.merge(
        list(tensors),
        base,
        spec.params.model_validate(params or {}),
        [spec.model_params.model_validate(mp) for mp in mps],
        ctx if ctx is not None else make_ctx(shape=tuple(tensors[0].shape)),
    )


@pytest.fixture
def randn() -> Callable[..., torch.Tensor]:
    """Seeded float32 random tensors: ``randn(3, 4, seed=1)``."""

    def make(*shape: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))

    return make
