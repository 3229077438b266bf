"""The Barrier tab draws the "via merged" curve through the merge actually made, at its coefficient."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.engine import run_merge
from merge_studio.core.evaluate.barrier import BarrierReport
from merge_studio.core.recipe import Recipe
from merge_studio.gui.views.barrier_plot import BarrierPanel

pytestmark = pytest.mark.gui
SPEC = "zoo:mlp?hidden=16"


def test_the_via_merged_curve_goes_through_the_lerp_merge_at_its_t(qtbot, tmp_path):
    from merge_studio.core.arch import arch_metadata, build_module
    from merge_studio.gui.workers import JobRunner

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"mlp{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in build_module(SPEC).state_dict().items()}, str(path),
                  metadata=arch_metadata(SPEC))
        paths.append(path)
    merged = tmp_path / "soup.safetensors"
    run_merge(Recipe(method="lerp", models=[{"path": str(p)} for p in paths], params={"t": 0.3}, output=str(merged),
                     hash_sources=False))

    runner = JobRunner()
    panel = BarrierPanel(runner=runner)
    qtbot.addWidget(panel)
    panel.resize(900, 700)
    panel.show()
    panel.set_models([(p.stem, p) for p in paths])
    panel.set_merged(merged, "soup")
    panel.steps.setValue(3)
    panel.split_train.setChecked(False)
    for kind, box in panel.curve_checks.items():
        box.setChecked(kind == "merged")
    try:
        with qtbot.waitSignal(panel.sig_finished, timeout=30000) as blocker:
            panel.run_button.click()
        report = blocker.args[0]
        assert isinstance(report, BarrierReport)
        via = report.curve("via merged")
        assert via.anchor_positions[1] == pytest.approx(0.3)
        panel.barrier_page.canvas.flush()
        ax = panel.loss_plotter.ax
        ticks = dict(zip(ax.get_xticks(), (t.get_text() for t in ax.get_xticklabels()), strict=True))
        merged_tick = next(x for x, text in ticks.items() if text.startswith("merged"))
        assert merged_tick == pytest.approx(0.3) and "t = 0.3" in ticks[merged_tick]
        qtbot.waitUntil(lambda: panel.worker is None, timeout=5000)
    finally:
        assert runner.shutdown()
