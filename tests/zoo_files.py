"""Checkpoints of zoo architectures written for tests, each carrying its architecture in its metadata."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

SMALL_MLP = "zoo:mlp?hidden=16"


def write_zoo_models(folder: Path, spec: str = SMALL_MLP, seeds: Sequence[int] = (0, 1), stem: str = "mlp") -> list[Path]:
    """``stem{seed}.safetensors`` for each seed: the zoo model built from that seed, its spec in the metadata."""
    from merge_studio.core.arch import arch_metadata, build_module

    paths = []
    for seed in seeds:
        torch.manual_seed(seed)
        path = Path(folder) / f"{stem}{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in build_module(spec).state_dict().items()}, str(path),
                  metadata=arch_metadata(spec))
        paths.append(path)
    return paths
