"""Assembling a mixture of experts from dense folders gives a model transformers loads and runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from merge_studio.core.moe.build import build_moe, iter_build_moe
from merge_studio.core.moe.config import MoeConfig, load_moe_config
from merge_studio.core.progress import CancelToken, Progress
from merge_studio.errors import (
    ArchitectureError,
    Cancelled,
    IncompatibleCheckpointsError,
    RecipeError,
)
from tests.hf_models import VOCAB_SIZE, make_hf_folder

pytest.importorskip("transformers")

PROMPTS = (["def parse(text):", "import os"], ["The quick brown fox", "Once upon a time"])
MIXTRAL_PROJ = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """base + two fine-tune stand-ins per family, built once for the module."""
    root = tmp_path_factory.mktemp("moe-zoo")
    made: dict[str, list[Path]] = {}

    def get(family: str) -> list[Path]:
        if family not in made:
            made[family] = [make_hf_folder(root / f"{family}-{i}", family, seed=i, model=_qwen3(i) if family == "qwen3"
                                           else None) for i in range(3)]
        return made[family]

    return get


def _qwen3(seed: int):
    """A tiny Qwen3 (not among tests.hf_models' families, which many other tests run over)."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, bos_token_id=1, eos_token_id=2)
    return AutoModelForCausalLM.from_config(config).eval()


def _config(base: Path, experts: list[Path], mode: str = "hidden", **extra) -> MoeConfig:
    return MoeConfig.model_validate({
        "base_model": str(base), "gate_mode": mode, "experts_per_token": 2,
        "experts": [{"source_model": str(e), "positive_prompts": PROMPTS[i % 2]} for i, e in enumerate(experts)],
        **extra,
    })


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    return model.eval()


def test_a_llama_base_and_two_experts_load_as_mixtral_and_generate(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    result = build_moe(_config(base, [e1, e2]), tmp_path / "moe")
    assert result.architecture == "Mixtral" and result.experts == 2
    model = _load(tmp_path / "moe")
    assert type(model).__name__ == "MixtralForCausalLM"
    assert model.config.num_local_experts == 2 and model.config.num_experts_per_tok == 2
    out = model.generate(torch.tensor([[1, 40, 41]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    files = {p.name for p in (tmp_path / "moe").iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "README.md"} <= files
    assert "Mixtral" in (tmp_path / "moe" / "README.md").read_text()


def test_each_experts_mlp_equals_its_source_models_and_the_rest_is_the_base(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    build_moe(_config(base, [e1, e2]), tmp_path / "moe")
    out, sources = _tensors(tmp_path / "moe"), [_tensors(e1), _tensors(e2)]
    base_t = _tensors(base)
    experts_seen = 0
    for name, tensor in out.items():
        m = re.match(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w\d)\.weight", name)
        if m:
            layer, expert, proj = int(m[1]), int(m[2]), m[3]
            torch.testing.assert_close(tensor, sources[expert][f"model.layers.{layer}.mlp.{MIXTRAL_PROJ[proj]}.weight"],
                                       rtol=0, atol=0)
            experts_seen += 1
        elif ".gate." not in name:
            torch.testing.assert_close(tensor, base_t[name], rtol=0, atol=0)
    assert experts_seen == 2 * 2 * 3  # layers x experts x projections


@pytest.mark.parametrize("family, architecture", [("llama", "MixtralForCausalLM"), ("mistral", "MixtralForCausalLM"),
                                                  ("qwen2", "Qwen2MoeForCausalLM"), ("qwen3", "Qwen3MoeForCausalLM")])
def test_an_moe_whose_experts_are_all_the_base_computes_what_the_base_computes(zoo, tmp_path, family, architecture):
    base = zoo(family)[0]
    build_moe(_config(base, [base, base, base], mode="random"), tmp_path / "moe")
    moe = _load(tmp_path / "moe")
    assert type(moe).__name__ == architecture
    ids = torch.tensor([[1, 17, 90, 200, 3]])
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, _load(base)(ids).logits, rtol=1e-4, atol=1e-5)


def test_a_qwen2_base_becomes_qwen2_moe_with_its_shared_expert(zoo, tmp_path):
    base, e1, e2 = zoo("qwen2")
    shared = [{"source_model": str(base), "positive_prompts": ["hello there"], "residual_scale": 0.5}]
    result = build_moe(_config(base, [e1, e2], shared_experts=shared), tmp_path / "moe")
    assert result.architecture == "Qwen2-MoE"
    model = _load(tmp_path / "moe")
    assert type(model).__name__ == "Qwen2MoeForCausalLM" and model.config.num_experts == 2
    assert model.generate(torch.tensor([[1, 40, 41]]), max_new_tokens=3, do_sample=False).shape == (1, 6)
    out, src, base_t = _tensors(tmp_path / "moe"), _tensors(e2), _tensors(base)
    torch.testing.assert_close(out["model.layers.1.mlp.experts.1.up_proj.weight"],
                               src["model.layers.1.mlp.up_proj.weight"], rtol=0, atol=0)
    torch.testing.assert_close(out["model.layers.0.mlp.shared_expert.down_proj.weight"],
                               base_t["model.layers.0.mlp.down_proj.weight"] * 0.5)
    assert out["model.layers.0.mlp.shared_expert_gate.weight"].shape == (1, 32)


def test_a_qwen2_moe_without_a_shared_expert_says_its_shared_expert_adds_nothing(zoo, tmp_path):
    base, e1, e2 = zoo("qwen2")
    result = build_moe(_config(base, [e1, e2], mode="random"), tmp_path / "moe")
    assert any("shared expert is one unit of zeros" in n for n in result.notes)
    assert not _tensors(tmp_path / "moe")["model.layers.0.mlp.shared_expert.down_proj.weight"].any()


def test_a_llama_base_with_a_shared_expert_becomes_qwen2_moe_with_zero_attention_biases(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    result = build_moe(_config(base, [e1, e2], mode="random", shared_experts=[{"source_model": str(base)}]),
                       tmp_path / "moe")
    assert result.architecture == "Qwen2-MoE" and any("biases" in n for n in result.notes)
    model = _load(tmp_path / "moe")
    assert not model.model.layers[0].self_attn.q_proj.bias.any()


@pytest.mark.parametrize("family", ["gpt2", "phi3", "gemma"])
def test_a_base_of_a_family_without_an_moe_form_is_refused_by_name(zoo, tmp_path, family):
    base = zoo(family)[0]
    with pytest.raises(ArchitectureError, match=f"{family}.*no mixture-of-experts form.*Llama and Mistral") as err:
        build_moe(_config(base, [base, base], mode="random"), tmp_path / "moe")
    assert "Qwen2" in str(err.value)
    assert not (tmp_path / "moe").exists()


def test_an_expert_of_another_family_is_refused(zoo, tmp_path):
    with pytest.raises(IncompatibleCheckpointsError, match="qwen2 model but the base .* is llama"):
        build_moe(_config(zoo("llama")[0], [zoo("llama")[1], zoo("qwen2")[1]]), tmp_path / "moe")


@pytest.mark.parametrize("mode", ["random", "uniform_random", "cheap_embed", "hidden", "hidden_avg"])
def test_every_gate_mode_gives_one_router_row_per_expert_and_layer(zoo, tmp_path, mode):
    base, e1, e2 = zoo("llama")
    result = build_moe(_config(base, [e1, e2, base], mode=mode), tmp_path / "moe")
    assert result.routers.shape == (2, 3, 32)
    out = _tensors(tmp_path / "moe")
    for layer in range(2):
        gate = out[f"model.layers.{layer}.block_sparse_moe.gate.weight"]
        assert gate.shape == (3, 32) and torch.isfinite(gate).all()
        torch.testing.assert_close(gate, result.routers[layer])
        if mode not in ("random", "uniform_random"):  # prompt-made rows are unit vectors
            torch.testing.assert_close(gate.norm(dim=-1), torch.ones(3))
    if mode == "cheap_embed":  # the same for every layer
        torch.testing.assert_close(result.routers[0], result.routers[1])


def test_hidden_routers_are_deterministic_and_tell_the_experts_apart(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    first = build_moe(_config(base, [e1, e2]), tmp_path / "a").routers
    again = build_moe(_config(base, [e1, e2]), tmp_path / "b", batch_size=1).routers
    torch.testing.assert_close(first, again, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(first[:, 0], first[:, 1])


def test_negative_prompts_move_the_router_away_from_them(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    cfg = _config(base, [e1, e2]).model_dump()
    plain = build_moe(MoeConfig.model_validate(cfg), tmp_path / "a").routers
    cfg["experts"][0]["negative_prompts"] = PROMPTS[1]
    pushed = build_moe(MoeConfig.model_validate(cfg), tmp_path / "b").routers
    assert (pushed[:, 0] * plain[:, 1]).sum(-1).mean() < (plain[:, 0] * plain[:, 1]).sum(-1).mean()


def test_random_routers_follow_the_seed(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    a = build_moe(_config(base, [e1, e2], mode="random"), tmp_path / "a", seed=1).routers
    b = build_moe(_config(base, [e1, e2], mode="random"), tmp_path / "b", seed=1).routers
    c = build_moe(_config(base, [e1, e2], mode="random"), tmp_path / "c", seed=2).routers
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_output_dtype_is_the_configs(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    build_moe(_config(base, [e1, e2], mode="random", dtype="bfloat16"), tmp_path / "moe")
    assert {t.dtype for t in _tensors(tmp_path / "moe").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "moe" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_cancelling_leaves_nothing_behind(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    token = CancelToken()
    job = iter_build_moe(_config(base, [e1, e2]), tmp_path / "moe", cancel=token)
    stages = []
    with pytest.raises(Cancelled):
        for item in job:
            assert isinstance(item, Progress)
            stages.append(item.stage)
            if item.stage == "writing" and item.done == 3:
                token.cancel()
    assert "routers" in stages
    assert list(tmp_path.iterdir()) == []


def test_cancelling_while_routers_are_set_leaves_nothing_behind(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    token = CancelToken()
    with pytest.raises(Cancelled):
        for item in iter_build_moe(_config(base, [e1, e2]), tmp_path / "moe", cancel=token, batch_size=1):
            if item.stage == "routers" and item.done == 1:
                token.cancel()
    assert list(tmp_path.iterdir()) == []


def test_mergekit_moe_yaml_is_read_with_paths_relative_to_the_file(zoo, tmp_path):
    base, e1, e2 = zoo("llama")
    (tmp_path / "models").symlink_to(base.parent)
    yml = tmp_path / "moe.yml"
    yml.write_text(
        f"base_model: models/{base.name}\ngate_mode: cheap_embed\ndtype: float32\nexperts_per_token: 1\n"
        f"experts:\n  - source_model: models/{e1.name}\n    positive_prompts: ['def f():']\n"
        f"  - source_model: models/{e2.name}\n    positive_prompts: ['Once upon a time']\n"
        f"    negative_prompts: ['import sys']\n"
    )
    config = load_moe_config(yml)
    assert config.base_model == str(tmp_path / "models" / base.name)
    assert config.experts[1].negative_prompts == ["import sys"]
    assert build_moe(config, tmp_path / "out").experts_per_token == 1


@pytest.mark.parametrize("change, message", [
    ({"experts_per_token": 3}, "2 experts cannot serve"),
    ({"experts": [{"source_model": "a"}, {"source_model": "b"}]}, "no positive_prompts"),
    ({"experts": [{"source_model": "a", "positive_prompts": ["x"]}, {"source_model": "b", "positive_prompts": ["x"]}]},
     "same prompts"),
    ({"experts": [{"source_model": "a", "positive_prompts": ["x"]}, {"source_model": "a", "positive_prompts": ["y"]}]},
     "every expert is the same model"),
])
def test_configs_that_cannot_make_a_working_moe_are_refused_before_reading_a_model(tmp_path, change, message):
    data = {"base_model": "nowhere", "experts": [{"source_model": "a", "positive_prompts": ["x"]},
                                                 {"source_model": "b", "positive_prompts": ["y"]}], **change}
    with pytest.raises(RecipeError, match=message):
        build_moe(MoeConfig.model_validate(data), tmp_path / "moe")


def test_a_merge_recipe_given_as_an_moe_config_says_which_command_to_use(tmp_path):
    yml = tmp_path / "merge.yml"
    yml.write_text("merge_method: linear\nmodels:\n  - model: a\n")
    with pytest.raises(RecipeError, match="merge recipe, not a mixture-of-experts config"):
        load_moe_config(yml)


def test_a_transformers_that_saves_experts_fused_gets_them_fused_and_computes_the_same(zoo, tmp_path, monkeypatch):
    """transformers 5 keeps experts as one gate_up_proj / down_proj tensor in memory; were it to save them so,
    the same assembly writes that layout (gate then up rows, expert after expert) and the model is unchanged."""
    from merge_studio.core.hf import moe_families

    base, e1, e2 = zoo("llama")
    build_moe(_config(base, [e1, e2], mode="cheap_embed"), tmp_path / "split")
    saved_layout = moe_families.saved_layout
    monkeypatch.setattr(moe_families, "saved_layout", lambda config: saved_layout(config, as_saved=False))
    build_moe(_config(base, [e1, e2], mode="cheap_embed"), tmp_path / "fused")
    fused = _tensors(tmp_path / "fused")
    if not any(name.endswith("experts.gate_up_proj") for name in fused):
        pytest.skip("this transformers keeps experts one by one in memory too")
    gate_up = fused["model.layers.1.mlp.experts.gate_up_proj"]
    src = _tensors(e2)
    torch.testing.assert_close(gate_up[1], torch.cat([src["model.layers.1.mlp.gate_proj.weight"],
                                                      src["model.layers.1.mlp.up_proj.weight"]]), rtol=0, atol=0)
    ids = torch.tensor([[1, 17, 90, 200, 3]])
    with torch.no_grad():
        torch.testing.assert_close(_load(tmp_path / "fused")(ids).logits, _load(tmp_path / "split")(ids).logits)


def test_an_expert_of_another_size_is_refused_naming_the_tensor(zoo, tmp_path):
    base, e1, _ = zoo("llama")
    wide = make_hf_folder(tmp_path / "wide", "llama", seed=5, intermediate_size=48)
    with pytest.raises(IncompatibleCheckpointsError, match=r"wide's model\.layers\.0\.mlp\.\w+_proj\.weight is \[48, 32\]"):
        build_moe(_config(base, [e1, wide]), tmp_path / "moe")
    assert not (tmp_path / "moe").exists()


def test_a_base_tensor_the_moe_has_no_place_for_is_an_error_not_a_silent_drop(tmp_path):
    biased = [make_hf_folder(tmp_path / f"b{i}", "llama", seed=i, attention_bias=True) for i in range(2)]
    with pytest.raises(IncompatibleCheckpointsError, match=r"Mixtral has no place for the base's .*q_proj\.bias"):
        build_moe(_config(biased[0], biased, mode="random"), tmp_path / "moe")
