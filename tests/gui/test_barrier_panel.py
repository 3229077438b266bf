"""The Barrier tab: choosing models, live curves, the numbers table, cancel, evaluate-models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.evaluate.barrier import BarrierReport
from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint
from merge_studio.core.evaluate.jobs import BarrierRequest, EvaluateRequest
from merge_studio.core.evaluate.loop import EvalResult, ModelScores
from merge_studio.core.progress import Progress
from merge_studio.gui.views.barrier_plot import EMPTY_SENTENCE, BarrierPanel

pytestmark = pytest.mark.gui


@pytest.fixture()
def panel(qtbot):
    widget = BarrierPanel()
    qtbot.addWidget(widget)
    widget.resize(1000, 720)
    widget.show()
    return widget


def _points(label: str, peak: float, steps: int = 5) -> list[BarrierPoint]:
    points = []
    for i, lam in enumerate(np.linspace(0, 1, steps)):
        for split, shift in (("train", 0.0), ("test", 0.05)):
            loss = 0.1 + shift + peak * float(np.sin(np.pi * lam))
            points.append(BarrierPoint(label, float(lam), split, loss, 0.97 - 0.25 * peak * float(np.sin(np.pi * lam)), i, steps))
    return points


def _report() -> BarrierReport:
    curves = (BarrierCurve.from_points("naive", _points("naive", 1.2)),
              BarrierCurve.from_points("BN reset", _points("BN reset", 0.4), reset_bn=True))
    return BarrierReport(curves=curves, data="digits: 1348 train / 449 test", steps=5)


def test_an_empty_panel_says_what_to_do_and_cannot_run(panel):
    assert panel.barrier_page.empty.text() == EMPTY_SENTENCE
    assert not panel.barrier_page.plot_visible
    assert not panel.run_button.isEnabled()
    assert "two models" in panel.status.text()


def test_run_asks_for_a_barrier_job_with_the_chosen_options(panel, qtbot, tmp_path):
    panel.set_models([("a", tmp_path / "a.safetensors"), ("b", tmp_path / "b.safetensors")])
    panel.set_merged(tmp_path / "merged.safetensors")
    panel.steps.setValue(9)
    panel.split_train.setChecked(False)
    assert panel.run_button.isEnabled()
    with qtbot.waitSignal(panel.sig_run_requested) as blocker:
        panel.run_button.click()
    request = blocker.args[0]
    assert isinstance(request, BarrierRequest)
    assert request.model_a.endswith("a.safetensors") and request.model_b.endswith("b.safetensors")
    assert request.merged.endswith("merged.safetensors")
    assert request.steps == 9 and request.splits == ("test",)
    assert request.curves == ("naive", "bn_reset", "merged") and request.reset_bn == "auto"
    assert request.data.source == "digits"


def test_turning_bn_reset_off_drops_that_curve(panel, qtbot, tmp_path):
    panel.set_models([("a", tmp_path / "a.pt"), ("b", tmp_path / "b.pt")])
    panel.reset_bn.setChecked(False)
    request = panel.build_request()
    assert request.reset_bn == "off" and "bn_reset" not in request.curves and "merged" not in request.curves


def test_points_appear_live_and_the_result_fills_the_table(panel, tmp_path):
    for point in _points("naive", 1.2)[:4]:
        panel.add_point(point)
    assert panel.barrier_page.plot_visible
    panel.barrier_page.canvas.flush()
    assert panel.loss_plotter.line_count == 2
    panel.set_result(_report())
    table = panel.barrier_page.table
    assert table.rowCount() == 4
    assert [table.item(r, 0).text() for r in range(4)] == ["naive", "naive", "BN reset", "BN reset"]
    assert float(table.item(0, 5).text()) == pytest.approx(1.2, abs=1e-3)
    assert table.item(0, 6).text().endswith("pts")
    assert "Lowest loss barrier: BN reset" in panel.status.text()
    panel.barrier_page.canvas.draw()
    panel.grab().save("/tmp/barrier_panel.png")
    assert panel.barrier_page.save_button.isEnabled()
    saved = panel.save_numbers(tmp_path / "numbers.csv")
    assert saved is not None and saved.read_text().startswith("curve,split,lambda")


def test_running_shows_cancel_and_progress_and_cancel_is_requested(panel, qtbot, tmp_path):
    panel.set_models([("a", tmp_path / "a.pt"), ("b", tmp_path / "b.pt")])
    panel.set_running(True)
    assert panel.cancel_button.isVisible() and not panel.run_button.isEnabled()
    panel.set_progress(Progress("barrier", 3, 25, current="naive λ=0.083", unit="points"))
    assert panel.progress.value() == 3 and panel.progress.maximum() == 25
    with qtbot.waitSignal(panel.sig_cancel_requested):
        panel.cancel_button.click()
    panel.set_cancelled()
    panel.set_running(False)
    assert panel.run_button.isEnabled() and not panel.cancel_button.isVisible()
    assert panel.status.text() == "Cancelled."


def test_evaluate_models_shows_bars_and_a_row_per_model_and_split(panel, qtbot, tmp_path):
    panel.set_models([("a", tmp_path / "a.pt"), ("b", tmp_path / "b.pt")])
    panel.set_merged(tmp_path / "soup.safetensors", "soup")
    with qtbot.waitSignal(panel.sig_run_requested) as blocker:
        panel.evaluate_button.click()
    request = blocker.args[0]
    assert isinstance(request, EvaluateRequest) and request.names == ("a", "b", "soup")
    results = {"test": (EvalResult(0.1, 0.97, n=9), EvalResult(0.12, 0.96, n=9), EvalResult(0.5, 0.8, n=9))}
    panel.set_scores(ModelScores(names=("a", "b", "soup"), results=results))
    assert panel.scores_page.table.rowCount() == 3
    assert panel.scores_page.table.item(2, 3).text() == "80.00%"
    assert panel.pages.currentWidget() is panel.scores_page
    assert "Best test loss: a" in panel.status.text()


@pytest.fixture()
def mlp_files(tmp_path):
    from merge_studio.core.arch import arch_metadata, build_module

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = build_module("zoo:mlp?hidden=16").state_dict()
        path = tmp_path / f"mlp{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=arch_metadata("zoo:mlp?hidden=16"))
        paths.append(path)
    return paths


def test_with_a_job_runner_the_panel_runs_the_sweep_and_shows_it(qtbot, mlp_files):
    from merge_studio.gui.workers import JobRunner

    runner = JobRunner()
    panel = BarrierPanel(runner=runner)
    qtbot.addWidget(panel)
    panel.set_models([(p.stem, p) for p in mlp_files])
    panel.steps.setValue(3)
    points: list[BarrierPoint] = []
    original = panel.add_point
    panel.add_point = lambda p: (points.append(p), original(p))  # type: ignore[method-assign]
    try:
        with qtbot.waitSignal(panel.sig_finished, timeout=20000) as blocker:
            panel.run_button.click()
        assert isinstance(blocker.args[0], BarrierReport)
        qtbot.waitUntil(lambda: panel.worker is None, timeout=5000)
        assert len(points) == 6
        assert panel.barrier_page.table.rowCount() == 2
        assert panel.run_button.isEnabled()
    finally:
        assert runner.shutdown()


def test_a_failing_job_shows_the_reason(qtbot, tmp_path):
    from merge_studio.gui.workers import JobRunner

    runner = JobRunner()
    panel = BarrierPanel(runner=runner)
    qtbot.addWidget(panel)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    panel.set_models([("bad", tmp_path / "bad.safetensors"), ("bad2", tmp_path / "bad.safetensors")])
    try:
        with qtbot.waitSignal(panel.sig_finished, timeout=10000) as blocker:
            panel.run_button.click()
        assert blocker.args[0] is None
        assert panel.status.text().startswith("Failed:") and "bad.safetensors" in panel.status.text()
    finally:
        assert runner.shutdown()


def test_in_the_window_the_tab_lists_the_loaded_models_and_offers_a_finished_merge(qtbot, window, tiny_models, tmp_path):
    from types import SimpleNamespace

    from tests.gui.conftest import load_into

    panel = window.extra_views["Barrier"]
    assert isinstance(panel, BarrierPanel) and panel.runner is window.runner
    load_into(qtbot, window, tiny_models[:2])
    window.tabs.setCurrentWidget(panel)
    qtbot.waitUntil(lambda: panel.model_b.count() == 2, timeout=5000)
    assert (panel.model_a.currentText(), panel.model_b.currentText()) == ("mlp_0", "mlp_1")
    assert panel.run_button.isEnabled()
    window.sig_merge_finished.emit(SimpleNamespace(outputs=(tmp_path / "soup.safetensors",)))
    assert panel.merged.currentText() == "soup"
    assert panel.build_request().merged == str(tmp_path / "soup.safetensors")


def test_choosing_the_aligned_curve_without_an_alignment_asks_the_job_to_align(panel, tmp_path):
    panel.set_models([("a", tmp_path / "a.pt"), ("b", tmp_path / "b.pt")])
    panel.curve_checks["aligned"].setChecked(True)
    request = panel.build_request()
    assert "aligned" in request.curves and request.wants_alignment
    panel.set_aligned({"w": torch.zeros(1)})
    assert not panel.build_request().wants_alignment
