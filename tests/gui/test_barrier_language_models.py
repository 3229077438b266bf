"""The Barrier tab on two Hugging Face folders and a text file: a perplexity barrier, and perplexities per model."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from merge_studio.core.evaluate.barrier import BarrierReport  # noqa: E402
from merge_studio.core.evaluate.loop import ModelScores  # noqa: E402
from merge_studio.gui.views.barrier_plot import BarrierPanel  # noqa: E402
from tests.hf_models import make_hf_folder, training_text  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture()
def lm_panel(qtbot, tmp_path):
    from merge_studio.gui.workers import JobRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runner = JobRunner()
    panel = BarrierPanel(runner=runner)
    qtbot.addWidget(panel)
    panel.resize(1000, 720)
    folders = [make_hf_folder(tmp_path / name, "llama", seed=seed) for seed, name in enumerate(("a", "b"), start=1)]
    panel.set_models([(f.name, f) for f in folders])
    text = tmp_path / "code.txt"
    text.write_text(training_text()[:3000])
    panel.set_data_source(str(text))
    yield panel
    assert runner.shutdown()
    torch.set_num_threads(threads)


def test_a_barrier_between_two_folders_on_text_plots_token_loss_with_a_perplexity_scale(qtbot, lm_panel):
    lm_panel.steps.setValue(3)
    with qtbot.waitSignal(lm_panel.sig_finished, timeout=60000) as blocker:
        lm_panel.run_button.click()
    report = blocker.args[0]
    assert isinstance(report, BarrierReport) and report.task == "language_modeling"
    assert "code.txt:" in lm_panel.status.text() and "tokens in" in lm_panel.status.text()
    lm_panel.barrier_page.canvas.flush()
    loss_axes = lm_panel.loss_plotter.ax
    assert loss_axes.get_ylabel() == "token loss (nats)"
    assert any(child.get_ylabel() == "perplexity" for child in loss_axes.child_axes)
    assert lm_panel.barrier_page.table.rowCount() == 1  # one set of windows: no train/test pair


def test_evaluate_models_on_text_names_each_models_perplexity(qtbot, lm_panel):
    with qtbot.waitSignal(lm_panel.sig_finished, timeout=60000) as blocker:
        lm_panel.evaluate_button.click()
    scores = blocker.args[0]
    assert isinstance(scores, ModelScores) and scores.task == "language_modeling"
    ppl = scores.results["test"][0].perplexity
    assert f"Perplexity: a {ppl:.2f}" in lm_panel.status.text()
