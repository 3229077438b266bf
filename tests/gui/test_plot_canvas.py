"""Plots draw off the GUI thread, at most ~10 times a second, and grow rather than collapse."""

from __future__ import annotations

import threading

import pytest
from matplotlib.figure import Figure

from merge_studio.gui.plot_canvas import BackgroundCanvas, wait_for_plots

pytestmark = pytest.mark.gui


@pytest.fixture()
def canvas(qtbot):
    widget = BackgroundCanvas(Figure(layout="constrained"))
    qtbot.addWidget(widget)
    widget.resize(420, 300)
    widget.show()
    return widget


def test_a_plot_is_drawn_on_a_helper_thread_and_then_shown(canvas):
    canvas.edit(lambda fig: fig.add_subplot().plot([0, 1, 2], [1, 3, 2]))
    assert wait_for_plots(10, [canvas])
    assert canvas.figure.axes[0].lines
    assert canvas.render_threads and threading.main_thread().name not in canvas.render_threads
    image = canvas.grab().toImage()
    colours = {image.pixel(x, y) for x in range(0, 420, 7) for y in range(0, 300, 7)}
    assert len(colours) > 3, "the finished frame is painted, not a blank widget"


def test_many_quick_changes_cost_few_draws(canvas):
    canvas.edit(lambda fig: fig.add_subplot())
    for i in range(40):
        canvas.edit(lambda fig, i=i: fig.axes[0].plot([0, 1], [i, i + 1]))
    assert wait_for_plots(10, [canvas])
    assert len(canvas.figure.axes[0].lines) == 40
    assert canvas.render_count <= 4


def test_a_figure_too_small_for_its_axes_asks_for_more_room_instead_of_collapsing(canvas):
    canvas.setMinimumSize(100, 60)
    canvas.resize(300, 60)

    def crowded(fig: Figure) -> None:
        for i, ax in enumerate(fig.subplots(3, 1)):
            ax.set_title(f"title {i}")
            ax.set_xlabel("a label")

    canvas.edit(crowded)
    assert wait_for_plots(10, [canvas])
    assert canvas.collapse_count >= 1
    assert canvas.minimumHeight() > 60
    canvas.resize(300, canvas.minimumHeight() * 3)
    canvas.draw()
    assert not canvas.last_draw_collapsed


def test_canvases_asked_together_draw_one_after_another(qtbot):
    """Renders that ran side by side took the GIL from the GUI thread in turn; they now queue."""
    canvases = []
    for _ in range(3):
        widget = BackgroundCanvas(Figure())
        qtbot.addWidget(widget)
        widget.resize(300, 200)
        widget.show()
        canvases.append(widget)
    drawing, most = [0], [0]
    lock = threading.Lock()

    def slow_plot(fig):
        with lock:
            drawing[0] += 1
            most[0] = max(most[0], drawing[0])
        fig.add_subplot().plot(range(2000), range(2000))
        threading.Event().wait(0.05)  # long enough that unqueued renders would overlap
        with lock:
            drawing[0] -= 1

    for widget in canvases:
        widget.edit(slow_plot)
    assert wait_for_plots(20, canvases)
    assert all(w.figure.axes for w in canvases)
    assert most[0] == 1


def test_the_gui_thread_gets_the_gil_sooner_only_while_a_plot_draws(qtbot, monkeypatch):
    # matplotlib's drawing is Python through and through: at 1 ms the GUI waited 40-70 ms a frame
    import sys

    from matplotlib.figure import Figure

    from merge_studio.gui import plot_canvas

    canvas = plot_canvas.BackgroundCanvas(Figure())
    qtbot.addWidget(canvas)
    canvas.resize(200, 150)
    canvas.show()
    during: list[float] = []
    real = plot_canvas.BackgroundCanvas._render_once
    monkeypatch.setattr(plot_canvas.BackgroundCanvas, "_render_once",
                        lambda self, generation: during.append(sys.getswitchinterval()) or real(self, generation))
    before = sys.getswitchinterval()
    canvas.edit(lambda fig: fig.add_subplot().plot([0, 1], [1, 0]))
    canvas.draw_idle()
    assert canvas.wait(10)
    assert during and during[-1] == pytest.approx(min(before, plot_canvas.RENDER_SWITCH_S))
    assert sys.getswitchinterval() == pytest.approx(before)
