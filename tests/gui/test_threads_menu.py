"""Merge ▸ Threads caps the cores a merge uses, and the choice is remembered."""

from __future__ import annotations

from merge_studio.core import merge_process
from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait


def test_choosing_one_thread_is_remembered_and_used_by_the_next_merge(qtbot, window, tiny_models, tmp_path, monkeypatch):
    menu = window.findChild(type(window.menuBar().actions()[0].menu()), "threads_menu")
    assert menu is not None
    labels = [a.text() for a in menu.actions()]
    assert labels[0].startswith("All cores") and menu.actions()[0].isChecked()
    one = next(a for a in menu.actions() if a.text() == "1 thread")
    one.trigger()
    assert window.settings.merge_threads == 1 and one.isChecked()

    seen = []
    real = merge_process.iter_merge_in_process  # the merge's own process gets the cap with its recipe
    monkeypatch.setattr(merge_process, "iter_merge_in_process",
                        lambda recipe, token, threads=None: seen.append(threads) or real(recipe, token, threads=threads))
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    window.method_panel.set_output_path(tmp_path / "avg.safetensors")
    assert merge_and_wait(qtbot, window) is not None
    assert seen == [1]
