"""The demo set: trained once into the user data folder, then reused."""

from __future__ import annotations

import json

import pytest
import torch

from merge_studio.core import demo
from merge_studio.core.arch import detect_arch
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.progress import drive


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
    assert progress[-1].done == progress[-1].total == 30  # tenths of an epoch of the (cost 1) MLPs: 1 + 2 epochs
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


def test_a_recipe_can_train_with_sgd_and_weight_decay():
    recipe = demo.DemoRecipe("vgg", "zoo:vgg?widths=8,16", 0, epochs=2, lr=0.1,
                             optimizer="sgd", weight_decay=1e-2)
    module, accuracy = drive(demo.train_demo_model(recipe))
    assert accuracy > 0.5  # ten classes: chance is 0.1
    assert not module.training


def test_an_unknown_optimizer_is_refused_before_training():
    recipe = demo.DemoRecipe("mlp", "zoo:mlp?hidden=16", 0, epochs=1, lr=1e-2,
                             optimizer="lbfgs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lbfgs"):
        drive(demo.train_demo_model(recipe))


def test_the_demo_resnets_are_trained_with_weight_decay():
    """Weight matching compares weights: without decay, a briefly trained BN ResNet keeps mostly
    its random initial weights and the matched barrier stayed at 62% of the naive one."""
    resnets = [r for r in demo.DEMO_RECIPES if r.arch.startswith("zoo:resnet20")]
    assert len(resnets) == 2
    assert all(r.optimizer == "sgd" and r.weight_decay > 0 for r in resnets)
