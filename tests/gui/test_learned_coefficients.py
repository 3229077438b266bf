"""After an AdaMerging merge the window shows the learned coefficients per layer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from merge_studio.gui.dialogs.coefficients_dialog import layer_means, learned_coefficients
from merge_studio.gui.plot_canvas import wait_for_plots

pytestmark = pytest.mark.gui


def test_a_merge_that_learned_coefficients_opens_their_plot(qtbot, window, tmp_path):
    report = {"coefficients": {"hidden.0.weight": [0.2, 0.6], "hidden.0.bias": [0.4, 0.4], "head.weight": [0.1, 0.9]},
              "models": ["rotated", "inverted"]}
    window.sig_merge_finished.emit(SimpleNamespace(report=report, outputs=(), layer_stats={}))
    dialog = window.wiring.coefficients_dialog
    assert dialog.isVisible()
    assert wait_for_plots()
    assert [line.get_label() for line in dialog.artists] == ["rotated", "inverted"]
    assert "learned coefficients" in window.log_panel.lines[-1][1]
    dialog.grab().save(str(tmp_path / "coefficients.png"))
    dialog.close()


def test_reports_without_coefficients_open_nothing_and_means_are_per_layer():
    assert learned_coefficients({"examples_per_model": 3}) is None
    assert layer_means({"a.weight": [0.2, 0.4], "a.bias": [0.5, 0.5], "*": [1.0, 1.0]}) == pytest.approx({"a": 0.4})


def test_keeping_the_coefficients_puts_them_in_the_recipe(qtbot, window):
    window.method_panel.select_method("adamerging")
    table = {"hidden.0.weight": [0.2, 0.6], "head.weight": [0.1, 0.9]}
    window.sig_merge_finished.emit(SimpleNamespace(report={"coefficients": table, "models": ["a", "b"]}, outputs=(),
                                                   layer_stats={}))
    window.wiring.coefficients_dialog.keep_button.click()
    assert window.session.params()["coefficients"] == table
    assert window.method_panel.form.values()["coefficients"] == table
    window.wiring.coefficients_dialog.close()
