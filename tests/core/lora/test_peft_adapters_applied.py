"""PEFT adapters made with the ``peft`` package, applied by us onto their base, give the
weights of peft's own ``merge_and_unload()`` (to 1e-6), read lazily through ``base+adapter``."""

from __future__ import annotations

import json

import pytest
import torch

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.engine import run_merge
from merge_studio.core.lora.apply import AdaptedCheckpoint
from merge_studio.core.recipe import Recipe
from merge_studio.errors import IncompatibleCheckpointsError

pytest.importorskip("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402

from tests.hf_models import make_hf_folder, make_hf_model  # noqa: E402


def _peft_pair(tmp_path, family: str, seed: int = 0, **lora):
    """(base folder, adapter folder, the state dict peft's merge_and_unload gives)."""
    model = make_hf_model(family, seed=seed)
    base = make_hf_folder(tmp_path / f"{family}-base", family, model=model, tokenizer=False)
    torch.manual_seed(seed + 100)
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora))
    with torch.no_grad():  # DoRA magnitudes start at the weight norms: move them so they matter
        for name, param in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                param.mul_(1.0 + 0.1 * torch.rand_like(param))
    adapter = tmp_path / f"{family}-adapter"
    peft_model.save_pretrained(adapter)
    merged = {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}
    return base, adapter, merged


def _assert_same_as_peft(base, adapter, merged) -> AdaptedCheckpoint:
    ck = open_checkpoint(f"{base}+{adapter}")
    assert isinstance(ck, AdaptedCheckpoint)
    assert ck.adapted_names(), "the adapter changed nothing"
    for name in ck.keys():
        torch.testing.assert_close(ck.get_tensor(name), merged[name], rtol=0, atol=1e-6, msg=name)
    return ck


def test_plain_lora_with_rank_and_alpha_patterns_equals_peft_merge(tmp_path):
    pair = _peft_pair(tmp_path, "llama", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                      rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 3})
    ck = _assert_same_as_peft(*pair)
    assert {m.rank for m in ck.adapters[0].modules.values()} == {2, 4}


def test_gpt2_conv1d_fan_in_fan_out_with_rslora_equals_peft_merge(tmp_path):
    _assert_same_as_peft(*_peft_pair(tmp_path, "gpt2", r=8, lora_alpha=4, use_rslora=True, fan_in_fan_out=True,
                                     target_modules=["c_attn", "c_proj", "c_fc"]))


def test_gpt2_adapter_whose_config_says_no_fan_in_fan_out_is_still_transposed_as_peft_does(tmp_path):
    # mergekit's extraction writes fan_in_fan_out: false for every model; peft sets it on Conv1D layers at load
    base, adapter, merged = _peft_pair(tmp_path, "gpt2", r=2, lora_alpha=5, target_modules=["c_proj"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "fan_in_fan_out": False}))
    _assert_same_as_peft(base, adapter, merged)


def test_dora_equals_peft_merge(tmp_path):
    _assert_same_as_peft(*_peft_pair(tmp_path, "llama", r=4, lora_alpha=8, use_dora=True,
                                     target_modules=["q_proj", "o_proj", "gate_proj"]))


def test_embedding_lora_and_modules_to_save_equal_peft_merge(tmp_path):
    _assert_same_as_peft(*_peft_pair(tmp_path, "mistral", r=3, lora_alpha=6, target_modules=["embed_tokens", "k_proj"],
                                     modules_to_save=["lm_head"]))


def test_an_adapter_applied_onto_its_base_is_an_input_to_any_merge(tmp_path):
    base, adapter, merged = _peft_pair(tmp_path, "qwen2", r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"])
    recipe = Recipe.model_validate({
        "method": "lerp", "models": [{"path": str(base)}, {"path": f"{base}+{adapter}"}], "params": {"t": 0.5},
        "output": str(tmp_path / "half.safetensors"), "hash_sources": False,
    })
    out = open_checkpoint(run_merge(recipe).output)
    plain = open_checkpoint(base)
    name = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(out.get_tensor(name), (plain.get_tensor(name) + merged[name]) / 2, rtol=0, atol=1e-6)


def test_an_adapter_for_another_model_names_the_modules_that_do_not_fit(tmp_path):
    _, adapter, _ = _peft_pair(tmp_path, "gpt2", r=2, lora_alpha=2, target_modules=["c_attn"])
    other = make_hf_folder(tmp_path / "llama", "llama", tokenizer=False)
    with pytest.raises(IncompatibleCheckpointsError, match=r"adapts 2 module\(s\) that llama does not have: "
                                                             r"transformer\.h\.0\.attn\.c_attn"):
        open_checkpoint(f"{other}+{adapter}")


def test_the_adapter_folder_is_listed_with_its_base_rank_alpha_and_targets(tmp_path):
    _, adapter, _ = _peft_pair(tmp_path, "llama", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    ck = open_checkpoint(adapter)
    info = ck.adapter
    assert info.format == "peft" and info.ranks == [4] and info.alphas == [16.0]
    assert info.target_names() == ["q_proj", "v_proj"]
    assert ck.summary().metadata["adapter.rank"] == "4"
    assert "rank 4; alpha 16" in info.describe()


def test_applying_onto_a_hugging_face_folder_writes_a_folder_transformers_loads(tmp_path):
    from transformers import AutoModelForCausalLM

    from merge_studio.core.lora.bake import iter_write_checkpoint
    from merge_studio.core.progress import drive

    base, adapter, merged = _peft_pair(tmp_path, "llama", r=2, lora_alpha=4, target_modules=["v_proj"])
    with open_checkpoint(f"{base}+{adapter}") as ck:
        out = drive(iter_write_checkpoint(ck, tmp_path / "merged"))
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    name = "model.layers.0.self_attn.v_proj.weight"
    torch.testing.assert_close(loaded[name], merged[name], rtol=0, atol=1e-6)
