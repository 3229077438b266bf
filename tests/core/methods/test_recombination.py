"""Model recombination: every output model is a patchwork of whole modules from the inputs."""

from __future__ import annotations

import torch

from merge_studio.core.methods.recombination import module_of, module_permutation
from tests.core.methods.conftest import call_method, make_ctx

N_MODELS = 4
NAMES = [f"blocks.{i}.{part}.{kind}" for i in range(6) for part in ("attn", "mlp") for kind in ("weight", "bias")]


def _tagged(n: int = N_MODELS) -> list[torch.Tensor]:
    """Input model i's tensor is filled with i, so the output says where it came from."""
    return [torch.full((3, 2), float(i)) for i in range(n)]


def _sources(name: str, seed: int = 0) -> list[int]:
    outs = call_method("model_recombination", _tagged(), params={"seed": seed}, ctx=make_ctx(name, (3, 2)))
    return [int(o[0, 0]) for o in outs]


def test_each_module_is_a_permutation_of_the_inputs():
    for name in NAMES:
        outs = call_method("model_recombination", _tagged(), ctx=make_ctx(name, (3, 2)))
        assert len(outs) == N_MODELS
        assert sorted(int(o[0, 0]) for o in outs) == list(range(N_MODELS))
        assert all(torch.equal(o, torch.full((3, 2), o[0, 0].item())) for o in outs)  # tensors copied whole


def test_weight_and_bias_of_a_module_come_from_the_same_model():
    for module in {module_of(n) for n in NAMES}:
        assert _sources(f"{module}.weight") == _sources(f"{module}.bias")


def test_modules_are_actually_mixed_and_the_seed_changes_the_mix():
    seed0 = [_sources(f"{m}.weight", seed=0) for m in sorted({module_of(n) for n in NAMES})]
    seed1 = [_sources(f"{m}.weight", seed=1) for m in sorted({module_of(n) for n in NAMES})]
    assert any(p != list(range(N_MODELS)) for p in seed0)
    assert len({tuple(p) for p in seed0}) > 1  # not one shuffle applied to every module
    assert seed0 != seed1


def test_the_shuffle_does_not_depend_on_merge_order():
    forward = {n: _sources(n, seed=5) for n in NAMES}
    backward = {n: _sources(n, seed=5) for n in reversed(NAMES)}
    assert forward == backward
    assert module_permutation("blocks.0.attn", 4, 5) == module_permutation("blocks.0.attn", 4, 5)


def test_module_is_the_name_without_its_last_part():
    assert module_of("model.layers.3.mlp.down_proj.weight") == "model.layers.3.mlp.down_proj"
    assert module_of("bias") == ""
