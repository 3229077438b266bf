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
        recipe_from_mergekit({"merge_method": "passthrough", "models": [{"model": "a"}]})


def test_layer_stacking_configs_are_refused_clearly():
    config = {"merge_method": "slerp", "base_model": "a", "slices": [
        {"sources": [{"model": "a", "layer_range": [0, 24]}]},
        {"sources": [{"model": "b", "layer_range": [20, 40]}]},
    ]}
    with pytest.raises(RecipeError, match="stacking"):
        recipe_from_mergekit(config)
