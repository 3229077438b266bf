"""Methods compute in the dtype they are given (the recipe's compute_dtype), half precision included."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core.methods import TensorContext, get_method

STREAMED = [
    "simple_average", "weighted_average", "lerp", "slerp", "task_arithmetic", "ties",
    "dare_linear", "dare_ties", "model_stock", "model_recombination",
]
# sign elections and magnitude trims flip for entries near a boundary when rounded
DISCONTINUOUS = {"ties", "dare_ties"}


def _run(spec, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 32, generator=g)
    n = 2 if spec.n_models[1] == 2 else 3
    tensors = [(base + torch.randn(64, 32, generator=g)).to(dtype) for _ in range(n)]
    fields = spec.model_params.model_fields
    mps = [spec.model_params.model_validate({"density": 0.5} if "density" in fields else {})] * n
    result = spec.merge(
        tensors,
        base.to(dtype) if spec.base != "unused" else None,
        spec.params(),
        mps,
        TensorContext(name="blocks.0.fc.weight", shape=(64, 32)),
    )
    return result if isinstance(result, list) else [result]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", STREAMED)
def test_half_precision_inputs_give_half_precision_results_close_to_float32(name, dtype):
    spec = get_method(name)
    full, half = _run(spec, torch.float32), _run(spec, dtype)
    tol = 0.1 if dtype == torch.bfloat16 else 0.02
    for f, h in zip(full, half, strict=True):
        assert h.dtype == dtype and torch.isfinite(h).all()
        close = ((h.float() - f).abs() <= tol).float().mean().item()
        assert close >= (0.97 if name in DISCONTINUOUS else 1.0)
