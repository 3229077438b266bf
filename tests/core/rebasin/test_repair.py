"""REPAIR: after interpolating, every hidden unit's mean and spread are those of the endpoints, interpolated."""

from __future__ import annotations

import torch
from torch import nn

from merge_studio.core.evaluate.loop import reset_batchnorm
from merge_studio.core.evaluate.data import TensorSplit
from merge_studio.core.rebasin.align import interpolate_states
from merge_studio.core.rebasin.repair import Repairer, layer_statistics, repair_layers
from merge_studio.core.rebasin.spec import spec_from_module
from tests.core.rebasin.models import VGGish, mlp, randomize_batchnorm


def _pair(build, seed: int = 0):
    torch.manual_seed(seed)
    return build().eval(), build().eval()


def test_repair_gives_each_hidden_unit_the_interpolated_mean_and_spread_of_the_endpoints():
    a, b = _pair(mlp)
    x = [torch.randn(400, 8, generator=torch.Generator().manual_seed(1))]
    spec = spec_from_module(a, x[0][:2])
    layers = repair_layers(a, spec)
    assert [layer.name for layer in layers] == ["0", "2"]  # the hidden layers, not the output layer
    alpha = 0.3
    repairer = Repairer(a, spec, [a.state_dict(), b.state_dict()], x)
    merged = repairer.repaired_state(a, interpolate_states(a.state_dict(), b.state_dict(), alpha), (1 - alpha, alpha))
    model = mlp().eval()
    model.load_state_dict(merged)
    got = layer_statistics(model, layers, x, torch.device("cpu"))
    for layer in layers:
        (ma, sa), (mb, sb) = repairer.stats[0][layer.name], repairer.stats[1][layer.name]
        mean, std = got[layer.name]
        assert torch.allclose(mean, (1 - alpha) * ma + alpha * mb, atol=1e-4)
        assert torch.allclose(std, (1 - alpha) * sa + alpha * sb, atol=1e-3)


def test_a_repaired_merge_is_a_plain_state_dict_of_the_same_architecture():
    a, b = _pair(mlp)
    x = [torch.randn(64, 8)]
    spec = spec_from_module(a, x[0][:2])
    merged = interpolate_states(a.state_dict(), b.state_dict(), 0.5)
    repaired = Repairer(a, spec, [a.state_dict(), b.state_dict()], x).repaired_state(a, merged, (0.5, 0.5))
    assert {k: v.shape for k, v in repaired.items()} == {k: v.shape for k, v in merged.items()}
    assert not torch.equal(repaired["0.weight"], merged["0.weight"])  # folded into the layer itself
    assert torch.equal(repaired["4.weight"], merged["4.weight"])  # the output layer is left alone


def test_batchnorm_statistics_are_re_estimated_as_part_of_repair():
    a, b = randomize_batchnorm(VGGish(), 1).eval(), randomize_batchnorm(VGGish(), 2).eval()
    x = torch.randn(128, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    spec = spec_from_module(a, x[:2])
    merged = interpolate_states(a.state_dict(), b.state_dict(), 0.5)
    repaired = Repairer(a, spec, [a.state_dict(), b.state_dict()], [x]).repaired_state(a, merged, (0.5, 0.5))
    reference = VGGish()
    reference.load_state_dict(merged)
    reset_batchnorm(reference, TensorSplit(x, torch.zeros(len(x))), device="cpu", batch_size=len(x))
    bn = next(n for n, m in reference.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.allclose(repaired[f"{bn}.running_var"], reference.state_dict()[f"{bn}.running_var"], atol=1e-5)
