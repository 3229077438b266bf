"""Merging from the window: same tensors as the CLI, cancel leaves nothing, errors keep the app usable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_studio.cli.main import main as cli_main
from merge_studio.gui.views.checkpoint_model import SUBTITLE_ROLE
from tests.gui.conftest import load_into


def merge_and_wait(qtbot, window, timeout: int = 20_000):
    with qtbot.waitSignal(window.sig_merge_finished, timeout=timeout) as blocker:
        worker = window.start_merge()
        assert worker is not None, window.log_panel.text()
    qtbot.waitUntil(lambda: window.merge_worker is None, timeout=timeout)
    return blocker.args[0]


def test_a_merge_from_the_window_matches_the_cli_on_the_saved_recipe(qtbot, window, tiny_models, tmp_path, capsys):
    load_into(qtbot, window, tiny_models)
    window.method_panel.select_method("weighted_average")
    model = window.table_model
    col = model.param_column("weight")
    for row, weight in enumerate((1.0, 2.0, 0.5)):
        model.setData(model.index(row, col), weight)
    gui_out = tmp_path / "from_gui.safetensors"
    window.method_panel.set_output_path(gui_out)
    recipe_path = window.save_recipe(tmp_path / "recipe.yaml")
    assert recipe_path is not None and recipe_path.exists()

    result = merge_and_wait(qtbot, window)
    assert result is not None and result.output == gui_out

    cli_out = tmp_path / "from_cli.safetensors"
    assert cli_main(["merge", str(recipe_path), "-o", str(cli_out), "-q"]) == 0
    a, b = load_file(str(gui_out)), load_file(str(cli_out))
    assert a.keys() == b.keys() and len(a) == 8
    for key in a:
        assert torch.equal(a[key], b[key]), key
    inputs = [load_file(str(p)) for p in tiny_models]
    key = "0.weight"
    expected = (inputs[0][key] * 1.0 + inputs[1][key] * 2.0 + inputs[2][key] * 0.5) / 3.5
    assert torch.allclose(a[key], expected, atol=1e-6)


def test_success_adds_the_merged_model_and_says_where_it_went(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    out = tmp_path / "avg.safetensors"
    window.method_panel.set_output_path(out)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=20_000):
        result = merge_and_wait(qtbot, window)
    assert result is not None
    assert window.session.models[-1].path == out and window.session.models[-1].status == "ready"
    assert any(level == "ok" and str(out) in text for level, text in window.log_panel.lines)
    assert "Open folder" in window.log_panel.view.toHtml()
    assert window.method_panel.merge_button.isEnabled() is False  # output now exists as an input


def test_the_window_merges_in_a_process_of_its_own(qtbot, window, tiny_models, tmp_path, monkeypatch):
    from merge_studio.core import engine

    def not_here(*_args, **_kwargs):
        raise AssertionError("the merge ran in the window's process")

    monkeypatch.setattr(engine, "iter_merge", not_here)  # a merge here would fail; the child has its own engine
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    out = tmp_path / "elsewhere.safetensors"
    window.method_panel.set_output_path(out)
    result = merge_and_wait(qtbot, window)
    assert result is not None and result.output == out and out.exists(), window.log_panel.text()
    a, b = (load_file(str(p)) for p in tiny_models[:2])
    merged = load_file(str(out))
    assert torch.allclose(merged["0.weight"], (a["0.weight"] + b["0.weight"]) / 2, atol=1e-6)


@pytest.fixture
def big_models(tmp_path) -> list[Path]:
    """Two models of 48 tensors of 256×256 (12 MB each): enough steps to cancel in the middle."""
    paths = []
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        sd = {f"layers.{i}.weight": torch.randn(256, 256, generator=g) for i in range(48)}
        path = tmp_path / f"big_{seed}.safetensors"
        save_file(sd, str(path))
        paths.append(path)
    return paths


def test_cancel_before_the_first_tensor_leaves_no_file(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    out = tmp_path / "never.safetensors"
    window.method_panel.set_output_path(out)
    with qtbot.waitSignal(window.sig_merge_finished, timeout=10_000) as blocker:
        window.start_merge()
        window.job_status.cancel_button.click()
    qtbot.waitUntil(lambda: window.merge_worker is None, timeout=5000)
    assert blocker.args == [None]
    assert not out.exists()
    assert list(tmp_path.glob("*never*")) == []
    assert "cancelled" in window.log_panel.text()


def test_cancel_in_the_middle_stops_within_a_second_and_leaves_no_file(qtbot, window, big_models, tmp_path):
    import time

    load_into(qtbot, window, big_models)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "half.safetensors"
    window.method_panel.set_output_path(out)
    stopped_at: list[float] = []
    cancelled_at: list[float] = []

    def on_progress(progress):
        # Progress is throttled to ~20 Hz and a small merge can finish within one
        # interval, so cancel on the first report the window gets, whatever its stage.
        if not cancelled_at:
            cancelled_at.append(time.monotonic())
            window.cancel_jobs()

    with qtbot.waitSignal(window.sig_merge_finished, timeout=20_000) as blocker:
        worker = window.start_merge()
        worker.sig_progress.connect(on_progress)
        worker.sig_done.connect(lambda: stopped_at.append(time.monotonic()))
    qtbot.waitUntil(lambda: window.merge_worker is None and bool(stopped_at), timeout=5000)
    assert cancelled_at, "the merge never reported progress"
    if blocker.args[0] is None:  # cancelled (the usual case); a finished merge is allowed on a very fast machine
        took = stopped_at[0] - cancelled_at[0]
        assert took < 1.0, f"cancel took {took:.2f} s"
        assert list(out_dir.iterdir()) == []


def test_a_failing_merge_opens_a_dialog_and_the_window_stays_usable(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("weighted_average")
    model = window.table_model
    col = model.param_column("weight")
    model.setData(model.index(0, col), 1.0)
    model.setData(model.index(1, col), -1.0)  # weights sum to zero: normalising fails
    out = tmp_path / "fails.safetensors"
    window.method_panel.set_output_path(out)
    assert merge_and_wait(qtbot, window) is None
    assert window.error_dialogs, "no error dialog"
    dialog = window.error_dialogs[-1]
    assert "sum to zero" in dialog.message_label.text()
    assert not dialog.details.isVisibleTo(dialog)
    dialog.details_button.click()
    assert dialog.details.isVisibleTo(dialog) and "Traceback" in dialog.details.toPlainText()
    dialog.close()
    assert not out.exists()

    model.setData(model.index(1, col), 1.0)
    assert merge_and_wait(qtbot, window) is not None
    assert out.exists()


def test_the_output_is_listed_but_not_merged_until_asked(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    out = tmp_path / "avg.safetensors"
    window.method_panel.set_output_path(out)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=20_000):
        assert merge_and_wait(qtbot, window) is not None
    row = window.table_model.rowCount() - 1
    listed = window.table_model.model_at(row)
    assert listed.path == out and not listed.in_models
    assert "not merged" in window.table_model.index(row, 0).data(SUBTITLE_ROLE)
    assert [Path(m.path) for m in window.session.to_recipe().models] == tiny_models[:2]  # the recipe that ran

    window.model_list.selectRow(row)
    menu = window.model_list.build_context_menu(window.table_model.index(row, 0))
    next(a for a in menu.actions() if a.text() == "Merge it too (use as an input)").trigger()
    assert [Path(m.path) for m in window.session.to_recipe().models] == [*tiny_models[:2], out]
    assert "not merged" not in window.table_model.index(row, 0).data(SUBTITLE_ROLE)
