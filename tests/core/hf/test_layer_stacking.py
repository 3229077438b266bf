"""Layer stacking (passthrough with slices): a model of a new depth, loadable, made of its sources' layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from merge_studio.core.engine import run_merge
from merge_studio.core.mergekit_config import mergekit_from_recipe, recipe_from_mergekit
from merge_studio.core.recipe import Recipe
from merge_studio.errors import MergeStudioError


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(folder / "model.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _stack(out: Path, *slices: tuple[Path, int, int], method: str = "passthrough", **extra) -> Recipe:
    config = {
        "merge_method": method,
        "slices": [{"sources": [{"model": str(m), "layer_range": [a, b]}]} for m, a, b in slices],
        "dtype": "float32",
        **extra,
    }
    recipe = recipe_from_mergekit(config)
    return recipe.model_copy(update={"output": str(out)})


def test_a_stack_of_three_slices_loads_in_transformers_with_the_new_depth_and_generates(hf_folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a, b = hf_folder("a", seed=1, num_hidden_layers=3), hf_folder("b", seed=2, num_hidden_layers=3)
    out = run_merge(_stack(tmp_path / "stacked", (a, 0, 2), (b, 1, 3), (a, 0, 1))).output
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 5
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer("def main():", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert generated.shape[1] > prompt["input_ids"].shape[1]

    merged, ta, tb = _tensors(out), _tensors(a), _tensors(b)
    layer = "model.layers.{}.self_attn.q_proj.weight"
    for out_layer, (src, src_layer) in enumerate([(ta, 0), (ta, 1), (tb, 1), (tb, 2), (ta, 0)]):
        assert torch.equal(merged[layer.format(out_layer)], src[layer.format(src_layer)])
    assert torch.equal(merged["model.embed_tokens.weight"], ta["model.embed_tokens.weight"])  # first slice's
    assert torch.equal(merged["lm_head.weight"], ta["lm_head.weight"])  # last slice's (a again)
    assert torch.equal(merged["model.norm.weight"], ta["model.norm.weight"])
    card = (out / "README.md").read_text()
    assert "## Layers" in card and "layers 2–3: b layers 1–2" in card


def test_gpt2_stacks_set_n_layer_and_take_the_head_side_from_the_last_slice(hf_folder, tmp_path):
    a, b = hf_folder("a", "gpt2", seed=1), hf_folder("b", "gpt2", seed=2)
    out = run_merge(_stack(tmp_path / "stacked", (a, 0, 2), (b, 0, 2))).output
    assert json.loads((out / "config.json").read_text())["n_layer"] == 4
    merged, tb = _tensors(out), _tensors(b)
    assert torch.equal(merged["transformer.h.3.mlp.c_fc.weight"], tb["transformer.h.1.mlp.c_fc.weight"])
    assert torch.equal(merged["transformer.ln_f.weight"], tb["transformer.ln_f.weight"])


def test_a_filtered_scale_zeroes_the_chosen_projections_of_one_slice(hf_folder, tmp_path):
    a = hf_folder("a", seed=1)
    recipe = recipe_from_mergekit({
        "merge_method": "passthrough",
        "dtype": "float32",
        "slices": [
            {"sources": [{"model": str(a), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(a), "layer_range": [0, 2],
                          "parameters": {"scale": [{"filter": "o_proj", "value": 0.0}, {"value": 1.0}]}}]},
        ],
    }).model_copy(update={"output": str(tmp_path / "dus")})
    merged, ta = _tensors(run_merge(recipe).output), _tensors(a)
    assert torch.equal(merged["model.layers.1.self_attn.o_proj.weight"], ta["model.layers.1.self_attn.o_proj.weight"])
    assert not merged["model.layers.3.self_attn.o_proj.weight"].any()
    assert torch.equal(merged["model.layers.3.self_attn.q_proj.weight"], ta["model.layers.1.self_attn.q_proj.weight"])


def test_a_slice_with_two_sources_is_merged_by_the_method_from_their_own_layers(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1, num_hidden_layers=3), hf_folder("b", seed=2, num_hidden_layers=3)
    recipe = recipe_from_mergekit({
        "merge_method": "slerp",
        "base_model": str(a),
        "dtype": "float32",
        "parameters": {"t": 0.0},
        "slices": [
            {"sources": [{"model": str(a), "layer_range": [0, 2]}, {"model": str(b), "layer_range": [1, 3]}]},
            {"sources": [{"model": str(a), "layer_range": [2, 3]}, {"model": str(b), "layer_range": [0, 1]}],
             "parameters": {"t": 1.0}},
        ],
    }).model_copy(update={"output": str(tmp_path / "franken")})
    out = run_merge(recipe).output
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
    merged, ta, tb = _tensors(out), _tensors(a), _tensors(b)
    name = "model.layers.{}.mlp.up_proj.weight"
    torch.testing.assert_close(merged[name.format(1)], ta[name.format(1)])  # t = 0: a's layer 1
    torch.testing.assert_close(merged[name.format(2)], tb[name.format(0)])  # t = 1: b's layer 0


def test_a_range_past_the_models_layers_names_the_slice_and_the_model(hf_folder, tmp_path):
    a = hf_folder("a", seed=1)
    with pytest.raises(MergeStudioError, match=r"slices\.1\.sources\.0: layer_range \[1, 4\] goes past the 2 layers of a"):
        run_merge(_stack(tmp_path / "out", (a, 0, 2), (a, 1, 4)))
    assert not (tmp_path / "out").exists()


def test_passthrough_refuses_a_slice_with_two_sources(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2)
    recipe = recipe_from_mergekit({
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(a), "layer_range": [0, 2]}, {"model": str(b), "layer_range": [0, 2]}]},
                   {"sources": [{"model": str(a), "layer_range": [0, 1]}]}],
    }).model_copy(update={"output": str(tmp_path / "out")})
    with pytest.raises(MergeStudioError, match=r"slices\.0: Passthrough .* got 2"):
        run_merge(recipe)


def test_a_stacking_recipe_exports_to_mergekit_with_each_slice_as_given(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    recipe = Recipe.from_mapping({
        "method": "passthrough",
        "models": [{"path": str(a)}, {"path": str(b)}],
        "slices": [{"sources": [{"model": str(a), "layer_range": [0, 24]}]},
                   {"sources": [{"model": str(b), "layer_range": [8, 32]}]}],
    })
    config = mergekit_from_recipe(recipe)
    assert config["merge_method"] == "passthrough"
    assert config["slices"] == [{"sources": [{"model": str(a), "layer_range": [0, 24]}]},
                                {"sources": [{"model": str(b), "layer_range": [8, 32]}]}]
    again = recipe_from_mergekit(config)
    assert [s.model_dump() for s in again.slices] == [s.model_dump() for s in recipe.slices]


def test_the_summary_gives_the_stacks_depth_and_parameters_from_headers_only(hf_folder, tmp_path):
    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.core.recipe_slices import SliceEntry
    from merge_studio.core.stacking import summarize_stack

    a = hf_folder("a", seed=1, num_hidden_layers=3)
    slices = [SliceEntry.model_validate({"sources": [{"model": "a", "layer_range": r}]}) for r in ([0, 3], [1, 3])]
    with open_checkpoint(a) as ck:
        summary = summarize_stack(slices, {"a": ck.infos})
    out = run_merge(_stack(tmp_path / "stacked", (a, 0, 3), (a, 1, 3))).output
    assert summary.depth == 5 and summary.merged_slices == 0
    assert summary.parameters == sum(t.numel() for t in _tensors(out).values())
