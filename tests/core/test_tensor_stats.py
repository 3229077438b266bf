"""Tensor statistics for the Graph tab's properties panel: exact numbers, read one tensor at a time."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.progress import drive
from merge_studio.core.tensor_stats import iter_layer_stats, layer_tensors, tensor_stats


def test_statistics_of_a_tensor_match_torch_including_the_share_of_zeros():
    t = torch.tensor([[0.0, 1.0, -2.0], [0.0, 4.0, 3.0]])
    s = tensor_stats(t)
    assert (s.numel, s.min, s.max) == (6, -2.0, 4.0)
    assert s.mean == pytest.approx(t.mean().item())
    assert s.std == pytest.approx(t.std().item())
    assert s.norm == pytest.approx(t.norm().item())
    assert s.zeros == pytest.approx(2 / 6)


def test_a_layer_lists_its_own_tensors_before_those_of_its_submodules():
    names = ["block.sub.weight", "block.weight", "blocker.weight", "block.bias", "head.weight"]
    assert layer_tensors(names, "block") == ["block.bias", "block.weight", "block.sub.weight"]


def test_statistics_of_one_layer_are_read_from_every_model(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"m{i}.safetensors"
        save_file({"fc.weight": torch.full((2, 2), float(i + 1)), "fc.bias": torch.zeros(2)}, str(path))
        paths.append((f"m{i}", path))
    stats = drive(iter_layer_stats(paths, ["fc.weight", "fc.bias", "missing"]))
    assert set(stats) == {"m0", "m1"} and set(stats["m1"]) == {"fc.weight", "fc.bias"}
    assert stats["m1"]["fc.weight"].mean == 2.0 and stats["m0"]["fc.bias"].zeros == 1.0
    assert math.isclose(stats["m1"]["fc.weight"].norm, 4.0)
