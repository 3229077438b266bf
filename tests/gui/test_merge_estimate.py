"""The estimate above the Merge button follows the inputs, the method and the dtype."""

from __future__ import annotations

import shutil
from collections import namedtuple

from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait


def _estimate_after(qtbot, window, change):
    label = window.merge_estimate
    before = label.estimate
    change()
    qtbot.waitUntil(lambda: label.estimate is not None and label.estimate is not before and not label._running
                    and not label._timer.isActive(), timeout=10_000)
    return label.estimate


def test_the_estimate_shows_the_output_size_and_follows_the_dtype(qtbot, window, tiny_models, tmp_path):
    out = tmp_path / "avg.safetensors"
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    first = _estimate_after(qtbot, window, lambda: window.method_panel.set_output_path(out))
    text = window.merge_estimate.label.text()
    assert window.merge_estimate.label.isVisible() and "Output" in text and "free" in text and "memory" in text.lower()
    assert "peak memory" in window.merge_estimate.label.toolTip()
    combo = window.method_panel.dtype_combo
    half = _estimate_after(qtbot, window, lambda: combo.setCurrentIndex(combo.findData("float16")))
    assert half.output_bytes < first.output_bytes
    combo.setCurrentIndex(combo.findData(None))
    result = merge_and_wait(qtbot, window)
    assert result is not None
    assert abs(first.output_bytes - out.stat().st_size) / out.stat().st_size < 0.05


def test_a_full_disk_is_shown_before_merge_is_pressed_and_the_merge_is_refused(qtbot, window, tiny_models, tmp_path,
                                                                               monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 100, 100))
    out = tmp_path / "avg.safetensors"
    load_into(qtbot, window, tiny_models[:2])
    window.method_panel.select_method("simple_average")
    estimate = _estimate_after(qtbot, window, lambda: window.method_panel.set_output_path(out))
    assert not estimate.fits and "Not enough disk space" in window.merge_estimate.label.text()
    monkeypatch.setattr(window, "show_error", lambda error, title="": window.log_panel.log(error.message, "error"))
    assert window.start_merge() is None  # refused up front, with the estimate's figures: no merge starts
    assert window.merge_worker is None
    assert "not enough disk space" in window.log_panel.text() and "100 B free" in window.log_panel.text()
    assert not out.exists()
