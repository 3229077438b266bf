"""Permutation specs from the traced graph: what moves together, and what is reported instead."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from merge_studio.core.rebasin.apply import apply_permutation, verify_function
from merge_studio.core.rebasin.spec import spec_from_module
from merge_studio.errors import ArchitectureError
from tests.core.rebasin.models import ARCHITECTURES, TinyResNet, TransformerBlock, VGGish, random_perms, randomize_batchnorm


def _members(spec, group_name):
    return {(m.tensor, m.axis) for m in spec.group(group_name).members}


def _group_of(spec, tensor, axis):
    return next(g for g in spec.groups if any(m.tensor == tensor and m.axis == axis for m in g.members))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_permuting_every_group_keeps_the_model_outputs(arch):
    torch.manual_seed(0)
    build, make_input = ARCHITECTURES[arch]
    model = randomize_batchnorm(build())
    x = make_input()
    spec = spec_from_module(model, x)
    assert spec.groups and not spec.unpermuted
    state = model.state_dict()
    perms = random_perms(spec, seed=1)
    permuted = apply_permutation(spec, state, perms)
    assert any(not torch.equal(permuted[k], state[k]) for k in state)
    assert verify_function(model, state, permuted, x, spec=spec, perms=perms) < 1e-10


def test_batchnorm_weights_biases_and_running_statistics_follow_their_channels():
    spec = spec_from_module(VGGish(), torch.randn(2, 1, 8, 8))
    members = _members(spec, "features.0")
    for tensor in ("weight", "bias", "running_mean", "running_var"):
        assert (f"features.1.{tensor}", 0) in members
    assert ("features.4.weight", 1) in members


def test_flatten_after_a_convolution_expands_each_channel_into_a_block():
    spec = spec_from_module(VGGish(), torch.randn(2, 1, 8, 8))
    member = next(m for m in spec.group("features.4").members if m.tensor == "classifier.0.weight")
    assert (member.axis, member.n, member.block) == (1, 10, 4)


def test_residual_additions_tie_their_operands_into_one_group():
    spec = spec_from_module(TinyResNet(), torch.randn(2, 1, 8, 8))
    stem = _group_of(spec, "conv1.weight", 0)
    tensors = {(m.tensor, m.axis) for m in stem.members}
    assert {("layer1.0.bn2.weight", 0), ("layer1.1.bn2.weight", 0), ("layer2.0.shortcut.0.weight", 1)} <= tensors
    stage2 = _group_of(spec, "layer2.0.conv2.weight", 0)
    assert ("layer2.0.shortcut.1.running_var", 0) in {(m.tensor, m.axis) for m in stage2.members}
    assert ("fc.weight", 1) in {(m.tensor, m.axis) for m in stage2.members}
    inner = _group_of(spec, "layer1.0.conv1.weight", 0)
    assert inner.name != stem.name and inner.size == 6
    assert stem.name == "residual:conv1" and stage2.name.startswith("residual:")


def test_attention_gets_a_head_permutation_shared_by_query_key_and_value_output_groups():
    spec = spec_from_module(TransformerBlock(dim=12, n_heads=3), torch.randn(2, 4, 5))
    qk, vo = spec.group("attn.qk"), spec.group("attn.vo")
    assert (qk.n_heads, qk.head_dim, qk.head_partner) == (3, 4, "attn.vo")
    assert vo.head_partner == "attn.qk"
    assert {("attn.q_proj.weight", 0), ("attn.k_proj.bias", 0)} <= _members(spec, "attn.qk")
    assert {("attn.v_proj.weight", 0), ("attn.out_proj.weight", 1)} <= _members(spec, "attn.vo")
    stream = _group_of(spec, "embed.weight", 0)
    assert {("cls_token", 2), ("pos", 2), ("ln1.weight", 0), ("head.weight", 1)} <= {(m.tensor, m.axis) for m in stream.members}


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left, self.right, self.out = nn.Linear(4, 6), nn.Linear(4, 5), nn.Linear(11, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(torch.cat([self.left(x), self.right(x)], dim=1)))


def test_concatenation_splits_the_next_layer_between_the_two_groups():
    model = Branches()
    spec = spec_from_module(model, torch.randn(2, 4))
    left = next(m for m in spec.group("left").members if m.tensor == "out.weight")
    right = next(m for m in spec.group("right").members if m.tensor == "out.weight")
    assert (left.offset, left.n, right.offset, right.n) == (0, 6, 6, 5)
    perms = random_perms(spec, 2)
    state = model.state_dict()
    assert verify_function(model, state, apply_permutation(spec, state, perms), torch.randn(2, 4)) < 1e-10


class SortsHiddenUnits(nn.Module):
    """``torch.cumsum`` over hidden units depends on their order: the spec cannot follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        h = torch.cumsum(torch.relu(self.fc2(h)), dim=1)
        return self.fc3(h)


def test_an_unknown_op_ends_the_group_and_is_reported_by_name():
    model = SortsHiddenUnits()
    spec = spec_from_module(model, torch.randn(2, 4))
    assert spec.names == ["fc1"]
    (point,) = spec.unpermuted
    assert point.node == "cumsum" and "cumsum" in point.reason
    assert set(point.tensors) == {"fc2.weight", "fc2.bias"}
    assert all(m.tensor != "fc3.weight" for g in spec.groups for m in g.members)
    state = model.state_dict()
    perms = random_perms(spec, 3)
    assert verify_function(model, state, apply_permutation(spec, state, perms), torch.randn(2, 4)) < 1e-10


class ScramblingReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 12), nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x).view(-1, 3, 4).transpose(1, 2).reshape(-1, 12)
        return self.fc2(h)


def test_a_reshape_that_is_not_a_flatten_is_reported_and_nothing_moves():
    spec = spec_from_module(ScramblingReshape(), torch.randn(2, 4))
    assert spec.groups == ()
    assert [p.node for p in spec.unpermuted] == ["view"]
    assert "fc1.weight" in spec.blocked


class TiedLanguageModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(11, 8)
        self.fc = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 11, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.wte(idx)
        return self.lm_head(h + torch.tanh(self.fc(h)))


def test_tied_embedding_and_output_weights_share_one_permutation():
    model = TiedLanguageModel()
    idx = torch.randint(0, 11, (2, 5))
    spec = spec_from_module(model, idx)
    stream = _group_of(spec, "wte.weight", 1)
    assert ("lm_head.weight", 1) in {(m.tensor, m.axis) for m in stream.members}
    state = model.state_dict()
    permuted = apply_permutation(spec, state, random_perms(spec, 4))
    assert torch.equal(permuted["wte.weight"], permuted["lm_head.weight"])
    assert verify_function(model, state, permuted, idx) < 1e-10


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else x


def test_a_model_that_cannot_be_traced_raises_an_architecture_error():
    with pytest.raises(ArchitectureError, match="cannot trace DataDependent"):
        spec_from_module(DataDependent(), torch.randn(2, 3))


class GroupedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.b(self.a(x)), 1).flatten(1))


def test_grouped_convolutions_are_reported_not_permuted():
    spec = spec_from_module(GroupedConv(), torch.randn(2, 1, 6, 6))
    assert spec.names == []
    assert spec.unpermuted[0].node == "b" and "grouped convolution" in spec.unpermuted[0].reason


def test_spec_survives_a_json_round_trip():
    from merge_studio.core.rebasin.spec import PermutationSpec

    spec = spec_from_module(SortsHiddenUnits(), torch.randn(2, 4))
    assert PermutationSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("arch", ["zoo:mlp?hidden=16,16", "zoo:vgg", "zoo:resnet20?width=1", "zoo:vit", "zoo:gpt"])
def test_zoo_models_are_permuted_everywhere_and_keep_their_function(arch):
    from merge_studio.core.arch import build_module, example_input

    torch.manual_seed(0)
    model = randomize_batchnorm(build_module(arch))
    x = example_input(arch)
    spec = spec_from_module(model, x)
    assert not spec.unpermuted and not spec.blocked
    state = model.state_dict()
    perms = random_perms(spec, 5)
    assert verify_function(model, state, apply_permutation(spec, state, perms), x, n_random=1) < 1e-9


@pytest.mark.parametrize("arch", ["mlp", "vgg", "resnet", "transformer"])
def test_exported_programs_are_read_from_their_aten_graph(arch):
    torch.manual_seed(0)
    build, make_input = ARCHITECTURES[arch]
    model = randomize_batchnorm(build()).eval()
    x = make_input()
    program = torch.export.export(model, (x,)).module()
    spec = spec_from_module(program, x)
    state = program.state_dict()
    perms = random_perms(spec, 6)
    assert verify_function(program, state, apply_permutation(spec, state, perms), x) < 1e-10
    assert not spec.unpermuted and len(spec.groups) == len(spec_from_module(model, x).groups)
    if arch == "transformer":  # attention decomposed into reshapes, matmuls and softmax is found whole again
        qk = next(g for g in spec.groups if g.name.endswith(".qk"))
        assert (qk.n_heads, qk.head_dim, qk.head_partner) == (3, 4, qk.name[:-3] + ".vo")


def test_a_pt2_architecture_file_aligns_through_its_own_program(tmp_path):
    from merge_studio.core.arch import example_input
    from merge_studio.core.rebasin.align import module_for_alignment

    torch.manual_seed(0)
    model = randomize_batchnorm(VGGish()).eval()
    path = tmp_path / "vgg.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 8, 8),)), str(path))
    program = module_for_alignment(str(path))
    x = example_input(str(path))
    spec = spec_from_module(program, x)
    assert spec.names == ["features.0", "features.4", "classifier.0"]
