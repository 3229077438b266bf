"""The History tab lists merges from the window and the command line, re-opens, loads and compares them."""

from __future__ import annotations

from merge_studio.cli.main import main as cli_main
from merge_studio.core.history import load_history
from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait


def _merge(qtbot, window, tiny_models, out, method="simple_average"):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method(method)
    window.method_panel.set_output_path(out)
    result = merge_and_wait(qtbot, window)
    assert result is not None
    return result


def test_a_merge_from_the_window_shows_up_in_the_history_tab(qtbot, window, tiny_models, tmp_path):
    out = tmp_path / "avg.safetensors"
    _merge(qtbot, window, tiny_models, out)
    window.merge_history.flush()
    (record,) = load_history()
    assert record.source == "window" and record.status == "ok" and record.outputs == [str(out)]
    assert all(len(m.get("sha256", "")) == 64 for m in record.models)
    window.merge_history.show()
    panel = window.history_panel
    assert panel.table.rowCount() == 1
    assert panel.table.item(0, 1).text() == "simple_average"
    assert panel.table.item(0, 3).text() == "avg" and panel.table.item(0, 5).text() == "ok"
    assert "mlp_0.safetensors" in panel.details.toPlainText() and "sha256" in panel.details.toPlainText()


def test_a_cli_merge_appears_after_refresh_and_its_recipe_reopens_in_the_form(qtbot, window, tiny_models, tmp_path):
    out = tmp_path / "cli.safetensors"
    assert cli_main(["merge", "--method", "lerp", *map(str, tiny_models[:2]), "--param", "t=0.3", "-o", str(out), "-q"]) == 0
    window.merge_history.show()
    panel = window.history_panel
    panel.refresh()
    assert panel.table.rowCount() == 1 and panel.table.item(0, 1).text() == "lerp"
    panel.table.selectRow(0)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        panel.open_button.click()
    assert window.session.spec.name == "lerp"
    assert window.method_panel.form.values()["t"] == 0.3
    assert [m.path for m in window.session.models] == tiny_models[:2]
    assert window.method_panel.output_edit.text() == str(out)


def test_load_output_adds_the_merged_model_to_the_list(qtbot, window, tiny_models, tmp_path):
    out = tmp_path / "cli.safetensors"
    assert cli_main(["merge", "--method", "lerp", *map(str, tiny_models[:2]), "-o", str(out), "-q"]) == 0
    window.merge_history.show()
    window.history_panel.refresh()
    window.history_panel.table.selectRow(0)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        window.history_panel.load_button.click()
    assert [m.path for m in window.session.models] == [out]


def test_comparing_two_merges_shows_their_recipes_side_by_side_with_the_differences_marked(qtbot, window, tiny_models, tmp_path):
    for t, name in ((0.2, "a"), (0.7, "b")):
        assert cli_main(["merge", "--method", "lerp", *map(str, tiny_models[:2]), "--param", f"t={t}",
                         "-o", str(tmp_path / f"{name}.safetensors"), "-q"]) == 0
    window.merge_history.show()
    panel = window.history_panel
    panel.refresh()
    panel.table.selectAll()
    assert panel.compare_button.isEnabled()
    assert panel.bottom.currentWidget() is panel.diff
    changed = [(panel.diff.item(r, 0).text(), panel.diff.item(r, 1).text()) for r in range(panel.diff.rowCount())
               if panel.diff.item(r, 0).background().color().alpha() > 0]
    assert ("params: {t: 0.2}", "params: {t: 0.7}") in changed
    assert any("a.safetensors" in left and "b.safetensors" in right for left, right in changed)


def test_scores_shown_in_the_barrier_tab_are_kept_with_the_merge(qtbot, window, tiny_models, tmp_path):
    from merge_studio.core.evaluate.loop import EvalResult, ModelScores

    out = tmp_path / "avg.safetensors"
    _merge(qtbot, window, tiny_models, out)
    qtbot.waitUntil(lambda: any(m.path == out and m.status == "ready" for m in window.session.models), timeout=10_000)
    names = tuple(m.name for m in window.session.models)
    scores = ModelScores(names=names, results={"test": tuple(EvalResult(loss=0.5 + i, accuracy=0.9) for i in range(len(names)))})
    window.extra_views["Barrier"].set_scores(scores)
    window.merge_history.flush()
    (record,) = load_history()
    assert record.evaluation == {"loss (test, digits)": 0.5 + names.index("avg.safetensors"), "accuracy (test, digits)": 0.9}
    window.merge_history.show()
    assert "accuracy (test, digits) = 0.9" in window.history_panel.details.toPlainText()


def test_recording_a_merge_never_waits_for_the_disk_on_the_gui_thread(qtbot, window, tiny_models, tmp_path, monkeypatch):
    """Appending to the history can wait for the file system (a cancelled merge's temporary file
    being deleted at the same moment): the record is written on a thread, the window goes on."""
    import threading

    from merge_studio.core import history
    from merge_studio.gui import merge_history

    release, writers = threading.Event(), []

    def slow_record_merge(*args, **kwargs):
        writers.append(threading.current_thread())
        assert release.wait(timeout=10)
        return history.record_merge(*args, **kwargs)

    monkeypatch.setattr(merge_history, "record_merge", slow_record_merge)
    window.merge_history.show()
    _merge(qtbot, window, tiny_models, tmp_path / "avg.safetensors")  # returns while the write is held up
    qtbot.waitUntil(lambda: bool(writers), timeout=5_000)
    assert writers[0] is not threading.main_thread()
    assert window.history_panel.table.rowCount() == 0
    release.set()
    qtbot.waitUntil(lambda: window.history_panel.table.rowCount() == 1, timeout=5_000)  # refreshed once written
    assert load_history()[0].method == "simple_average"
