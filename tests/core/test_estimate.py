"""The estimate before merging: the size is right, dry runs write nothing, a full disk is refused up front."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.cli.main import main
from merge_studio.core.estimate import estimate_merge, free_space
from merge_studio.core.recipe import Recipe


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


@pytest.fixture
def models(tmp_path):
    paths = []
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        state = {f"layers.{k}.weight": torch.randn(64, 48, generator=g) for k in range(6)}
        state["layers.0.bias"] = torch.randn(64, generator=g)
        state["steps"] = torch.tensor([i], dtype=torch.int64)
        path = tmp_path / f"m{i}.safetensors"
        save_file(state, str(path))
        paths.append(path)
    return paths


def _recipe(models, out, **extra):
    return Recipe.from_mapping({"method": "ties", "base": str(models[0]), "models": [{"path": str(p)} for p in models[1:]],
                                "params": {"density": 0.5}, "output": str(out), **extra})


@pytest.mark.parametrize("extra", [{}, {"dtype": "bfloat16"}, {"shard_size": "20KB"}], ids=["same", "bf16", "shards"])
def test_the_estimated_size_is_within_5_percent_of_the_written_output(models, tmp_path, extra):
    out = tmp_path / ("out" if "shard_size" in extra else "out.safetensors")
    recipe = _recipe(models, out, **extra)
    estimate = estimate_merge(recipe)
    assert not out.exists()
    assert main(["merge", str(recipe.save(tmp_path / "r.yaml")), "-q"]) == 0
    real = _size(out)
    assert abs(estimate.output_bytes - real) / real < 0.05, (estimate.output_bytes, real)
    assert estimate.tensor_count == 8 and estimate.free_bytes and estimate.peak_memory_bytes > 0 and estimate.seconds > 0


def test_the_estimate_for_a_hugging_face_folder_counts_its_config_and_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_models import make_hf_folder

    a, b = make_hf_folder(tmp_path / "a", seed=1), make_hf_folder(tmp_path / "b", seed=2)
    out = tmp_path / "merged"
    recipe = Recipe.from_mapping({"method": "slerp", "models": [{"path": str(a)}, {"path": str(b)}],
                                  "params": {"t": 0.5}, "output": str(out), "dtype": "float16"})
    estimate = estimate_merge(recipe)
    assert main(["merge", str(recipe.save(tmp_path / "r.yaml")), "-q"]) == 0
    real = _size(out)
    assert abs(estimate.output_bytes - real) / real < 0.05, (estimate.output_bytes, real)


def test_dry_run_prints_the_estimate_and_writes_nothing(models, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    code = main(["merge", "--method", "simple_average", *map(str, models), "-o", str(out), "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert "nothing written" in text and "output" in text and "free at" in text and "peak memory" in text
    assert "time" in text and ("assumed" in text or "measured" in text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.safetensors", "m1.safetensors", "m2.safetensors"]


def test_a_merge_that_cannot_fit_is_refused_up_front_with_the_figures(models, tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "out.safetensors"
    code = main(["merge", "--method", "simple_average", *map(str, models), "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "not enough disk space" in err[0] and "1.0 KB free" in err[0] and "needs" in err[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_free_space_is_measured_at_the_nearest_existing_folder(tmp_path):
    free, at = free_space(tmp_path / "not" / "yet" / "out.safetensors")
    assert at == tmp_path and free is not None and free > 0
