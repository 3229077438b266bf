"""Recipes: validation through the method declarations, YAML round trips, readable errors."""

from __future__ import annotations

import pytest

from merge_studio.core.recipe import Recipe, load_recipe, parse_size
from merge_studio.errors import RecipeError


def _write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_a_saved_recipe_loads_back_identical(tmp_path):
    recipe = Recipe(
        method="weighted_average",
        models=[{"path": str(tmp_path / "a.safetensors"), "params": {"weight": 0.3}}, {"path": str(tmp_path / "b.safetensors"), "params": {"weight": [0.1, 0.9]}}],
        params={"normalize": False},
        output=str(tmp_path / "out.safetensors"),
        dtype="bfloat16",
        shard_size="2GB",
    )
    path = recipe.save(tmp_path / "r.yaml")
    assert load_recipe(path) == recipe


def test_relative_paths_are_taken_from_the_recipe_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "r.yaml"
    path.write_text("method: simple_average\nmodels:\n  - path: a.safetensors\n  - path: ../b.safetensors\noutput: out/merged.safetensors\n")
    recipe = load_recipe(path)
    assert recipe.models[0].path == str(tmp_path / "sub" / "a.safetensors")
    assert recipe.models[1].path == str(tmp_path / "sub" / ".." / "b.safetensors")
    assert recipe.output == str(tmp_path / "sub" / "out" / "merged.safetensors")


def test_out_of_bounds_parameter_names_the_field_and_the_bound(tmp_path):
    path = _write(tmp_path, "method: lerp\nmodels:\n  - path: a.safetensors\n  - path: b.safetensors\nparams:\n  t: 1.5\n")
    with pytest.raises(RecipeError, match=r"params\.t: Input should be less than or equal to 1"):
        load_recipe(path)


def test_a_bad_value_inside_a_layer_gradient_is_caught_before_running():
    with pytest.raises(RecipeError, match=r"params\.t"):
        Recipe.from_mapping({"method": "lerp", "models": [{"path": "a"}, {"path": "b"}], "params": {"t": [0.0, 2.0]}})


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"unknown parameter 'tt'.*parameters: t"):
        Recipe.from_mapping({"method": "lerp", "models": [{"path": "a"}, {"path": "b"}], "params": {"tt": 0.5}})


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"unknown merge method 'avg'.*simple_average"):
        Recipe.from_mapping({"method": "avg", "models": [{"path": "a"}]})


def test_errors_in_plain_fields_give_the_line_number(tmp_path):
    path = _write(tmp_path, "method: simple_average\nmodels:\n  - path: a\ndevice: gpu7\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml:4: device"):
        load_recipe(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = _write(tmp_path, "!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_an_alias_bomb_is_refused_at_once_without_expanding_it(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
    path = _write(tmp_path, "\n".join(lines) + "\nmerge_method: linear\nmodels:\n  - model: x\n    parameters: {weight: *i}\n")
    with pytest.raises(RecipeError, match="expands to more than 200,000 values"):
        load_recipe(path)


def test_brackets_nested_thousands_deep_are_refused_as_yaml(tmp_path):
    path = _write(tmp_path, "method: linear\nmodels: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError, match="nested more than 100 levels"):
        load_recipe(path)


def test_anchors_and_aliases_of_an_ordinary_config_still_work(tmp_path):
    path = _write(tmp_path, "merge_method: linear\nmodels:\n  - model: a\n    parameters: &w {weight: 0.5}\n"
                            "  - model: b\n    parameters: *w\n")
    recipe = load_recipe(path)
    assert [m.params for m in recipe.models] == [{"weight": 0.5}, {"weight": 0.5}]


def test_mergekit_alias_becomes_our_name():
    recipe = Recipe.from_mapping({"method": "linear", "models": [{"path": "a", "params": {"weight": 1}}, {"path": "b", "params": {"weight": 2}}]})
    assert recipe.method == "weighted_average"


@pytest.mark.parametrize(("text", "size"), [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), (1234, 1234), ("100", 100)])
def test_sizes_are_read_in_human_units(text, size):
    assert parse_size(text) == size


def test_unreadable_size_says_how_to_write_one():
    with pytest.raises(RecipeError, match="5GB"):
        parse_size("five gigs")


def test_evaluation_data_is_checked_when_the_recipe_loads():
    with pytest.raises(RecipeError, match=r"data\.task"):
        Recipe.from_mapping({"method": "simple_average", "models": [{"path": "a"}], "data": {"source": "digits", "task": "poetry"}})
    ok = Recipe.from_mapping({"method": "simple_average", "models": [{"path": "a"}], "data": {"source": "digits", "batch_size": 64}})
    assert ok.data == {"source": "digits", "batch_size": 64}
