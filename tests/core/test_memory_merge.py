"""A recipe merged into memory: the same tensors as the file it would write, and nothing on disk."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_studio.core.engine import run_merge
from merge_studio.core.memory_merge import check_fits_in_memory, iter_memory_merge
from merge_studio.core.progress import drive
from merge_studio.core.recipe import Recipe
from merge_studio.errors import OutputError


@pytest.fixture
def three(tmp_path):
    paths = []
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        state = {"fc.weight": torch.randn(300, 200, generator=g).bfloat16(), "fc.bias": torch.randn(7, generator=g),
                 "empty": torch.zeros(0), "none": torch.zeros(2, 0)}
        save_file(state, str(tmp_path / f"m{i}.safetensors"))
        paths.append(tmp_path / f"m{i}.safetensors")
    return paths


@pytest.mark.parametrize(("method", "params", "count"), [
    ("simple_average", {}, 3), ("ties", {"density": 0.5}, 3), ("slerp", {"t": 0.3}, 2),
    ("weighted_average", {"normalize": True}, 3),
])
def test_the_merge_in_memory_is_bit_identical_to_the_file_it_would_write(three, tmp_path, method, params, count):
    out = tmp_path / "out.safetensors"
    recipe = Recipe(method=method, models=[{"path": str(p)} for p in three[:count]], params=params, output=str(out),
                    base=str(three[0]) if method == "ties" else None, hash_sources=False)
    run_merge(recipe)
    before = sorted(p.name for p in tmp_path.iterdir())
    memory = drive(iter_memory_merge(recipe))
    written = load_file(str(out))
    assert set(memory.state_dict) == set(written)
    for name, tensor in written.items():
        assert memory.state_dict[name].dtype == tensor.dtype and memory.state_dict[name].shape == tensor.shape
        assert torch.equal(memory.state_dict[name], tensor), name
    assert memory.metadata["merge_studio.method"] == method
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_a_merge_larger_than_the_free_memory_is_refused_with_both_figures(three, tmp_path):
    recipe = Recipe(method="simple_average", models=[{"path": str(p)} for p in three], output=str(tmp_path / "o"))
    with pytest.raises(OutputError, match=r"does not fit in the free memory \(0\.00 GB\)"):
        check_fits_in_memory(recipe, free=1000)
    assert check_fits_in_memory(recipe, free=10**12) > 120_000
