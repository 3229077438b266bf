"""The window's state as data: recipes in and out, and what the window remembers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from merge_studio.core.recipe import Recipe
from merge_studio.errors import RecipeError
from merge_studio.gui.main_window import MainWindow
from merge_studio.gui.session import Session
from merge_studio.gui.settings import AppSettings
from tests.gui.conftest import load_into


def test_an_empty_session_says_what_is_missing():
    with pytest.raises(RecipeError, match="no models"):
        Session().to_recipe()


def test_a_recipe_base_that_is_not_a_model_stays_out_of_the_models(tmp_path):
    recipe = Recipe.from_mapping({
        "method": "task_arithmetic",
        "models": [{"path": str(tmp_path / "a.safetensors"), "params": {"weight": 0.5}}],
        "base": str(tmp_path / "base.safetensors"),
        "params": {"lambda": 0.8},
        "output": str(tmp_path / "out.safetensors"),
        "seed": 7,
    })
    session = Session()
    rows = session.apply_recipe(recipe)
    assert [r.path.name for r in rows] == ["a.safetensors", "base.safetensors"]
    assert session.base.path.name == "base.safetensors" and not session.base.in_models
    for row in rows:  # pretend both loaded
        row.status = "ready"
    again = session.to_recipe()
    assert [Path(m.path).name for m in again.models] == ["a.safetensors"]
    assert again.models[0].params == {"weight": 0.5}
    assert again.params["lambda"] == 0.8 and again.seed == 7 and again.base.endswith("base.safetensors")


def test_switching_methods_keeps_each_methods_parameters():
    session = Session()
    session.set_method("lerp")
    session.set_params({"t": 0.25})
    session.set_method("ties")
    session.set_params({"lambda": 0.5})
    session.set_method("lerp")
    assert session.params()["t"] == 0.25
    assert session.params("ties")["lambda"] == 0.5


def test_suggested_output_never_overwrites_a_file(tmp_path, tiny_models):
    session = Session()
    row = session.add_pending(tiny_models[0])
    row.status = "ready"
    first = Path(session.suggest_output())
    first.write_bytes(b"x")
    assert Path(session.suggest_output()) != first


def test_the_window_remembers_its_layout_and_recent_files(qtbot, tiny_models):
    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    load_into(qtbot, first, tiny_models[:1])
    first.h_split.setSizes([420, 500, 380])
    sizes = first.h_split.sizes()
    first.close()

    settings = AppSettings()
    assert settings.geometry is not None and settings.splitter_state("h") is not None
    assert settings.recent_models == [str(tiny_models[0].resolve())]
    assert settings.last_folder("models") == str(tiny_models[0].parent)

    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    # the saved layout wins over the default one (the offscreen screen is too small to compare pixels)
    assert second._user_sized
    assert sum(sizes) > 0
    recent = second.menuBar().actions()[0].menu().actions()[2].menu()
    assert [a.text() for a in recent.actions()] == ["mlp_0.safetensors"]
    second.close()


def test_try_the_demo_loads_the_demo_models(qtbot, window, tiny_models, monkeypatch):
    import merge_studio.core.demo as demo

    def fake_demo(folder=None, *, cancel=None, force=False):
        yield from ()
        return SimpleNamespace(paths=lambda arch_prefix=None: list(tiny_models[:2]))

    monkeypatch.setattr(demo, "iter_demo_models", fake_demo)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        assert window.load_demo() is not None
    assert [m.path for m in window.session.models] == list(tiny_models[:2])
