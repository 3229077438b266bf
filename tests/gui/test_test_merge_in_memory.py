"""Merge ▸ Test merge in memory: the window's recipe is merged into memory and evaluated next to its models,
with the scores the written merge gets, and nothing is written."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core.evaluate.jobs import MEMORY_MERGE_NAME, EvaluateRequest
from merge_studio.core.evaluate.data import DataSpec
from merge_studio.core.progress import drive
from tests.gui.conftest import load_into
from tests.zoo_files import write_zoo_models

pytestmark = pytest.mark.gui
SPEC = "zoo:mlp?hidden=16"


@pytest.fixture
def mlp_pair(tmp_path):
    return write_zoo_models(tmp_path, SPEC)


def test_testing_the_merge_in_memory_scores_it_like_the_written_file_and_writes_nothing(qtbot, window, mlp_pair, tmp_path):
    load_into(qtbot, window, mlp_pair)
    window.method_panel.select_method("lerp")
    out = tmp_path / "soup.safetensors"
    window.method_panel.set_output_path(out)
    panel = window.extra_views["Barrier"]
    with qtbot.waitSignal(panel.sig_finished, timeout=30_000) as blocker:
        window.actions_by_name["test_merge"].trigger()
    scores = blocker.args[0]
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Barrier"
    assert scores.names[-1] == MEMORY_MERGE_NAME and panel.merged.currentText().startswith("Current recipe")
    table = panel.scores_page.table
    assert MEMORY_MERGE_NAME in {table.item(r, 0).text() for r in range(table.rowCount())}
    assert not out.exists()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=5000)

    from merge_studio.core.engine import run_merge

    run_merge(window.session.to_recipe())
    written = drive(EvaluateRequest(models=(*map(str, mlp_pair), str(out)), data=DataSpec(source="digits")).job())
    assert [r.loss for r in scores.results["test"]] == [r.loss for r in written.results["test"]]


def test_a_recipe_that_cannot_be_merged_says_why_and_writes_nothing(qtbot, window, mlp_pair, tmp_path):
    load_into(qtbot, window, mlp_pair)
    window.method_panel.select_method("ties")  # needs a base model
    panel = window.extra_views["Barrier"]
    with qtbot.waitSignal(panel.sig_finished, timeout=30_000) as blocker:
        window.actions_by_name["test_merge"].trigger()
    assert blocker.args[0] is None
    assert panel.status.text().startswith("Failed:") and "base" in panel.status.text()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=5000)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors*")) == ["mlp0.safetensors", "mlp1.safetensors"]


def test_comparing_two_models_shows_their_difference_per_layer_and_their_scores_side_by_side(qtbot, window, mlp_pair):
    from merge_studio.core.evaluate.loop import ModelScores
    from merge_studio.gui.view_wiring import DIFFERENCE_OVERLAY

    load_into(qtbot, window, mlp_pair)
    window.build_deferred_views()
    graph, panel = window.extra_views["Graph"], window.extra_views["Barrier"]
    window.model_list.selectAll()
    menu = window.model_list.build_context_menu(window.table_model.index(0, 0))
    with qtbot.waitSignal(panel.sig_finished, timeout=30_000) as blocker:
        next(a for a in menu.actions() if a.text().startswith("Compare the two")).trigger()
    scores = blocker.args[0]
    assert isinstance(scores, ModelScores) and scores.names == ("mlp0", "mlp1")
    qtbot.waitUntil(lambda: DIFFERENCE_OVERLAY in graph.overlay_names(), timeout=10_000)
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Graph"
    values = graph._meanings[DIFFERENCE_OVERLAY][0]  # noqa: SLF001 - the numbers behind the colours
    from safetensors.torch import load_file

    a, b = (load_file(str(p)) for p in mlp_pair)
    first = next(k for k in a if k.endswith(".weight")).rsplit(".", 1)[0]
    expected = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a if k.startswith(first + "."))
                          / sum((b[k] ** 2).sum() for k in b if k.startswith(first + ".")))
    assert values[first] == pytest.approx(float(expected), rel=1e-5)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=5000)


def sweep_barrier(qtbot, window):
    """Run a three-point barrier sweep from the Barrier tab and wait until it is done; returns the tab."""
    panel = window.extra_views["Barrier"]
    window.show_tab("Barrier")
    panel.steps.setValue(3)
    with qtbot.waitSignal(panel.sig_finished, timeout=30_000):
        panel.run_button.click()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=5000)
    return panel


def test_curves_and_scores_are_kept_with_the_recipe_and_shown_again_without_recomputing(qtbot, window, mlp_pair, tmp_path):
    import os

    from merge_studio.core.evaluate.barrier import BarrierReport
    from merge_studio.gui.main_window import MainWindow

    load_into(qtbot, window, mlp_pair)
    window.method_panel.select_method("lerp")
    panel = sweep_barrier(qtbot, window)
    with qtbot.waitSignal(panel.sig_finished, timeout=30_000):
        panel.evaluate_button.click()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=5000)
    strip = window.extra_views["Permutations"].strip
    with qtbot.waitSignal(strip.sig_aligned, timeout=20_000):
        window.model_list.selectAll()
        menu = window.model_list.build_context_menu(window.table_model.index(0, 0))
        next(a for a in menu.actions() if a.text().startswith("Align the second")).trigger()
    qtbot.waitUntil(lambda: not window.runner.running(), timeout=10_000)
    recipe = window.save_recipe(tmp_path / "soup.yaml")
    assert (tmp_path / "soup.results.json").is_file()

    again = MainWindow(remember_layout=False)
    qtbot.addWidget(again)
    assert again.open_recipe(recipe)
    shown = again.extra_views["Barrier"]
    assert isinstance(shown.report, BarrierReport) and shown.worker is None
    assert [c.label for c in shown.report.curves] == [c.label for c in panel.report.curves]
    assert shown.scores.names == panel.scores.names
    assert shown.barrier_page.table.rowCount() == panel.barrier_page.table.rowCount() > 0
    assert "saved with the recipe" in shown.status.text() and "changed" not in shown.status.text()
    kept = again.extra_views["Permutations"].view.report
    assert kept is not None and kept["groups"] == window.extra_views["Permutations"].view.report["groups"]
    qtbot.waitUntil(lambda: not again.is_loading(), timeout=10_000)

    os.utime(mlp_pair[1], ns=(1, 1))  # B changed since
    third = MainWindow(remember_layout=False)
    qtbot.addWidget(third)
    assert third.open_recipe(recipe)
    assert "mlp1.safetensors changed since" in third.extra_views["Barrier"].status.text()
    qtbot.waitUntil(lambda: not third.is_loading(), timeout=10_000)


@pytest.mark.parametrize("suffix", [".png", ".svg", ".csv"])
def test_each_plot_exports_as_png_svg_and_csv(qtbot, window, mlp_pair, tmp_path, monkeypatch, suffix):
    from PySide6.QtWidgets import QFileDialog

    load_into(qtbot, window, mlp_pair)
    panel = sweep_barrier(qtbot, window)
    target = tmp_path / f"barrier{suffix}"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    panel.barrier_page.export_button.click()
    data = target.read_bytes()
    assert {".png": data[:4] == b"\x89PNG", ".svg": b"<svg" in data[:2000],
            ".csv": data.startswith(b"curve,split,lambda,loss")}[suffix]
    assert not list(tmp_path.glob(".barrier*"))  # no temporary file left
