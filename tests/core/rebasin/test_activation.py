"""Activation matching: exact recovery of a permuted copy, statistics kept per batch, attention heads."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core.progress import drive
from merge_studio.core.rebasin.activation import _SiteStats, iter_activation_matching
from merge_studio.core.rebasin.align import iter_align
from merge_studio.core.rebasin.apply import apply_permutation
from merge_studio.core.rebasin.spec import analyse_module
from merge_studio.errors import MethodError
from tests.core.rebasin.models import ARCHITECTURES, random_perms, randomize_batchnorm


def _batches(make_input, n: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(11)
    return [make_input() for _ in range(n)]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_activation_matching_finds_a_hidden_permutation_back_exactly(arch):
    torch.manual_seed(0)
    build, make_input = ARCHITECTURES[arch]
    model = randomize_batchnorm(build()).eval()
    analysis = analyse_module(model, make_input())
    state_a = model.state_dict()
    state_b = apply_permutation(analysis.spec, state_a, random_perms(analysis.spec, seed=4))
    result = drive(iter_activation_matching(analysis, state_a, state_b, _batches(make_input), device="cpu"))
    aligned = apply_permutation(analysis.spec, state_b, result.perms)
    for name, tensor in state_a.items():
        assert torch.allclose(aligned[name], tensor), name
    # nn.MultiheadAttention computes its projections inside one call: those groups fall back to their weights
    assert set(result.by_weights) == ({"attn.qk", "attn.vo"} if arch == "transformer_mha" else set())
    assert result.objective[0] > result.initial_objective  # matched units correlate better than B in its own order


def test_every_group_of_a_transformer_is_watched_including_the_residual_stream_and_heads():
    build, make_input = ARCHITECTURES["transformer"]
    analysis = analyse_module(build(), make_input())
    watched = {site.group for site in analysis.sites}
    assert watched == set(analysis.spec.names)
    assert {s.module for s in analysis.sites if s.group == "attn.vo"} == {"attn.v_proj", "attn.out_proj"}


def test_statistics_accumulated_batch_by_batch_equal_those_of_one_big_batch():
    torch.manual_seed(0)
    a, b = torch.randn(300, 5), torch.randn(300, 5)
    b[:, 2] += a[:, 0]
    whole, parts = _SiteStats(5, torch.device("cpu")), _SiteStats(5, torch.device("cpu"))
    whole.add(a, b)
    for i in range(0, 300, 70):
        parts.add(a[i : i + 70], b[i : i + 70])
    assert torch.allclose(whole.correlation(), parts.correlation(), atol=1e-6)
    reference = torch.corrcoef(torch.cat([a, b], dim=1).T)[:5, 5:].double()
    assert torch.allclose(whole.correlation(), reference, atol=1e-5)


def test_aligning_by_activations_keeps_the_function_and_says_how_it_was_found():
    torch.manual_seed(0)
    build, make_input = ARCHITECTURES["resnet"]
    a, b = randomize_batchnorm(build(), 1), randomize_batchnorm(build(), 2)
    x = make_input()
    result = drive(iter_align(a, a.state_dict(), b.state_dict(), x, method="activation", batches=_batches(make_input), device="cpu"))
    assert result.max_output_difference < 1e-9
    assert result.report["method"] == "activation" and set(result.report["correlation"]) == set(result.spec.names)


def test_activation_matching_without_data_is_refused_with_a_hint():
    build, make_input = ARCHITECTURES["mlp"]
    model = build()
    with pytest.raises(MethodError, match="needs data"):
        drive(iter_align(model, model.state_dict(), model.state_dict(), make_input(), method="activation", device="cpu"))


def test_a_program_exported_for_one_batch_size_is_fed_batches_of_that_size():
    torch.manual_seed(0)
    build, make_input = ARCHITECTURES["vgg"]
    model = randomize_batchnorm(build()).eval()
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),)).module()
    analysis = analyse_module(program, torch.randn(2, 1, 8, 8))
    state = program.state_dict()
    state_b = apply_permutation(analysis.spec, state, random_perms(analysis.spec, seed=3))
    batches = [torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    result = drive(iter_activation_matching(analysis, state, state_b, batches, device="cpu"))
    aligned = apply_permutation(analysis.spec, state_b, result.perms)
    assert all(torch.allclose(aligned[k], v) for k, v in state.items())
