"""Readable at laptop sizes: panels give way to the tabs, titles stay whole, plots never collapse."""

from __future__ import annotations

import warnings

import pytest
import torch
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel, QTabWidget
from safetensors.torch import save_file

from merge_studio.gui import app as gui_app
from merge_studio.gui.main_window import MainWindow
from merge_studio.gui.settings import AppSettings

pytestmark = pytest.mark.gui


@pytest.fixture
def small_window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1024, 768)
    win.show()
    qtbot.waitExposed(win)
    win.fit_panels()
    yield win
    win.close()


def test_the_window_shrinks_below_1008_pixels(small_window):
    assert small_window.minimumSizeHint().width() < 1008
    small_window.resize(900, 640)
    assert small_window.width() == 900


def test_at_1024x768_every_tab_title_is_whole(small_window):
    bar = small_window.tabs.tabBar()
    assert bar.elideMode().name == "ElideNone"
    assert bar.sizeHint().width() <= small_window.tabs.width()


def test_side_panels_and_log_hide_from_the_view_menu_and_stay_hidden_next_time(qtbot, small_window):
    layout = small_window.panel_layout
    tabs_before = small_window.tabs.width()
    layout.actions["models"].trigger()
    layout.actions["log"].trigger()
    assert not layout.panel_shown("models") and not layout.panel_shown("log")
    assert not layout.actions["models"].isChecked()
    assert small_window.tabs.width() > tabs_before
    small_window.close()

    again = MainWindow(AppSettings())
    qtbot.addWidget(again)
    again.resize(1024, 768)
    again.show()
    assert not again.panel_layout.panel_shown("models") and not again.panel_layout.panel_shown("log")
    assert again.panel_layout.panel_shown("method")
    again.panel_layout.actions["models"].trigger()
    assert again.panel_layout.panel_shown("models") and again.h_split.sizes()[0] > 100
    again.close()


def test_the_folded_log_shows_its_latest_line(small_window):
    layout = small_window.panel_layout
    layout.set_log_folded(True)
    small_window.log_panel.log("Merged 8 tensors", "ok")
    assert layout.log_folded
    assert layout.log_preview.text() == "Merged 8 tensors"
    assert small_window.v_split.sizes()[1] <= 40
    layout.set_log_folded(False)
    assert small_window.log_panel.view.isVisible() and small_window.v_split.sizes()[1] > 60


@pytest.fixture
def arch_models(tmp_path):
    from merge_studio.core.arch import arch_metadata, build_module

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = build_module("zoo:mlp?hidden=16").state_dict()
        path = tmp_path / f"mlp_seed{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=arch_metadata("zoo:mlp?hidden=16"))
        paths.append(path)
    return paths


def _permutation_report() -> dict:
    members = [{"tensor": "hidden.0.weight", "axis": 0, "offset": 0, "n": 16, "block": 1}]
    return {"groups": [{"name": "hidden.0", "size": 16, "perm": list(reversed(range(16))), "moved_fraction": 1.0,
                        "members": members}],
            "objective_per_sweep": [1.0, 2.0, 2.5], "unpermuted": [], "max_output_difference": 1e-7}


def test_every_tab_at_1024x768_draws_its_plots_without_collapsing(qtbot, small_window):
    from merge_studio.gui.plot_canvas import BackgroundCanvas, wait_for_plots
    from tests.gui.test_barrier_panel import _report

    views = small_window.extra_views
    views["Barrier"].set_result(_report())
    views["Permutations"].set_report(_permutation_report())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index in range(small_window.tabs.count()):
            small_window.tabs.setCurrentIndex(index)
            page = small_window.tabs.widget(index)
            for sub_tabs in page.findChildren(QTabWidget):  # pages inside a tab (Barrier | Evaluate models, …)
                for sub in range(sub_tabs.count()):
                    sub_tabs.setCurrentIndex(sub)
                    assert wait_for_plots(20)
            assert wait_for_plots(20)
            shown = [c for c in page.findChildren(BackgroundCanvas) if c.isVisible()]
            assert not [c for c in shown if c.last_draw_collapsed], small_window.tabs.tabText(index)
    assert not [w for w in caught if "collapsed" in str(w.message)]


def test_a_narrow_barrier_tab_stacks_loss_above_accuracy(qtbot, small_window):
    from tests.gui.test_barrier_panel import _report

    panel = small_window.extra_views["Barrier"]
    small_window.show_tab("Barrier")
    panel.set_result(_report())
    panel.barrier_page.canvas.flush()
    loss, accuracy = panel.barrier_page.figure.axes[:2]
    assert panel.barrier_page.width() < 640
    assert loss.get_position().y0 > accuracy.get_position().y0  # one above the other


@pytest.mark.slow
def test_a_1024x768_screenshot_after_a_barrier_sweep_has_no_collapsed_plots(qtbot, arch_models, tmp_path, capsys):
    out = tmp_path / "barrier.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = gui_app.main([*map(str, arch_models), "--screenshot", str(out), "--size", "1024x768", "--tab", "Barrier",
                             "--run", "barrier"])
    assert code == 0, capsys.readouterr().err
    assert not [w for w in caught if "collapsed" in str(w.message)]
    assert "collapsed" not in capsys.readouterr().err
    assert QImage(str(out)).width() == 1024


def test_barrier_sweeps_and_alignments_show_time_left(qtbot, monkeypatch):
    from merge_studio.core.progress import Progress
    from merge_studio.gui.views import status_panel
    from merge_studio.gui.views.barrier_plot import BarrierPanel

    clock = [100.0]
    monkeypatch.setattr(status_panel.time, "monotonic", lambda: clock[0])
    panel = BarrierPanel()
    qtbot.addWidget(panel)
    panel.set_running(True)
    clock[0] += 10.0  # a quarter of the points took 10 s
    panel.set_progress(Progress("barrier", 25, 100, current="naive λ=0.24", unit="points"))
    assert panel.progress.format() == "25/100 points · about 30 s left"
    eta = status_panel.EtaClock()
    clock[0] += 4.0
    assert eta.update(Progress("weight matching", 3, 4, unit="sweeps (estimated)")) == "about 1 s left"


def test_the_demo_card_shows_the_training_progress_and_comes_back_when_done(qtbot, small_window, monkeypatch):
    from types import SimpleNamespace

    from merge_studio.core import demo
    from merge_studio.core.progress import Progress
    from merge_studio.gui.views.welcome import DEMO_HINT

    seen: list[str] = []

    def training(cancel=None):
        yield Progress("demo", 120, 300, current="resnet20_seed0", unit="work")
        return SimpleNamespace(paths=lambda prefix=None: [], models=())

    monkeypatch.setattr(demo, "iter_demo_models", training)
    card = small_window.welcome.demo_button
    worker = small_window.load_demo()
    worker.sig_progress.connect(lambda _p: seen.append(card.text.text()))
    with qtbot.waitSignal(worker.sig_done, timeout=10_000):
        pass
    assert seen and seen[0].startswith("Training the demo models (first start only): resnet20_seed0 · 40%")
    assert card.text.text() == DEMO_HINT and card.isEnabled()


def test_at_1024x768_the_inspector_fits_its_tab_and_a_long_path_is_cut_in_the_middle(qtbot, small_window, tmp_path):
    # the hidden welcome page and the unbreakable path made the page 505 px wide in a 410 px tab:
    # the tensor table's Dtype and Parameters columns sat behind a sideways scroll bar
    from tests.gui.conftest import load_into, write_model

    folder = tmp_path / ("a-rather-long-folder-name-for-checkpoints-" * 3)
    folder.mkdir()
    path = write_model(folder / "mlp_seed1.safetensors", 1)
    load_into(qtbot, small_window, [path])
    small_window.model_list.select_id(small_window.session.models[0].id)
    small_window.show_tab("Inspector")
    qtbot.wait(50)
    scroller = small_window.tabs.currentWidget().parentWidget().parentWidget()  # page < viewport < scroll area
    assert not scroller.horizontalScrollBar().isVisible()
    table = small_window.inspector.tensor_table
    header = table.horizontalHeader()
    last = header.logicalIndex(header.count() - 1)
    assert header.sectionViewportPosition(last) + header.sectionSize(last) <= table.viewport().width() + 1
    subtitle = small_window.inspector.subtitle
    assert subtitle.text() == str(path)  # callers read the whole path; the label shows what fits
    assert subtitle.toolTip() == str(path)
    assert "…" in QLabel.text(subtitle) and QLabel.text(subtitle).endswith("mlp_seed1.safetensors")
