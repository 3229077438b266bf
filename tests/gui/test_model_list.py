"""The model list: drops, bad files, reordering, base, coefficients and compatibility badges."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt

from merge_studio.gui.views.checkpoint_model import COL_FORMAT, COL_NAME
from tests.gui.conftest import drop_files, load_into


def names(window) -> list[str]:
    return [m.path.name for m in window.session.models]


def test_dropping_file_urls_loads_them(qtbot, window, tiny_models):
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        drop_files(qtbot, window.model_list, tiny_models[:2])
    assert names(window) == ["mlp_0.safetensors", "mlp_1.safetensors"]
    assert all(m.status == "ready" for m in window.session.models)
    model = window.table_model
    assert model.rowCount() == 2
    row = [model.index(0, c).data() for c in range(model.columnCount())]
    assert row[:2] == ["mlp_0.safetensors", "safetensors"]
    assert row[4] == "float32"
    assert "Opened mlp_1.safetensors" in window.log_panel.text()


def test_dropping_a_folder_on_the_window_opens_it(qtbot, window, tmp_path, tiny_models):
    folder = tmp_path / "hf_model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(tiny_models[0].read_bytes())
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        drop_files(qtbot, window, [folder])
    assert window.session.models[0].status == "ready"


def test_dropping_a_truncated_file_shows_an_error_and_keeps_the_list(qtbot, window, tiny_models, truncated_model):
    load_into(qtbot, window, tiny_models[:2])
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        drop_files(qtbot, window.model_list, [truncated_model])
    assert names(window) == ["mlp_0.safetensors", "mlp_1.safetensors", "truncated.safetensors"]
    bad = window.session.models[2]
    assert bad.status == "error" and "truncated" in bad.error
    shown = window.table_model.index(2, COL_FORMAT).data()
    assert shown and ("truncated" in shown or "does not fit" in shown)
    assert window.table_model.index(2, COL_NAME).data(Qt.ItemDataRole.DecorationRole) is not None
    assert any(level == "error" and "truncated.safetensors" in text for level, text in window.log_panel.lines)
    assert [m.status for m in window.session.models[:2]] == ["ready", "ready"]
    assert len(window.session.to_recipe().models) == 2  # the bad row is left out of merges


def test_rows_reorder_by_drag(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models)
    model = window.table_model
    mime = model.mimeData([model.index(2, 0)])
    model.dropMimeData(mime, Qt.DropAction.MoveAction, 0, 0, QModelIndex())
    assert names(window) == ["mlp_2.safetensors", "mlp_0.safetensors", "mlp_1.safetensors"]
    assert [e.path for e in window.session.to_recipe().models][0].endswith("mlp_2.safetensors")


def test_remove_and_mark_as_base(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models)
    first = window.session.models[0]
    window.model_list.selectRow(0)
    window.actions_by_name["set_base"].trigger()
    assert window.session.base_id == first.id
    assert "base" in window.table_model.index(0, COL_NAME).data()
    window.model_list.selectRow(1)
    window.actions_by_name["remove"].trigger()
    assert names(window) == ["mlp_0.safetensors", "mlp_2.safetensors"]
    assert window.session.to_recipe().base.endswith("mlp_0.safetensors")


def test_editing_a_coefficient_in_place_reaches_the_recipe(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("weighted_average")
    model = window.table_model
    col = model.param_column("weight")
    assert model.flags(model.index(1, col)) & Qt.ItemFlag.ItemIsEditable
    assert model.setData(model.index(1, col), 3.0)
    recipe = window.session.to_recipe()
    assert [e.params.get("weight", 1.0) for e in recipe.models] == [1.0, 3.0]
    assert window.method_panel.coefficients.model().index(1, col).data() == "3"


def test_an_invalid_coefficient_is_marked_in_its_cell(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models[:2])
    window.session.set_method("ties")
    window.table_model.refresh()
    model = window.table_model
    col = model.param_column("density")
    model.setData(model.index(0, col), 0.0)  # density must be > 0
    assert "greater than 0" in model.index(0, col).data(Qt.ItemDataRole.ToolTipRole)
    assert model.index(0, col).data(Qt.ItemDataRole.BackgroundRole) is not None


def test_an_incompatible_model_gets_a_badge_that_says_why(qtbot, window, tiny_models, odd_model):
    load_into(qtbot, window, [tiny_models[0], odd_model])
    tip = window.table_model.index(1, COL_NAME).data(Qt.ItemDataRole.ToolTipRole)
    assert "Incompatible" in tip and "shape" in tip
    report = window.inspector.compat_view.toPlainText()
    assert "shape" in report
    assert "⚠" in window.inspector.tabs.tabText(2)


def test_inspector_shows_the_selected_checkpoint_and_filters_tensors(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models[:1])
    window.model_list.selectRow(0)
    inspector = window.inspector
    assert inspector.title.text() == "mlp_0.safetensors"
    assert inspector.tensor_model.rowCount() == 8
    inspector.filter_edit.setText("bias")
    assert inspector.proxy.rowCount() == 4
    assert "4 of 8" in inspector.filter_count.text()
    assert inspector.module_tree.topLevelItemCount() == 4  # Sequential indices 0, 2, 4, 6


def test_mismatched_models_block_merge_until_the_user_says_what_to_do(qtbot, window, tiny_models, odd_model, tmp_path):
    load_into(qtbot, window, [tiny_models[0], odd_model])
    window.method_panel.set_output_path(tmp_path / "m.safetensors")
    qtbot.waitUntil(lambda: "do not line up" in window.method_panel.problems_label.text(), timeout=3000)
    assert not window.method_panel.merge_button.isEnabled()
    combo = window.method_panel.mismatch_combo
    combo.setCurrentIndex(combo.findData("skip"))
    qtbot.waitUntil(window.method_panel.merge_button.isEnabled, timeout=3000)


def test_the_graph_tab_draws_the_selected_model_when_shown(qtbot, window, tiny_models):
    graph = window.extra_views.get("Graph")
    if graph is None:  # the Graph view is another issue's; without it the tab shows an empty state
        assert window.tabs.tabText(1) == "Graph"
        return
    load_into(qtbot, window, tiny_models[:1])
    window.model_list.selectRow(0)
    window.tabs.setCurrentWidget(graph)
    assert graph._checkpoint is window.session.models[0].checkpoint
    window.tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: not window.runner.running(), timeout=20_000)


def test_shortcuts_people_expect(window):
    shortcuts = {name: act.shortcut().toString() for name, act in window.actions_by_name.items()}
    assert shortcuts["open"] == "Ctrl+O" and shortcuts["save_recipe"] == "Ctrl+S"
    assert shortcuts["merge"] == "Ctrl+M" and shortcuts["remove"] == "Del"
    assert shortcuts["quit"] == "Ctrl+Q"
