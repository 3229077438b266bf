"""Merge and test without writing: Evaluate and the via-merged barrier curve on a recipe merged in memory
give what writing the merge and evaluating the file gives, and nothing is written."""

from __future__ import annotations

import numpy as np
import pytest

from merge_studio.core.engine import run_merge
from merge_studio.core.evaluate.jobs import MEMORY_MERGE_NAME, BarrierRequest, EvaluateRequest
from merge_studio.core.evaluate.data import DataSpec
from merge_studio.core.progress import drive
from merge_studio.core.recipe import Recipe
from tests.zoo_files import write_zoo_models

SPEC = "zoo:mlp?hidden=16"
DATA = DataSpec(source="digits", max_examples=60)


@pytest.fixture
def pair(tmp_path):
    return [str(p) for p in write_zoo_models(tmp_path, SPEC, stem="m")]


def _recipe(pair, out) -> Recipe:
    return Recipe(method="lerp", models=[{"path": p} for p in pair], params={"t": 0.3}, output=str(out), arch=SPEC,
                  hash_sources=False)


def test_evaluating_the_recipe_in_memory_scores_what_the_written_merge_scores(pair, tmp_path):
    out = tmp_path / "merged.safetensors"
    in_memory = drive(EvaluateRequest(models=tuple(pair), data=DATA, merged_recipe=_recipe(pair, out)).job())
    assert not out.exists()
    run_merge(_recipe(pair, out))
    from_file = drive(EvaluateRequest(models=(*pair, str(out)), data=DATA).job())
    assert in_memory.names[-1] == MEMORY_MERGE_NAME
    for split in ("train", "test"):
        assert [r.loss for r in in_memory.results[split]] == [r.loss for r in from_file.results[split]]
        assert [r.accuracy for r in in_memory.results[split]] == [r.accuracy for r in from_file.results[split]]


def test_the_via_merged_curve_of_the_recipe_in_memory_is_the_one_through_the_written_merge(pair, tmp_path):
    out = tmp_path / "merged.safetensors"
    request = BarrierRequest(model_a=pair[0], model_b=pair[1], data=DATA, steps=5, curves=("naive", "merged"))
    in_memory = drive(BarrierRequest(**{**request.__dict__, "merged_recipe": _recipe(pair, out)}).job())
    assert not out.exists()
    run_merge(_recipe(pair, out))
    from_file = drive(BarrierRequest(**{**request.__dict__, "merged": str(out)}).job())
    a, b = in_memory.curve("via merged"), from_file.curve("via merged")
    assert a.anchor_positions[1] == pytest.approx(0.3) and a.anchor_note == b.anchor_note
    np.testing.assert_array_equal(a.losses["test"], b.losses["test"])
