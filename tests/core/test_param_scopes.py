"""Parameters at every scope (merge, model, slice, slice × model), as mergekit resolves them.

The models are tiny Llama-named state dicts. Merging with ``lerp`` makes the
parameter each tensor received readable from the output: t = (out − a)/(b − a).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_studio.core.engine import run_merge
from merge_studio.core.mergekit_config import mergekit_from_recipe, recipe_from_mergekit
from merge_studio.core.param_scopes import parameter_warnings
from merge_studio.core.recipe import Recipe
from merge_studio.errors import RecipeError

LAYERS = 4


def llama_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {"model.embed_tokens.weight": torch.randn(8, 4, generator=g)}
    for i in range(LAYERS):
        state[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.randn(4, 4, generator=g)
        state[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(6, 4, generator=g)
    state["model.norm.weight"] = torch.randn(4, generator=g)
    state["lm_head.weight"] = torch.randn(8, 4, generator=g)
    return state


@pytest.fixture
def llamas(tmp_path: Path) -> list[Path]:
    paths = []
    for seed in range(3):
        path = tmp_path / f"m{seed}.safetensors"
        save_file(llama_state(seed), str(path))
        paths.append(path)
    return paths


def _merge(recipe: Recipe, tmp_path: Path) -> dict[str, torch.Tensor]:
    out = tmp_path / "out.safetensors"
    run_merge(recipe.model_copy(update={"output": str(out)}))
    return load_file(str(out))


def _t_of(out: dict[str, torch.Tensor], a: Path, b: Path) -> dict[str, float]:
    """The lerp position each tensor was merged at."""
    sa, sb = load_file(str(a)), load_file(str(b))
    return {k: float(((out[k] - sa[k]) / (sb[k] - sa[k])).median()) for k in out}


def _lerp(llamas, params, slices=None) -> Recipe:
    data = {"method": "lerp", "models": [{"path": str(llamas[0])}, {"path": str(llamas[1])}], "params": params}
    if slices is not None:
        data["slices"] = slices
    return Recipe.from_mapping(data)


def _slice(llamas, start, end, params=None, source_params=(None, None)):
    return {"sources": [{"model": str(p), "layer_range": [start, end], "params": sp or {}}
                        for p, sp in zip(llamas[:2], source_params, strict=True)], "params": params or {}}


def test_a_gradient_gives_embeddings_norm_and_head_its_first_value_like_mergekit(llamas, tmp_path):
    ts = _t_of(_merge(_lerp(llamas, {"t": [0.2, 1.0]}), tmp_path), *llamas[:2])
    assert [ts[f"model.layers.{i}.mlp.up_proj.weight"] for i in range(LAYERS)] == pytest.approx([0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0], abs=1e-5)
    assert ts["model.embed_tokens.weight"] == ts["model.norm.weight"] == ts["lm_head.weight"] == pytest.approx(0.2, abs=1e-5)


def test_a_slices_parameters_win_inside_it_and_its_gradient_spans_only_its_layers(llamas, tmp_path):
    slices = [_slice(llamas, 0, 2, {"t": 0.1}), _slice(llamas, 2, 4, {"t": [0.6, 0.8]})]
    ts = _t_of(_merge(_lerp(llamas, {"t": 0.5}, slices), tmp_path), *llamas[:2])
    layer_t = [ts[f"model.layers.{i}.self_attn.q_proj.weight"] for i in range(LAYERS)]
    assert layer_t == pytest.approx([0.1, 0.1, 0.6, 0.8], abs=1e-5)
    # as mergekit: tensors before the layers follow the first slice, those after the last, at depth 0
    assert ts["model.embed_tokens.weight"] == pytest.approx(0.1, abs=1e-5)
    assert ts["lm_head.weight"] == ts["model.norm.weight"] == pytest.approx(0.6, abs=1e-5)


def test_a_filter_matching_nothing_in_a_slice_falls_through_to_the_merges_value(llamas, tmp_path):
    slices = [_slice(llamas, 0, 4, {"t": [{"filter": "mlp", "value": 0.9}]})]
    ts = _t_of(_merge(_lerp(llamas, {"t": 0.3}, slices), tmp_path), *llamas[:2])
    assert ts["model.layers.1.mlp.up_proj.weight"] == pytest.approx(0.9, abs=1e-5)
    assert ts["model.layers.1.self_attn.q_proj.weight"] == pytest.approx(0.3, abs=1e-5)


def _ties(llamas, params=None, models=None, slices=None) -> Recipe:
    data = {"method": "ties", "base": str(llamas[2]), "params": params or {},
            "models": models or [{"path": str(llamas[0])}, {"path": str(llamas[1])}]}
    if slices is not None:
        data["slices"] = slices
    return Recipe.from_mapping(data)


def test_a_per_model_parameter_given_for_the_whole_merge_applies_to_every_model(llamas, tmp_path):
    everywhere = _merge(_ties(llamas, {"density": 0.3}), tmp_path)
    per_model = _merge(_ties(llamas, models=[{"path": str(p), "params": {"density": 0.3}} for p in llamas[:2]]), tmp_path)
    assert all(torch.equal(everywhere[k], per_model[k]) for k in everywhere)
    untrimmed = _merge(_ties(llamas), tmp_path)
    assert not torch.equal(everywhere["lm_head.weight"], untrimmed["lm_head.weight"])


def test_a_models_own_value_beats_the_merges_and_a_slice_source_beats_both(llamas, tmp_path):
    models = [{"path": str(llamas[0]), "params": {"weight": 0.5}}, {"path": str(llamas[1])}]
    slices = [{"sources": [{"model": str(llamas[0]), "layer_range": [0, 4], "params": {"weight": 0.25}},
                           {"model": str(llamas[1]), "layer_range": [0, 4]}], "params": {}}]
    recipe = Recipe.from_mapping({"method": "task_arithmetic", "base": str(llamas[2]), "models": models,
                                  "params": {"weight": 0.1}, "slices": slices})
    out = _merge(recipe, tmp_path)
    a, b, base = (load_file(str(p)) for p in llamas)
    key = "model.layers.2.mlp.up_proj.weight"
    torch.testing.assert_close(out[key], base[key] + 0.25 * (a[key] - base[key]) + 0.1 * (b[key] - base[key]))


def test_a_parameter_another_method_takes_is_accepted_with_a_warning_naming_it(llamas):
    recipe = _lerp(llamas, {"t": 0.5}).model_copy()
    recipe = Recipe.from_mapping({**recipe.model_dump(), "models": [
        {"path": str(llamas[0]), "params": {"weight": 1.0}}, {"path": str(llamas[1]), "params": {"weight": 1.0}}]})
    warnings = [str(w) for w in parameter_warnings(recipe)]
    assert len(warnings) == 2
    assert warnings[0].startswith("models.0.params: 'weight' is not a parameter of Linear interpolation (it is one of ")
    assert warnings[0].endswith("; ignored")


def test_a_method_parameter_given_on_a_model_is_ignored_with_a_warning(llamas):
    recipe = _ties(llamas, models=[{"path": str(llamas[0]), "params": {"normalize": False}}, {"path": str(llamas[1])}])
    (warning,) = parameter_warnings(recipe)
    assert str(warning).startswith("models.0.params: 'normalize' is a parameter of the whole TIES merge, not of one model")


def test_a_name_no_method_takes_is_refused_with_the_closest_real_name(llamas):
    with pytest.raises(RecipeError, match=r"unknown parameter 'densty'.*did you mean 'density'"):
        _ties(llamas, {"densty": 0.3})


def test_values_from_different_scopes_are_checked_together(llamas):
    models = [{"path": str(p), "params": {"epsilon": 0.5}} for p in llamas[:2]]
    with pytest.raises(RecipeError, match="density ± epsilon"):
        Recipe.from_mapping({"method": "della", "base": str(llamas[2]), "models": models, "params": {"density": 0.6}})


def test_slices_that_repeat_layers_stack_a_deeper_model_with_gradients_per_slice(llamas, tmp_path):
    out = _merge(_lerp(llamas, {"t": [0.0, 1.0]}, [_slice(llamas, 0, 2), _slice(llamas, 1, 4)]), tmp_path)
    sa = load_file(str(llamas[0]))
    assert sorted({int(k.split(".")[2]) for k in out if k.startswith("model.layers.")}) == [0, 1, 2, 3, 4]
    assert torch.equal(out["model.layers.2.mlp.up_proj.weight"], sa["model.layers.1.mlp.up_proj.weight"])  # t = 0
    sb = load_file(str(llamas[1]))
    torch.testing.assert_close(out["model.layers.4.mlp.up_proj.weight"], sb["model.layers.3.mlp.up_proj.weight"])


def test_slices_that_cover_fewer_layers_make_a_shallower_model(llamas, tmp_path):
    out = _merge(_lerp(llamas, {"t": 0.25}, [_slice(llamas, 0, 2)]), tmp_path)
    assert sorted({k.split(".")[2] for k in out if k.startswith("model.layers.")}) == ["0", "1"]
    ts = _t_of(out, *llamas[:2])
    assert ts["model.layers.1.mlp.up_proj.weight"] == ts["lm_head.weight"] == pytest.approx(0.25, abs=1e-5)


def test_a_mergekit_config_with_slice_parameters_round_trips(llamas):
    config = {
        "merge_method": "slerp", "base_model": str(llamas[0]), "parameters": {"t": 0.5},
        "slices": [{"sources": [{"model": str(llamas[0]), "layer_range": [0, 2]}, {"model": str(llamas[1]), "layer_range": [0, 2]}],
                    "parameters": {"t": 0.2}},
                   {"sources": [{"model": str(llamas[0]), "layer_range": [2, 4]}, {"model": str(llamas[1]), "layer_range": [2, 4]}]}],
    }
    recipe = recipe_from_mergekit(config)
    assert [sl.params for sl in recipe.slices] == [{"t": 0.2}, {}]
    again = recipe_from_mergekit(mergekit_from_recipe(recipe))
    assert again.slices == recipe.slices and again.params == recipe.params


def test_a_linear_merge_of_one_model_resaves_it_in_another_dtype(llamas, tmp_path):
    config = {"merge_method": "linear", "models": [{"model": str(llamas[0]), "parameters": {"weight": 1.0}}],
              "dtype": "float32", "out_dtype": "bfloat16"}
    out = _merge(recipe_from_mergekit(config), tmp_path)
    source = load_file(str(llamas[0]))
    assert all(out[k].dtype == torch.bfloat16 and torch.equal(out[k], source[k].bfloat16()) for k in source)
