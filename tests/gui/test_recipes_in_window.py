"""Save recipe writes what the window shows; Open recipe restores the window from it."""

from __future__ import annotations

import yaml

from merge_studio.core.recipe import load_recipe
from merge_studio.gui.main_window import MainWindow
from tests.gui.conftest import load_into


def test_save_then_open_restores_models_method_parameters_and_output(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models)
    window.method_panel.select_method("ties")
    window.model_list.selectRow(0)
    window.actions_by_name["set_base"].trigger()
    form = window.method_panel.form
    form.set_values({"lambda": 0.7, "consensus": "count"})
    model = window.table_model
    model.setData(model.index(1, model.param_column("density")), 0.4)
    window.method_panel.set_output_path(tmp_path / "ties.safetensors")
    window.method_panel.dtype_combo.setCurrentIndex(window.method_panel.dtype_combo.findData("float16"))
    window.method_panel.shard_edit.setText("1GB")
    path = window.save_recipe(tmp_path / "r.yaml")

    data = yaml.safe_load(path.read_text())
    assert data["method"] == "ties"
    assert data["params"]["lambda"] == 0.7 and data["params"]["consensus"] == "count"
    assert data["base"].endswith("mlp_0.safetensors")
    assert data["dtype"] == "float16" and data["shard_size"] == "1GB"
    assert load_recipe(path).models[1].params["density"] == 0.4  # the file the CLI runs

    other = MainWindow()
    qtbot.addWidget(other)
    with qtbot.waitSignal(other.sig_models_loaded, timeout=10_000):
        assert other.open_recipe(path)
    try:
        assert [m.path for m in other.session.models] == [m.path for m in window.session.models]
        assert other.session.base.path.name == "mlp_0.safetensors"
        assert other.method_panel.method_combo.currentData() == "ties"
        assert other.method_panel.form.values()["lambda"] == 0.7
        assert other.method_panel.form.values()["consensus"] == "count"
        assert other.method_panel.output_edit.text() == str(tmp_path / "ties.safetensors")
        assert other.method_panel.dtype_combo.currentData() == "float16"
        assert other.method_panel.shard_edit.text() == "1GB"
        assert other.session.to_recipe() == load_recipe(path)
    finally:
        other.close()


def test_per_layer_values_in_a_recipe_survive_the_window(qtbot, window, tiny_models, tmp_path):
    recipe = tmp_path / "layered.yaml"
    recipe.write_text(yaml.safe_dump({
        "method": "lerp",
        "models": [{"path": str(tiny_models[0])}, {"path": str(tiny_models[1])}],
        "params": {"t": [{"filter": "bias", "value": 0.0}, {"value": [0.2, 0.8]}]},
        "output": str(tmp_path / "out.safetensors"),
    }))
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        assert window.open_recipe(recipe)
    editor = window.method_panel.form.editors["t"]
    assert editor.edit.isReadOnly() and "bias" in editor.edit.text()
    saved = window.save_recipe(tmp_path / "again.yaml")
    assert yaml.safe_load(saved.read_text())["params"]["t"] == [{"filter": "bias", "value": 0.0}, {"value": [0.2, 0.8]}]


def test_a_broken_recipe_shows_a_readable_error_and_changes_nothing(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:1])
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: lerp\nmodels:\n  - path: a.safetensors\nparams:\n  t: 7\n")
    assert not window.open_recipe(bad)
    assert window.error_dialogs and "t" in window.error_dialogs[-1].message_label.text()
    assert [m.path for m in window.session.models] == [tiny_models[0]]
    window.error_dialogs[-1].close()


def test_recent_recipes_are_remembered(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.set_output_path(tmp_path / "x.safetensors")
    path = window.save_recipe(tmp_path / "remember.yaml")
    assert window.settings.recent_recipes[0] == str(path.resolve())
    assert str(tiny_models[0].resolve()) in window.settings.recent_models


def test_a_mergekit_config_with_a_parameter_the_method_ignores_opens_with_a_warning(qtbot, window, tiny_models, tmp_path):
    config = tmp_path / "slerp.yml"
    config.write_text(yaml.safe_dump({
        "merge_method": "slerp", "base_model": str(tiny_models[0]), "parameters": {"t": 0.3},
        "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in tiny_models[:2]],
    }))
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        assert window.open_recipe(config)
    window.method_panel.set_output_path(tmp_path / "out.safetensors")
    label = window.method_panel.warnings_label
    qtbot.waitUntil(window.method_panel.merge_button.isEnabled, timeout=5000)  # a warning does not stop the merge
    assert label.text() == "• weight (on mlp_0.safetensors, mlp_1.safetensors) is not a parameter of SLERP; ignored"
    window.method_panel.select_method("weighted_average")
    qtbot.waitUntil(lambda: not label.isVisible(), timeout=3000)


def test_a_per_model_parameter_for_the_whole_merge_shows_in_each_models_coefficients(qtbot, window, tiny_models, tmp_path):
    config = tmp_path / "ties.yml"
    config.write_text(yaml.safe_dump({
        "merge_method": "ties", "base_model": str(tiny_models[0]), "parameters": {"density": 0.3},
        "models": [{"model": str(tiny_models[1])}, {"model": str(tiny_models[2]), "parameters": {"density": 0.6}}],
    }))
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        assert window.open_recipe(config)
    recipe = window.session.to_recipe()
    assert [m.params.get("density") for m in recipe.models] == [0.3, 0.6]
