"""Models holding NaN or infinity are flagged in the list and the Inspector after a quick scan."""

from __future__ import annotations

from safetensors.torch import save_file

from tests.gui.conftest import load_into, mlp_state


def test_a_model_with_nan_is_flagged_in_the_inspector_and_only_its_row_is_marked(qtbot, window, tiny_models, tmp_path):
    state = mlp_state(7)
    first = next(iter(state))
    state[first].view(-1)[5] = float("nan")
    broken = tmp_path / "diverged.safetensors"
    save_file(state, str(broken))
    load_into(qtbot, window, [tiny_models[0], broken])
    models = window.session.models
    qtbot.waitUntil(lambda: all(m.non_finite is not None for m in models), timeout=10_000)

    good, bad = models
    assert good.non_finite == [] and [b.name for b in bad.non_finite] == [first]
    issues = window._compat.issues
    assert issues[good.id] == []
    assert any("NaN or infinite" in line and first in line for line in issues[bad.id])
    assert "diverged.safetensors holds NaN or infinite values" in window.inspector.compat_view.toPlainText()

    window.inspector.set_model(bad)
    values = window.inspector._fact_labels["Values"]
    assert values.text() == "⚠ NaN or infinite in 1 tensor"
    assert first in values.toolTip()
    window.inspector.set_model(good)
    assert window.inspector._fact_labels["Values"].text() == "all finite"
