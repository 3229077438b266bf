"""Tiny real checkpoints on disk for core tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file


def tiny_state(seed: int, *, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A small MLP-with-BatchNorm state dict; different seeds give different weights."""
    g = torch.Generator().manual_seed(seed)
    return {
        "layers.0.weight": torch.randn(16, 8, generator=g).to(dtype),
        "layers.0.bias": torch.randn(16, generator=g).to(dtype),
        "layers.1.weight": torch.randn(16, generator=g).to(dtype),
        "layers.1.running_mean": torch.randn(16, generator=g).to(dtype),
        "layers.1.num_batches_tracked": torch.tensor(seed, dtype=torch.int64),
        "layers.2.weight": torch.randn(4, 16, generator=g).to(dtype),
        "head.weight": torch.randn(4, generator=g).to(dtype),
    }


@pytest.fixture
def make_checkpoint(tmp_path: Path):
    """Write a state dict as .safetensors in tmp_path and return its path."""

    def make(name: str, state: dict[str, torch.Tensor] | None = None, seed: int = 0, **kw) -> Path:
        path = tmp_path / name
        save_file(state if state is not None else tiny_state(seed, **kw), str(path))
        return path

    return make
