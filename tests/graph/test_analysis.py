"""Per-layer numbers after a merge: relative change, cosine similarity, kept task-vector mass."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.analysis import (
    group_by_layer,
    iter_layer_cosine,
    layer_cosine,
    layer_kept_fraction,
    layer_relative_change,
)
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.progress import CancelToken, Progress
from merge_studio.errors import Cancelled, CheckpointError


def _save(path, tensors, metadata=None):
    save_file(tensors, path, metadata=metadata)
    return path


@pytest.fixture
def pair(tmp_path):
    a = {"enc.weight": torch.ones(4, 4), "enc.bias": torch.ones(4), "head.weight": torch.ones(2, 4),
         "bn.num_batches_tracked": torch.tensor(3)}
    m = {"enc.weight": torch.ones(4, 4) * 1.5, "enc.bias": torch.ones(4) * 1.5, "head.weight": -torch.ones(2, 4),
         "bn.num_batches_tracked": torch.tensor(9)}
    with open_checkpoint(_save(tmp_path / "a.safetensors", a)) as ck_a, \
            open_checkpoint(_save(tmp_path / "m.safetensors", m)) as ck_m:
        yield ck_a, ck_m


def test_groups_tensors_by_layer():
    assert group_by_layer(["a.b.weight", "a.b.bias", "c.weight", "scale"]) == {
        "a.b": ["a.b.weight", "a.b.bias"], "c": ["c.weight"], "scale": ["scale"]}


def test_relative_change_per_layer(pair):
    a, m = pair
    change = layer_relative_change(a, m)
    assert change["enc"] == pytest.approx(0.5)
    assert change["head"] == pytest.approx(2.0)
    assert "bn" not in change  # integer counters are not weights


def test_cosine_per_layer(pair):
    a, m = pair
    cosine = layer_cosine(a, m)
    assert cosine["enc"] == pytest.approx(1.0)
    assert cosine["head"] == pytest.approx(-1.0)


def test_analysis_reports_progress_and_can_be_cancelled(pair):
    a, m = pair
    events = list(_progress(iter_layer_cosine(a, m)))
    assert events[-1].done == events[-1].total == 3
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        layer_cosine(a, m, cancel=token)


def _progress(job):
    try:
        while True:
            item = next(job)
            assert isinstance(item, Progress)
            yield item
    except StopIteration:
        return


def test_unrelated_checkpoints_are_refused(tmp_path):
    with open_checkpoint(_save(tmp_path / "x.safetensors", {"x.weight": torch.ones(2)})) as x, \
            open_checkpoint(_save(tmp_path / "y.safetensors", {"y.weight": torch.ones(2)})) as y:
        with pytest.raises(CheckpointError, match="share no"):
            layer_cosine(x, y)


def test_kept_fraction_reads_the_engine_statistics(tmp_path):
    stats = {"enc": {"task_mass_total": 10.0, "task_mass_kept": 2.5}, "head": {"relative_change": 0.1}}
    path = _save(tmp_path / "merged.safetensors", {"enc.weight": torch.ones(2)},
                 {"merge_studio.layer_stats": json.dumps(stats)})
    with open_checkpoint(path) as merged:
        assert layer_kept_fraction(merged) == {"enc": 0.25}


def test_kept_fraction_of_a_real_ties_merge(tmp_path):
    from merge_studio.core.engine import run_merge
    from merge_studio.core.recipe import Recipe

    torch.manual_seed(0)
    base = {"fc.weight": torch.randn(16, 16), "fc.bias": torch.randn(16)}
    paths = [_save(tmp_path / "base.safetensors", base)]
    for i in range(2):
        paths.append(_save(tmp_path / f"ft{i}.safetensors", {k: v + torch.randn_like(v) for k, v in base.items()}))
    recipe = Recipe(
        method="ties",
        base=str(paths[0]),
        models=[{"path": str(p), "params": {"density": 0.3}} for p in paths[1:]],
        output=str(tmp_path / "out.safetensors"),
    )
    run_merge(recipe)
    with open_checkpoint(tmp_path / "out.safetensors") as merged:
        kept = layer_kept_fraction(merged)
    assert set(kept) == {"fc"} and 0.3 < kept["fc"] < 1.0 and math.isfinite(kept["fc"])
