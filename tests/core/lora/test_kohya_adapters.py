"""kohya-style LoRA files (lora_down / lora_up / alpha) on Stable Diffusion single-file checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.errors import CheckpointError, IncompatibleCheckpointsError
from tests.sd_models import make_sd_checkpoint, make_sd_state

U = "model.diffusion_model."
# kohya names as trainers write them -> the checkpoint tensor (and rows) they adapt, written out by hand.
SD1_NAMES = {
    "lora_unet_down_blocks_0_attentions_0_proj_in": (U + "input_blocks.1.1.proj_in.weight", None),
    "lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k": (
        U + "input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight", None),
    "lora_unet_mid_block_attentions_0_proj_out": (U + "middle_block.1.proj_out.weight", None),
    "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2": (
        U + "output_blocks.3.1.transformer_blocks.0.ff.net.2.weight", None),
    "lora_unet_up_blocks_3_attentions_2_proj_in": (U + "output_blocks.11.1.proj_in.weight", None),
    "lora_unet_down_blocks_2_resnets_1_conv1": (U + "input_blocks.8.0.in_layers.2.weight", None),
    "lora_unet_up_blocks_0_resnets_2_time_emb_proj": (U + "output_blocks.2.0.emb_layers.1.weight", None),
    "lora_unet_up_blocks_2_upsamplers_0_conv": (U + "output_blocks.8.2.conv.weight", None),
    "lora_te_text_model_encoder_layers_1_self_attn_q_proj": (
        "cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight", None),
}
XL_NAMES = {
    "lora_unet_input_blocks_7_1_transformer_blocks_1_attn1_to_q": (
        U + "input_blocks.7.1.transformer_blocks.1.attn1.to_q.weight", None),
    "lora_unet_output_blocks_0_1_proj_out": (U + "output_blocks.0.1.proj_out.weight", None),
    "lora_te1_text_model_encoder_layers_0_mlp_fc2": (
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc2.weight", None),
    "lora_te2_text_model_encoder_layers_1_self_attn_v_proj": (
        "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight", 2),
    "lora_te2_text_model_encoder_layers_0_mlp_fc1": (
        "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight", None),
}


def _write_kohya(path, state, names, rank=3, seed=0):
    """A LoRA file for ``names``; returns the expected adapted tensors, computed here."""
    g = torch.Generator().manual_seed(seed)
    tensors, expected = {}, {}
    for i, (lora, (key, third)) in enumerate(names.items()):
        weight = state[key]
        rows = slice(None) if third is None else slice(third * weight.shape[0] // 3, (third + 1) * weight.shape[0] // 3)
        target = weight[rows]
        out, inp = target.shape[0], target.shape[1]
        kernel = tuple(target.shape[2:])
        down = torch.randn(rank, inp, *kernel, generator=g) * 0.1
        up = torch.randn(out, rank, *([1] * len(kernel)), generator=g) * 0.1
        alpha = float(i + 1)
        tensors[f"{lora}.lora_down.weight"], tensors[f"{lora}.lora_up.weight"] = down, up
        tensors[f"{lora}.alpha"] = torch.tensor(alpha)
        delta = (up.reshape(out, rank) @ down.reshape(rank, -1)).reshape(target.shape) * (alpha / rank)
        new = expected.get(key, weight.clone())
        new[rows] += delta
        expected[key] = new
    save_file(tensors, str(path), metadata={"ss_network_dim": str(rank), "ss_sd_model_name": "v1-5.safetensors"})
    return expected


@pytest.mark.parametrize("family, names", [("sd1", SD1_NAMES), ("sdxl", XL_NAMES)])
def test_kohya_lora_applied_onto_a_single_file_checkpoint(tmp_path, family, names):
    base = make_sd_checkpoint(tmp_path / "base.safetensors", family, seed=1, compact=True)
    state = make_sd_state(family, seed=1, compact=True)
    expected = _write_kohya(tmp_path / "style.safetensors", state, names)
    ck = open_checkpoint(f"{base}+{tmp_path / 'style.safetensors'}")
    assert sorted(ck.adapted_names()) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(ck.get_tensor(key), value, rtol=0, atol=1e-6, msg=key)
    untouched = U + "input_blocks.2.0.in_layers.2.weight"
    assert torch.equal(ck.get_tensor(untouched), state[untouched])


def test_open_clip_text_encoder_of_sd2_takes_q_k_v_as_rows_of_in_proj(tmp_path):
    base = make_sd_checkpoint(tmp_path / "base.safetensors", "sd2", seed=1, compact=True)
    state = make_sd_state("sd2", seed=1, compact=True)
    names = {"lora_te_text_model_encoder_layers_1_self_attn_k_proj": (
        "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight", 1)}
    expected = _write_kohya(tmp_path / "te.safetensors", state, names)
    ck = open_checkpoint(f"{base}+{tmp_path / 'te.safetensors'}")
    key = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"
    torch.testing.assert_close(ck.get_tensor(key), expected[key], rtol=0, atol=1e-6)


def test_a_kohya_file_is_listed_as_an_adapter_with_rank_alpha_and_targets(tmp_path):
    _write_kohya(tmp_path / "style.safetensors", make_sd_state("sd1", compact=True), SD1_NAMES, rank=3)
    adapter = open_checkpoint(tmp_path / "style.safetensors").adapter
    assert adapter.format == "kohya" and adapter.ranks == [3]
    assert adapter.alphas == [float(i) for i in range(1, 10)]
    assert adapter.target_names() == ["UNet", "text encoder"]
    assert adapter.base_model == "v1-5.safetensors"


def test_a_kohya_lora_for_another_family_names_what_does_not_fit(tmp_path):
    base = make_sd_checkpoint(tmp_path / "xl.safetensors", "sdxl", seed=1, compact=True)
    _write_kohya(tmp_path / "sd1.safetensors", make_sd_state("sd1", compact=True), SD1_NAMES)
    with pytest.raises(IncompatibleCheckpointsError, match="lora_unet_down_blocks_0_attentions_0_proj_in"):
        open_checkpoint(f"{base}+{tmp_path / 'sd1.safetensors'}")


def test_lycoris_files_are_named_as_such_instead_of_misread(tmp_path):
    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2), "lora_unet_x.hada_w1_b": torch.zeros(2, 2)},
              str(tmp_path / "loha.safetensors"))
    with pytest.raises(CheckpointError, match="LyCORIS"):
        open_checkpoint(tmp_path / "loha.safetensors")


@pytest.mark.parametrize(("alpha", "message"), [(torch.tensor([]), "alpha is one number"),
                                                (torch.tensor(float("nan")), "not a finite number")])
def test_a_damaged_alpha_is_refused_by_name(tmp_path, alpha, message):
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4), "lora_unet_x.lora_up.weight": torch.zeros(3, 2),
               "lora_unet_x.alpha": alpha}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(tmp_path / "bad.safetensors")


def test_down_and_up_matrices_of_different_ranks_are_refused_naming_both(tmp_path):
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4), "lora_unet_x.lora_up.weight": torch.zeros(3, 5)},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"lora_unet_x.lora_down.weight \(2, 4\) and lora_unet_x.lora_up.weight \(3, 5\)"):
        open_checkpoint(tmp_path / "bad.safetensors")
