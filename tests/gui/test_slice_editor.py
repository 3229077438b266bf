"""The slice editor: pick layer ranges with the mouse, stack them, see the depth, read and write mergekit YAML."""

from __future__ import annotations

import json

import pytest
import yaml
from PySide6.QtCore import QMimeData, QPointF, Qt
from PySide6.QtGui import QDropEvent
from safetensors import safe_open

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.mergekit_config import recipe_from_mergekit
from merge_studio.gui.dialogs.slice_editor import SliceEditorDialog
from merge_studio.gui.views.layer_columns import SLICE_MIME
from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait
from tests.hf_models import make_hf_folder


@pytest.fixture
def llamas(tmp_path):
    pytest.importorskip("transformers")
    return [make_hf_folder(tmp_path / name, seed=i, num_hidden_layers=4) for i, name in enumerate(("alpha", "beta"))]


@pytest.fixture
def editor(qtbot, llamas):
    cks = [open_checkpoint(p) for p in llamas]
    dialog = SliceEditorDialog([(str(p), ck.name, ck.infos) for p, ck in zip(llamas, cks)], method="slerp")
    qtbot.addWidget(dialog)
    dialog.show()
    yield dialog
    for ck in cks:
        ck.close()


def _drag_select(qtbot, columns, column: int, first: int, last: int) -> None:
    """Press on one layer and drag down to another, as a user picks a range."""
    qtbot.mousePress(columns, Qt.MouseButton.LeftButton, pos=columns.cell_centre(column, first))
    qtbot.mouseMove(columns, columns.cell_centre(column, last))
    qtbot.mouseRelease(columns, Qt.MouseButton.LeftButton, pos=columns.cell_centre(column, last))


def test_picking_ranges_with_the_mouse_builds_a_stack_whose_depth_updates_live(qtbot, editor, llamas):
    _drag_select(qtbot, editor.columns, 0, 0, 2)
    assert editor.columns.picked() == {"model": str(llamas[0]), "layer_range": [0, 3]}
    qtbot.mouseClick(editor.add_button, Qt.MouseButton.LeftButton)
    assert "3 layers" in editor.summary.text()
    _drag_select(qtbot, editor.columns, 1, 3, 1)  # upwards works too
    qtbot.mouseClick(editor.add_button, Qt.MouseButton.LeftButton)
    assert "6 layers" in editor.summary.text() and "parameters" in editor.summary.text()
    assert editor.stack.item(1).text().startswith("2. layers 3–5 ← beta 1–3")
    editor.stack.setCurrentRow(1)
    qtbot.mouseClick(editor.up_button, Qt.MouseButton.LeftButton)
    assert [sl["sources"][0]["model"] for sl in editor.slices()] == [str(llamas[1]), str(llamas[0])]


def test_a_range_dropped_on_the_stack_becomes_a_slice_at_that_place(qtbot, editor, llamas):
    editor.set_slices([{"sources": [{"model": str(llamas[0]), "layer_range": [0, 4]}]}])
    mime = QMimeData()
    mime.setData(SLICE_MIME, json.dumps({"model": str(llamas[1]), "layer_range": [2, 4]}).encode())
    top = editor.stack.visualItemRect(editor.stack.item(0)).center()
    event = QDropEvent(QPointF(top), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    editor.stack.dropEvent(event)
    assert [sl["sources"][0]["layer_range"] for sl in editor.slices()] == [[2, 4], [0, 4]]
    assert "6 layers" in editor.summary.text()


def test_a_second_source_makes_a_merged_slice_and_must_give_as_many_layers(qtbot, editor, llamas):
    editor.set_slices([{"sources": [{"model": str(llamas[0]), "layer_range": [0, 2]}]}])
    editor.stack.setCurrentRow(0)
    _drag_select(qtbot, editor.columns, 1, 0, 2)
    qtbot.mouseClick(editor.merge_button, Qt.MouseButton.LeftButton)
    assert "same number of layers" in editor.problem.text() and len(editor.slices()[0]["sources"]) == 1
    _drag_select(qtbot, editor.columns, 1, 3, 2)
    qtbot.mouseClick(editor.merge_button, Qt.MouseButton.LeftButton)
    assert [s["layer_range"] for s in editor.slices()[0]["sources"]] == [[0, 2], [2, 4]]
    assert "merged: SLERP" in editor.stack.item(0).text() and "1 merged slice" in editor.summary.text()
    editor.params_edit.setText("{t: 0.3}")
    editor.params_edit.editingFinished.emit()
    assert editor.slices()[0]["params"] == {"t": 0.3}


def test_a_range_past_a_models_layers_is_shown_as_a_problem(editor, llamas):
    editor.set_slices([{"sources": [{"model": str(llamas[0]), "layer_range": [0, 9]}]}])
    assert "cannot be stacked" in editor.problem.text() and "9" in editor.problem.text()


def test_slices_round_trip_through_mergekit_yaml(editor, llamas, tmp_path):
    editor.set_slices([{"sources": [{"model": str(llamas[0]), "layer_range": [0, 3]}]},
                       {"sources": [{"model": str(llamas[1]), "layer_range": [1, 4]}]}])
    path = tmp_path / "stack.yml"
    assert editor.export_yaml(path)
    config = yaml.safe_load(path.read_text())
    assert config["merge_method"] == "passthrough" and len(config["slices"]) == 2
    recipe = recipe_from_mergekit(config)
    assert [sl.sources[0].layer_range for sl in recipe.slices] == [(0, 3), (1, 4)]
    editor.set_slices([])
    assert editor.import_yaml(path)
    assert [sl["sources"][0]["layer_range"] for sl in editor.slices()] == [[0, 3], [1, 4]]


def test_the_window_merges_the_edited_stack_into_a_deeper_folder(qtbot, window, llamas, tmp_path):
    load_into(qtbot, window, llamas)
    dialog = window.open_slice_editor() or window._slice_editor
    qtbot.waitUntil(dialog.isVisible)
    dialog.set_slices([{"sources": [{"model": str(llamas[0]), "layer_range": [0, 4]}]},
                       {"sources": [{"model": str(llamas[1]), "layer_range": [2, 4]}]}])
    dialog.accept()
    assert window.session.method == "passthrough"
    assert window.method_panel.slices_label.text() == "2 slices, 6 layers"
    window.method_panel.set_output_path(tmp_path / "stacked")
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=10_000)  # problems: {window.method_panel.problems_label.text()}
    result = merge_and_wait(qtbot, window)
    assert json.loads((result.output / "config.json").read_text())["num_hidden_layers"] == 6
    with safe_open(result.output / "model.safetensors", "pt") as f:
        assert "model.layers.5.mlp.up_proj.weight" in f.keys()
