"""The suggested output says what the merge is, follows the method, and never lands in an app's cache."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait


def _output(window) -> Path:
    return Path(window.method_panel.output_edit.text())


def test_the_suggestion_names_the_method_and_inputs_and_follows_the_method(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("slerp")
    assert _output(window) == tiny_models[0].parent / "slerp-mlp_0+mlp_1.safetensors"
    window.method_panel.select_method("simple_average")
    assert _output(window).name == "simple_average-mlp_0+mlp_1.safetensors"


def test_a_typed_output_is_kept_when_the_method_changes(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.set_output_path(tmp_path / "mine.safetensors")
    window.method_panel.select_method("slerp")
    assert _output(window) == tmp_path / "mine.safetensors"


def test_models_in_the_apps_data_folder_get_an_output_outside_it(qtbot, window, tiny_models, tmp_path, monkeypatch):
    from merge_studio.core.user_dirs import user_data_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    demo = user_data_dir() / "demo"
    demo.mkdir(parents=True)
    copies = [Path(shutil.copy(p, demo / p.name)) for p in tiny_models[:2]]
    load_into(qtbot, window, copies)
    window.method_panel.select_method("slerp")
    assert _output(window) == tmp_path / "home" / "merge-studio-outputs" / "slerp-mlp_0+mlp_1.safetensors"


def test_after_a_merge_suggestions_go_to_the_folder_merged_into(qtbot, window, tiny_models, tmp_path):
    chosen = tmp_path / "outputs"
    chosen.mkdir()
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    window.method_panel.set_output_path(chosen / "first.safetensors")
    assert merge_and_wait(qtbot, window) is not None
    assert window.settings.outputs_folder == chosen
    window.remove_models([m.id for m in window.session.models])
    window.method_panel.set_output_path("")
    load_into(qtbot, window, tiny_models[1:3])
    assert _output(window) == chosen / "simple_average-mlp_1+mlp_2.safetensors"
