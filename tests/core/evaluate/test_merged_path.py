"""The "via merged" curve goes through the merge actually made, with its coefficients, to the B it was made with."""

from __future__ import annotations

import numpy as np
import pytest

from merge_studio.core.engine import run_merge
from merge_studio.core.evaluate.jobs import BarrierRequest, aligned_with
from merge_studio.core.evaluate.merged_path import merged_anchor, read_metadata
from merge_studio.core.progress import drive
from merge_studio.core.recipe import Recipe
from tests.zoo_files import write_zoo_models

SPEC = "zoo:mlp?hidden=16"
DATA = {"source": "digits", "max_examples": 60}


@pytest.fixture
def pair(tmp_path):
    return write_zoo_models(tmp_path, SPEC, stem="m")


def _merge(pair, tmp_path, method: str, params: dict, models: list | None = None, name: str = "merged",
           base: str | None = None) -> str:
    out = tmp_path / f"{name}.safetensors"
    entries = [{"path": str(p)} for p in pair] if models is None else models
    recipe = Recipe(method=method, models=entries, params=params, output=str(out), arch=SPEC, hash_sources=False,
                    base=base)
    run_merge(recipe)
    return str(out)


def test_a_lerp_merge_is_placed_at_its_t_and_flipped_when_a_and_b_are_swapped(pair, tmp_path):
    merged = _merge(pair, tmp_path, "lerp", {"t": 0.3})
    anchor = merged_anchor(read_metadata(merged), pair[0], pair[1])
    assert anchor.position == pytest.approx(0.3) and anchor.on_line and not anchor.aligned_b
    assert "t = 0.3" in anchor.description
    assert merged_anchor(read_metadata(merged), pair[1], pair[0]).position == pytest.approx(0.7)


def test_weights_place_a_weighted_average_and_other_methods_stay_in_the_middle(pair, tmp_path):
    weighted = _merge(pair, tmp_path, "weighted_average", {},
                      models=[{"path": str(pair[0]), "params": {"weight": 1.0}}, {"path": str(pair[1]), "params": {"weight": 3.0}}],
                      name="weighted")
    assert merged_anchor(read_metadata(weighted), *pair).position == pytest.approx(0.75)
    ties = _merge(pair, tmp_path, "task_arithmetic", {}, name="ta", base=str(pair[0]))
    anchor = merged_anchor(read_metadata(ties), *pair)
    assert anchor.position == 0.5 and not anchor.on_line


def test_the_via_merged_curve_passes_through_a_lerp_merge_on_the_straight_line(pair, tmp_path):
    merged = _merge(pair, tmp_path, "lerp", {"t": 0.3})
    request = BarrierRequest(str(pair[0]), str(pair[1]), merged=merged, curves=("naive", "merged"), steps=5,
                             splits=("test",), data=DATA)
    report = drive(request.job())
    naive, via = report.curve("naive"), report.curve("via merged")
    assert via.anchor_positions == (0.0, 0.3, 1.0) and 0.3 in via.lambdas
    on_grid = np.isin(via.lambdas, naive.lambdas)
    # M lies on the line A–B, so A → M → B is that line: the same losses wherever both were evaluated
    np.testing.assert_allclose(via.losses["test"][on_grid], naive.losses["test"], rtol=1e-5, atol=1e-6)


def test_after_weight_matching_the_via_merged_curve_runs_to_the_aligned_b(pair, tmp_path):
    from merge_studio.core.arch import build_module

    merged = _merge(pair, tmp_path, "weight_matching", {"alpha": 0.5, "restarts": 1})
    anchor = merged_anchor(read_metadata(merged), *pair)
    assert anchor.aligned_b and anchor.perms and "B aligned" in anchor.description
    from merge_studio.core.evaluate.jobs import read_state

    aligned_b = aligned_with(anchor, build_module(SPEC), SPEC, read_state(pair[1])[0])
    request = BarrierRequest(str(pair[0]), str(pair[1]), merged=merged, curves=("aligned", "merged"), steps=5,
                             splits=("test",), data=DATA, aligned_state=aligned_b)
    report = drive(request.job())
    aligned, via = report.curve("aligned"), report.curve("via merged")
    assert via.anchors[-1].endswith("′")
    # M = ½A + ½B′: the path A → M → B′ is the straight line to the aligned B
    np.testing.assert_allclose(via.losses["test"], aligned.losses["test"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("permutation", ["[" * 100_000 + "]" * 100_000, '{"groups": {"fc1": 5}}', "[1, 2]"])
def test_metadata_written_by_someone_else_only_loses_the_placement(pair, tmp_path, permutation):
    metadata = read_metadata(_merge(pair, tmp_path, "weight_matching", {}))
    anchor = merged_anchor({**metadata, "merge_studio.permutation": permutation}, *pair)
    assert anchor.description.endswith("permutation not in the file") and not anchor.perms


def test_a_recipe_in_the_metadata_that_is_an_alias_bomb_is_not_expanded(pair):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
    assert merged_anchor({"merge_studio.recipe": bomb + "method: lerp\n"}, *pair).description == "recipe not readable"
