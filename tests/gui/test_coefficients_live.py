"""Per-model coefficients: weights that cancel are flagged as they are typed; each method keeps its own values."""

from __future__ import annotations

from PySide6.QtCore import Qt

from tests.gui.conftest import load_into


def _set_weights(window, values, name="weight"):
    model = window.table_model
    col = model.param_column(name)
    for row, value in enumerate(values):
        assert model.setData(model.index(row, col), value)


def _weights(window, name="weight"):
    model = window.table_model
    col = model.param_column(name)
    return [model.index(row, col).data(Qt.ItemDataRole.EditRole) for row in range(model.rowCount())]


def test_weights_summing_to_zero_are_flagged_live_and_merge_is_disabled(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("weighted_average")
    window.method_panel.set_output_path(tmp_path / "m.safetensors")
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)
    _set_weights(window, [1.0, -1.0])
    table = window.method_panel.coefficients
    qtbot.waitUntil(lambda: not window.method_panel.merge_button.isEnabled(), timeout=5_000)
    assert "sum to zero" in window.method_panel.problems_label.text()
    assert table.problem and "sum to zero" in table.toolTip()
    _set_weights(window, [1.0, -0.5])
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)
    assert table.problem is None and "sum to zero" not in window.method_panel.problems_label.text()


def test_turning_normalisation_off_clears_the_zero_sum_problem(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("weighted_average")
    window.method_panel.set_output_path(tmp_path / "m.safetensors")
    _set_weights(window, [2.0, -2.0])
    qtbot.waitUntil(lambda: window.method_panel.coefficients.problem is not None, timeout=5_000)
    window.method_panel.form.set_values({"normalize": False})
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)
    assert window.method_panel.coefficients.problem is None


def test_each_method_starts_from_its_own_defaults_and_gets_its_values_back(qtbot, window, tiny_models):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("weighted_average")
    _set_weights(window, [2.0, 0.5])
    window.method_panel.select_method("multislerp")
    assert _weights(window) == [1.0, 1.0]
    _set_weights(window, [0.3, 0.7])
    window.method_panel.select_method("weighted_average")
    assert _weights(window) == [2.0, 0.5]
    window.method_panel.select_method("multislerp")
    assert _weights(window) == [0.3, 0.7]
