"""mergekit configs come in as recipes and go out again."""

from __future__ import annotations

import pytest
import yaml

from merge_studio.core.mergekit_config import mergekit_from_recipe, recipe_from_mergekit
from merge_studio.core.recipe import load_recipe
from merge_studio.errors import RecipeError

TIES = """
models:
  - model: ft_a.safetensors
    parameters: {density: 0.5, weight: 0.7}
  - model: ft_b.safetensors
    parameters:
      density: 0.3
      weight: [0.2, 0.8]
  - model: base.safetensors
merge_method: ties
base_model: base.safetensors
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
"""

SLERP = """
slices:
  - sources:
      - model: a.safetensors
        layer_range: [0, 32]
      - model: b.safetensors
        layer_range: [0, 32]
merge_method: slerp
base_model: a.safetensors
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
"""


def test_a_mergekit_ties_config_becomes_a_ties_recipe(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(TIES)
    recipe = load_recipe(path)
    assert recipe.method == "ties"
    assert recipe.base == str(tmp_path / "base.safetensors")
    assert [m.path for m in recipe.models] == [str(tmp_path / "ft_a.safetensors"), str(tmp_path / "ft_b.safetensors")]
    assert recipe.models[1].params == {"density": 0.3, "weight": [0.2, 0.8]}
    assert recipe.params == {"normalize": True}  # int8_mask only changes memory use
    assert recipe.dtype == "bfloat16"


def test_a_mergekit_slerp_config_with_slices_and_filters(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(SLERP)
    recipe = load_recipe(path)
    assert recipe.method == "slerp"
    assert [m.path.rsplit("/", 1)[-1] for m in recipe.models] == ["a.safetensors", "b.safetensors"]
    assert recipe.params["t"][0] == {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]}


def test_export_gives_back_an_equivalent_mergekit_config(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(TIES)
    config = mergekit_from_recipe(load_recipe(path))
    again = recipe_from_mergekit(yaml.safe_load(yaml.safe_dump(config)))
    assert again.method == "ties"
    assert again.models == load_recipe(path).models


def test_methods_without_a_mergekit_counterpart_are_refused_clearly():
    with pytest.raises(RecipeError, match="no counterpart"):
        recipe_from_mergekit({"merge_method": "task_swapping", "models": [{"model": "a"}]})


def test_a_slice_whose_sources_give_different_numbers_of_layers_is_refused_naming_them():
    config = {"merge_method": "slerp", "base_model": "a", "slices": [
        {"sources": [{"model": "a", "layer_range": [0, 24]}, {"model": "b", "layer_range": [20, 40]}]},
    ]}
    with pytest.raises(RecipeError, match=r"different numbers of layers \(a \[0, 24\], b \[20, 40\]\)"):
        recipe_from_mergekit(config)


NEW_METHODS = {
    "breadcrumbs": ({"lambda": 0.8}, {"weight": 0.5, "density": 0.4, "gamma": 0.02}),
    "breadcrumbs_ties": ({"normalize": True}, {"density": [0.3, 0.6], "gamma": 0.01}),
    "della": ({"rescale": False}, {"weight": 0.7, "density": 0.5, "epsilon": 0.1}),
    "della_linear": ({"lambda": 1.2}, {"density": 0.6, "epsilon": 0.2}),
    "sce": ({"select_topk": 0.4}, {}),
    "ram": ({"epsilon": 1e-4}, {}),
    "ramplus_tl": ({"r": 0.2, "alpha": 0.5}, {}),
    "karcher": ({"max_iter": 5, "tol": 1e-6}, {}),
    "multislerp": ({"normalize_weights": True}, {"weight": 0.3}),
    "nuslerp": ({"nuslerp_flatten": False}, {"weight": 0.6}),
    "nearswap": ({"t": 0.001}, {}),
    "arcee_fusion": ({}, {}),
}


@pytest.mark.parametrize("method", sorted(NEW_METHODS))
def test_each_method_from_mergekits_list_round_trips_through_its_config(method):
    from merge_studio.core.methods import get_method
    from merge_studio.core.recipe import Recipe

    spec = get_method(method)
    params, model_params = NEW_METHODS[method]
    n = 1 if spec.n_models == (1, 1) else 2
    data = {"method": method, "params": params,
            "models": [{"path": f"/m/ft{i}.safetensors", "params": model_params} for i in range(n)]}
    if spec.base != "unused":
        data["base"] = "/m/base.safetensors"
    recipe = Recipe.from_mapping(data)
    config = mergekit_from_recipe(recipe)
    assert config["merge_method"] == method
    again = recipe_from_mergekit(yaml.safe_load(yaml.safe_dump(config)))
    assert (again.method, again.base, again.params, again.models) == (recipe.method, recipe.base, recipe.params, recipe.models)
