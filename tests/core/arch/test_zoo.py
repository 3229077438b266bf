"""The built-in zoo builds, runs, binds strictly and is recognised from a state dict."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.arch import ZOO, arch_metadata, build_module, detect_arch, example_input
from merge_studio.core.arch.layers import SelfAttention
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.errors import ArchitectureError

SMALL = {
    "mlp": "zoo:mlp?hidden=32,32",
    "vgg": "zoo:vgg?widths=8,16",
    "resnet20": "zoo:resnet20",
    "vit": "zoo:vit?dim=32",
    "gpt": "zoo:gpt?d_model=32&n_layer=1",
}


def test_every_zoo_entry_has_a_description_and_a_small_test_spelling():
    assert set(ZOO) == set(SMALL)
    assert all(entry.description for entry in ZOO.values())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zoo_model_runs_on_its_example_input(name):
    model = build_module(SMALL[name]).eval()
    out = model(example_input(SMALL[name], batch_size=3))
    expected_last = 64 if name == "gpt" else 10  # gpt: vocab logits per token
    assert out.shape[0] == 3 and out.shape[-1] == expected_last


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zoo_models_are_deterministic_given_the_seed(name):
    torch.manual_seed(7)
    first = build_module(SMALL[name]).state_dict()
    torch.manual_seed(7)
    second = build_module(SMALL[name]).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zoo_state_dict_is_recognised_with_its_arguments(name):
    state = build_module(SMALL[name]).state_dict()
    spec = detect_arch(state)
    assert spec is not None and spec.startswith(f"zoo:{name}")
    rebuilt = build_module(spec, state)
    assert rebuilt.state_dict().keys() == state.keys()


def test_resnet_width_is_inferred_from_shapes():
    state = build_module("zoo:resnet20?width=2").state_dict()
    assert detect_arch(state).startswith("zoo:resnet20?width=2&")


def test_metadata_wins_over_recognition(tmp_path):
    model = build_module("zoo:gpt?d_model=32&n_layer=1&n_head=8")
    path = tmp_path / "gpt.safetensors"
    save_file(model.state_dict(), path, metadata=arch_metadata("zoo:gpt?d_model=32&n_layer=1&n_head=8"))
    with open_checkpoint(path) as ckpt:
        assert detect_arch(ckpt) == "zoo:gpt?d_model=32&n_layer=1&n_head=8"


def test_unknown_state_dict_has_no_architecture():
    assert detect_arch({"encoder.weight": torch.zeros(3, 3)}) is None


def test_binding_the_wrong_width_names_the_mismatched_keys():
    state = build_module("zoo:resnet20").state_dict()
    with pytest.raises(ArchitectureError) as info:
        build_module("zoo:resnet20?width=2", state)
    assert "conv1.weight (checkpoint (16, 1, 3, 3), model (32, 1, 3, 3))" in str(info.value)


def test_binding_names_missing_and_unexpected_keys():
    state = build_module("zoo:mlp?hidden=8").state_dict()
    state["extra.weight"] = state.pop("head.bias")
    with pytest.raises(ArchitectureError) as info:
        build_module("zoo:mlp?hidden=8", state)
    message = str(info.value)
    assert "missing from the checkpoint: head.bias" in message
    assert "not in the model: extra.weight" in message


def test_binding_loads_the_values():
    source = build_module("zoo:vgg?widths=8")
    target = build_module("zoo:vgg?widths=8", source.state_dict())
    assert torch.equal(target.head.weight, source.head.weight)


def test_meta_device_build_allocates_nothing_and_can_be_bound():
    state = build_module("zoo:mlp?hidden=8").state_dict()
    model = build_module("zoo:mlp?hidden=8", device="meta")
    assert all(p.is_meta for p in model.parameters())
    bound = build_module("zoo:mlp?hidden=8", state, device="meta")
    assert torch.equal(bound.head.weight, state["head.weight"])


def test_unknown_zoo_name_and_argument_list_the_choices():
    with pytest.raises(ArchitectureError, match="resnet20"):
        build_module("zoo:resnet18")
    with pytest.raises(ArchitectureError, match="width=1"):
        build_module("zoo:resnet20?depth=3")


def test_attention_is_split_into_named_projections_for_rebasin():
    model = build_module("zoo:gpt?d_model=32&n_layer=1")
    attn = model.blocks[0].attn
    assert isinstance(attn, SelfAttention) and attn.n_heads == 4
    assert {"q_proj", "k_proj", "v_proj", "out_proj"} <= {n for n, _ in attn.named_children()}
    assert isinstance(build_module("zoo:vit?dim=32").blocks[0].attn, SelfAttention)
    assert hasattr(model.blocks[0].mlp, "fc1") and hasattr(model.blocks[0].mlp, "fc2")


def test_resnet_uses_projection_shortcuts_only_where_shapes_change():
    model = build_module("zoo:resnet20")
    assert isinstance(model.layer1[0].shortcut, torch.nn.Identity)
    assert isinstance(model.layer2[0].shortcut, torch.nn.Sequential)
    assert isinstance(model.layer2[1].shortcut, torch.nn.Identity)


def test_tied_gpt_shares_its_embedding_with_the_head():
    model = build_module("zoo:gpt?d_model=32&n_layer=1&tied=true")
    assert model.lm_head.weight is model.tok_emb.weight
