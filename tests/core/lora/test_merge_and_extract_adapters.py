"""Merging LoRAs of one base into one adapter, and extracting a LoRA from a fine-tune."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.lora.combine import merge_adapters
from merge_studio.core.lora.extract import extract_lora
from merge_studio.errors import IncompatibleCheckpointsError
from tests.core.lora.test_kohya_adapters import SD1_NAMES, _write_kohya
from tests.sd_models import make_sd_checkpoint, make_sd_state

pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from tests.hf_models import make_hf_folder, make_hf_model  # noqa: E402


def _adapter(tmp_path, name, base_model, seed, **lora):
    torch.manual_seed(seed)
    model = get_peft_model(base_model, LoraConfig(init_lora_weights=False, **lora))
    model.save_pretrained(tmp_path / name)
    model.unload()
    return tmp_path / name


def _deltas(base, *adapted) -> dict[str, torch.Tensor]:
    plain = open_checkpoint(base)
    total: dict[str, torch.Tensor] = {}
    for path in adapted:
        ck = open_checkpoint(f"{base}+{path}")
        for name in ck.adapted_names():
            total[name] = total.get(name, 0) + ck.get_tensor(name) - plain.get_tensor(name)
    return total


@pytest.fixture
def llama_pair(tmp_path):
    model = make_hf_model("llama", seed=0)
    base = make_hf_folder(tmp_path / "base", "llama", model=model, tokenizer=False)
    a = _adapter(tmp_path, "a", model, 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    b = _adapter(tmp_path, "b", model, 2, r=2, lora_alpha=16, use_rslora=True, target_modules=["v_proj", "up_proj"])
    return base, a, b


def test_concatenating_two_loras_is_exact(tmp_path, llama_pair):
    base, a, b = llama_pair
    result = merge_adapters([a, b], tmp_path / "ab", mode="concat")
    assert result.kept_energy == 1.0
    assert result.ranks == [2, 4, 6]  # q: 4, up: 2, v: 4 + 2
    merged = _deltas(base, result.path)
    expected = _deltas(base, a, b)
    assert merged.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name], rtol=0, atol=1e-6)


def test_svd_to_a_lower_rank_reports_the_energy_it_keeps(tmp_path, llama_pair):
    base, a, b = llama_pair
    full = merge_adapters([a, b], tmp_path / "full", mode="svd", rank=6)
    assert full.kept_energy == pytest.approx(1.0, abs=1e-9)
    low = merge_adapters([a, b], tmp_path / "low", mode="svd", rank=1, weights=[1.0, 0.5])
    assert 0.0 < low.kept_energy < 1.0
    expected = _deltas(base, a)
    half_b = _deltas(base, b)
    approx = _deltas(base, low.path)
    name = "model.layers.0.self_attn.v_proj.weight"
    true = expected[name] + 0.5 * half_b[name]
    measured = float(torch.linalg.norm(approx[name] - true) / torch.linalg.norm(true))
    kept = low.modules["model.layers.0.self_attn.v_proj"].kept_energy
    assert measured == pytest.approx(math.sqrt(1 - kept), rel=1e-3)


def test_a_merged_adapter_loads_in_peft_and_gives_the_same_weights(tmp_path, llama_pair):
    base, a, b = llama_pair
    result = merge_adapters([a, b], tmp_path / "ab", mode="concat")
    peft_merged = PeftModel.from_pretrained(make_hf_model("llama", seed=0), result.path).merge_and_unload().state_dict()
    ours = open_checkpoint(f"{base}+{result.path}")
    for name in ours.adapted_names():
        torch.testing.assert_close(ours.get_tensor(name), peft_merged[name], rtol=0, atol=1e-6)


def test_loras_of_different_bases_are_not_merged(tmp_path, llama_pair):
    _, a, _ = llama_pair
    other = _adapter(tmp_path, "gpt", make_hf_model("gpt2"), 3, r=2, lora_alpha=2, target_modules=["c_attn"])
    (other / "adapter_config.json").write_text((other / "adapter_config.json").read_text().replace(
        '"base_model_name_or_path": null', '"base_model_name_or_path": "gpt2"'))
    (a / "adapter_config.json").write_text((a / "adapter_config.json").read_text().replace(
        '"base_model_name_or_path": null', '"base_model_name_or_path": "llama"'))
    with pytest.raises(IncompatibleCheckpointsError, match="different bases"):
        merge_adapters([a, other], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_kohya_loras_merge_into_a_kohya_file(tmp_path):
    state = make_sd_state("sd1", compact=True)
    base = make_sd_checkpoint(tmp_path / "base.safetensors", "sd1", compact=True)
    _write_kohya(tmp_path / "one.safetensors", state, SD1_NAMES, rank=2, seed=1)
    _write_kohya(tmp_path / "two.safetensors", state, dict(list(SD1_NAMES.items())[:4]), rank=3, seed=2)
    result = merge_adapters([tmp_path / "one.safetensors", tmp_path / "two.safetensors"],
                            tmp_path / "both.safetensors", weights=[1.0, -0.5])
    assert result.format == "kohya"
    assert open_checkpoint(result.path).adapter.format == "kohya"
    got = _deltas(base, result.path)
    one, two = _deltas(base, tmp_path / "one.safetensors"), _deltas(base, tmp_path / "two.safetensors")
    for name, delta in got.items():
        torch.testing.assert_close(delta, one[name] - 0.5 * two.get(name, 0), rtol=0, atol=1e-6)


def _fine_tune(tmp_path, family, rank_of_change: int):
    """A 'fine-tune': the base plus a rank-limited change in every linear layer and a changed norm."""
    model = make_hf_model(family, seed=0)
    base = make_hf_folder(tmp_path / f"{family}-base", family, model=model, tokenizer=False)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "emb" not in name and "wte" not in name and "wpe" not in name:
                u = torch.randn(p.shape[0], rank_of_change, generator=g)
                v = torch.randn(rank_of_change, p.shape[1], generator=g)
                p.add_(0.02 * u @ v)
            elif p.dim() == 1 and ("norm" in name or ".ln_" in name):
                p.add_(0.01)
    tuned = make_hf_folder(tmp_path / f"{family}-tuned", family, model=model, tokenizer=False)
    return base, tuned, model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_extracting_at_the_rank_of_the_change_recovers_the_fine_tune(tmp_path, family):
    base, tuned, tuned_model = _fine_tune(tmp_path, family, rank_of_change=3)
    result = extract_lora(tuned, base, tmp_path / "lora", rank=3)
    assert result.format == "peft" and result.relative_error < 1e-5
    assert any("norm" in n or "ln_" in n for n in result.not_captured)  # the changed norms are named
    peft_model = PeftModel.from_pretrained(make_hf_model(family, seed=0), result.path).merge_and_unload()
    expected = tuned_model.state_dict()
    merged = peft_model.state_dict()
    for layer in result.layers:
        name = layer.module + ".weight"
        torch.testing.assert_close(merged[name], expected[name], rtol=0, atol=1e-5)


def test_extraction_error_falls_with_rank(tmp_path):
    base, tuned, _ = _fine_tune(tmp_path, "llama", rank_of_change=8)
    low, mid, full = (extract_lora(tuned, base, tmp_path / f"r{r}", rank=r) for r in (1, 4, 8))
    assert low.relative_error > mid.relative_error > 0.05 > 1e-5 > full.relative_error
    assert all(a.relative_error >= b.relative_error for a, b in zip(low.layers, mid.layers, strict=True))


def test_an_sd_fine_tune_extracts_to_a_kohya_file_that_applies_back(tmp_path):
    base = make_sd_checkpoint(tmp_path / "base.safetensors", "sd1", seed=1, compact=True)
    state = load_file(str(base))
    changed = ["model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
               "model.diffusion_model.output_blocks.8.2.conv.weight",
               "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight"]
    g = torch.Generator().manual_seed(0)
    for name in changed:
        w = state[name]
        state[name] = w + 0.05 * (torch.randn(w.shape[0], 1, generator=g) @ torch.randn(1, w[0].numel(), generator=g)).reshape(w.shape)
    save_file(state, str(tmp_path / "tuned.safetensors"))
    result = extract_lora(tmp_path / "tuned.safetensors", base, tmp_path / "style.safetensors", rank=1)
    assert result.format == "kohya" and len(result.layers) == 3 and result.relative_error < 1e-5
    back = open_checkpoint(f"{base}+{result.path}")
    for name in changed:
        torch.testing.assert_close(back.get_tensor(name), state[name], rtol=0, atol=1e-5)
