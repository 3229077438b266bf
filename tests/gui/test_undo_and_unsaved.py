"""Edits to the list, the form and the output undo and redo; unsaved changes show and are asked about."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from merge_studio.gui import output_guard
from tests.gui.conftest import load_into

REAL_CONFIRM = output_guard.confirm_discard_changes  # the autouse fixture replaces it after import


def _weights(window):
    model = window.table_model
    col = model.param_column("weight")
    return [model.index(r, col).data(Qt.ItemDataRole.EditRole) for r in range(model.rowCount())]


def test_undo_and_redo_walk_back_and_forth_through_form_coefficient_and_output_edits(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    history = window.edit_history
    window.method_panel.select_method("weighted_average")
    history.record()
    model = window.table_model
    model.setData(model.index(0, model.param_column("weight")), 3.0)
    history.record()
    window.method_panel.set_output_path(tmp_path / "typed.safetensors")
    history.record()

    window.actions_by_name["undo"].trigger()
    assert window.method_panel.output_edit.text() != str(tmp_path / "typed.safetensors")
    assert _weights(window) == [3.0, 1.0]
    window.actions_by_name["undo"].trigger()
    assert _weights(window) == [1.0, 1.0]
    window.actions_by_name["redo"].trigger()
    window.actions_by_name["redo"].trigger()
    assert _weights(window) == [3.0, 1.0]
    assert window.method_panel.output_edit.text() == str(tmp_path / "typed.safetensors")


def test_undoing_a_removal_brings_the_model_back_and_reads_it_again(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models[:3])
    window.edit_history.record()
    window.remove_models([window.session.models[1].id])
    assert [m.path for m in window.session.models] == [tiny_models[0], tiny_models[2]]
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        window.actions_by_name["undo"].trigger()
    assert [m.path for m in window.session.models] == tiny_models[:3]
    assert all(m.status == "ready" for m in window.session.models)
    assert "remove model" in window.actions_by_name["redo"].text()


def test_the_title_marks_unsaved_changes_until_the_recipe_is_saved(qtbot, window, tiny_models, tmp_path):
    assert not window.isWindowModified()
    load_into(qtbot, window, tiny_models[:2])
    assert window.edit_history.dirty and window.isWindowModified()
    window.method_panel.set_output_path(tmp_path / "m.safetensors")
    assert window.save_recipe(tmp_path / "r.yaml") is not None
    assert not window.edit_history.dirty and not window.isWindowModified()
    assert window.windowTitle() == "r.yaml[*] — Merge Studio"


def test_closing_with_unsaved_changes_asks_and_cancel_keeps_the_window(qtbot, window, tiny_models, monkeypatch):
    monkeypatch.setattr(output_guard, "confirm_discard_changes", REAL_CONFIRM)
    asked = []
    answer = [QMessageBox.StandardButton.Cancel]
    monkeypatch.setattr(QMessageBox, "question", lambda _p, title, *_a, **_k: asked.append(title) or answer[0])
    load_into(qtbot, window, tiny_models[:2])
    assert not window.close() and window.isVisible() and asked == ["Unsaved changes"]
    answer[0] = QMessageBox.StandardButton.Discard
    assert window.close()


def test_closing_right_after_saving_asks_nothing(qtbot, window, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(output_guard, "confirm_discard_changes", REAL_CONFIRM)
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.set_output_path(tmp_path / "m.safetensors")
    window.save_recipe(tmp_path / "r.yaml")
    assert window.close()  # the autouse guard fails on any question
