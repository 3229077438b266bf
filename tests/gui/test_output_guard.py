"""The window asks before it replaces an existing output."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox
from safetensors.torch import load_file

from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait


def _answer(monkeypatch, button):
    asked: list[str] = []

    def question(_parent, title, text, *_a, **_k):
        asked.append(text)
        return button

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def test_answering_no_keeps_the_existing_output_and_starts_nothing(qtbot, window, tiny_models, tmp_path, monkeypatch):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"precious")
    window.method_panel.set_output_path(out)
    asked = _answer(monkeypatch, QMessageBox.StandardButton.No)
    assert window.start_merge() is None
    assert asked and str(out) in asked[0]
    assert out.read_bytes() == b"precious" and window.merge_worker is None
    assert "Kept" in window.log_panel.text()


def test_answering_yes_replaces_the_output(qtbot, window, tiny_models, tmp_path, monkeypatch):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"old")
    window.method_panel.set_output_path(out)
    asked = _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    result = merge_and_wait(qtbot, window)
    assert asked and result is not None and result.output == out
    assert len(load_file(str(out))) == 8


def test_a_new_output_is_written_without_a_question(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    window.method_panel.set_output_path(tmp_path / "fresh.safetensors")
    assert merge_and_wait(qtbot, window) is not None  # the autouse guard fails on any question


def test_a_scripted_window_replaces_and_closes_without_questions(qtbot, tiny_models, tmp_path, monkeypatch):
    """Screenshots and benchmarks (windows that leave the settings alone) must never wait on a dialog."""
    from merge_studio.gui import output_guard
    from merge_studio.gui.main_window import MainWindow

    monkeypatch.setattr(output_guard, "confirm_discard_changes", lambda _p: pytest.fail("asked about unsaved edits"))
    win = MainWindow(remember_layout=False)
    qtbot.addWidget(win)
    win.show()
    load_into(qtbot, win, tiny_models[:2])
    win.method_panel.select_method("simple_average")
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"old")
    win.method_panel.set_output_path(out)
    assert merge_and_wait(qtbot, win) is not None and len(load_file(str(out))) == 8
    assert win.close()
