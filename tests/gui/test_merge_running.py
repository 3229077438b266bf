"""While a merge runs: the form is locked, and closing the window asks before cancelling it."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait


def _prepare(qtbot, window, tiny_models, out):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    window.method_panel.set_output_path(out)


def _answer(monkeypatch, button):
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda _p, title, *_a, **_k: asked.append(title) or button)
    return asked


def test_the_method_panel_is_locked_while_a_merge_runs_and_unlocked_after(qtbot, window, tiny_models, tmp_path):
    _prepare(qtbot, window, tiny_models, tmp_path / "m.safetensors")
    content = window.method_panel.findChild(QWidget, "method_content")
    with qtbot.waitSignal(window.sig_merge_finished, timeout=20_000):
        assert window.start_merge() is not None
        assert not content.isEnabled() and not window.method_panel.method_combo.isEnabled()
    qtbot.waitUntil(lambda: window.merge_worker is None, timeout=20_000)
    assert content.isEnabled() and window.method_panel.method_combo.isEnabled()


def test_closing_during_a_merge_and_answering_no_keeps_the_window_and_the_merge(qtbot, window, tiny_models, tmp_path,
                                                                                monkeypatch):
    out = tmp_path / "m.safetensors"
    _prepare(qtbot, window, tiny_models, out)
    asked = _answer(monkeypatch, QMessageBox.StandardButton.No)
    with qtbot.waitSignal(window.sig_merge_finished, timeout=20_000) as blocker:
        assert window.start_merge() is not None
        assert not window.close()
        assert asked == ["A merge is running"] and window.isVisible()
    assert blocker.args[0] is not None and out.exists()


def test_closing_during_a_merge_and_answering_yes_cancels_it_and_writes_nothing(qtbot, window, tiny_models, tmp_path,
                                                                                 monkeypatch):
    out = tmp_path / "m.safetensors"
    _prepare(qtbot, window, tiny_models, out)
    asked = _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    assert window.start_merge() is not None
    assert window.close()
    assert asked and not window.isVisible()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".m.safetensors")]


def test_closing_after_a_merge_asks_nothing(qtbot, window, tiny_models, tmp_path):
    _prepare(qtbot, window, tiny_models, tmp_path / "m.safetensors")
    assert merge_and_wait(qtbot, window) is not None
    assert window.close()  # the autouse guard fails on any question
