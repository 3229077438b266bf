"""The demo set: trained once into the user data folder, then reused."""

from __future__ import annotations

import json

import pytest
import torch

from merge_studio.core import demo
from merge_studio.core.arch import detect_arch
from merge_studio.core.checkpoints import open_checkpoint


@pytest.fixture()
def quick_recipes(monkeypatch):
    recipes = (
        demo.DemoRecipe("mlp_a", "zoo:mlp?hidden=16", 0, epochs=1, lr=1e-2),
        demo.DemoRecipe("mlp_b", "zoo:mlp?hidden=16", 1, epochs=2, lr=1e-2),
    )
    monkeypatch.setattr(demo, "DEMO_RECIPES", recipes)
    return recipes


def test_demo_models_are_trained_into_the_user_data_folder_and_reused(quick_recipes, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDIO_DATA_DIR", str(tmp_path / "data"))
    progress = []
    threads = torch.get_num_threads()
    first = demo.ensure_demo_models(on_progress=progress.append)
    assert torch.get_num_threads() == threads
    assert not first.from_cache
    assert first.folder == tmp_path / "data" / "demo" / demo.DEMO_VERSION
    assert [m.name for m in first.models] == ["mlp_a", "mlp_b"]
    assert progress[-1].done == progress[-1].total == 3
    with open_checkpoint(first.models[0].path) as ck:
        assert detect_arch(ck) == "zoo:mlp?hidden=16"
        assert ck.metadata["merge_studio.seed"] == "0"
    again = demo.ensure_demo_models()
    assert again.from_cache and again.models == first.models


def test_different_seeds_give_different_models(quick_recipes, tmp_path):
    result = demo.ensure_demo_models(tmp_path)
    with open_checkpoint(result.models[0].path) as a, open_checkpoint(result.models[1].path) as b:
        assert not (a.get_tensor("hidden.0.weight") == b.get_tensor("hidden.0.weight")).all()


def test_a_damaged_cache_is_retrained(quick_recipes, tmp_path):
    first = demo.ensure_demo_models(tmp_path)
    first.models[1].path.unlink()
    again = demo.ensure_demo_models(tmp_path)
    assert not again.from_cache and again.models[1].path.is_file()
    manifest = json.loads((tmp_path / demo.MANIFEST).read_text())
    assert manifest["version"] == demo.DEMO_VERSION


def test_user_data_dir_follows_xdg_when_not_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("MERGE_STUDIO_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert demo.user_data_dir() == tmp_path / "merge-studio"
