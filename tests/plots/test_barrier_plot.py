"""Barrier and model-score plots draw on a plain matplotlib Axes (no pyplot)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint
from merge_studio.core.evaluate.loop import EvalResult
from merge_studio.plots.barrier import BarrierPlotter, draw_barrier_report, plot_barrier
from merge_studio.plots.evaluation import draw_model_scores, plot_model_scores


def _curve(label: str, peak: float, anchors=("A", "B")) -> BarrierCurve:
    lam = np.linspace(0, 1, 5)
    points = []
    for split, shift in (("test", 0.1), ("train", 0.0)):
        loss = 0.2 + shift + peak * np.sin(np.pi * lam)
        acc = 0.95 - 0.3 * peak * np.sin(np.pi * lam)
        points += [BarrierPoint(label, float(x), split, float(v), float(a)) for x, v, a in zip(lam, loss, acc)]
    return BarrierCurve.from_points(label, points, anchors=anchors)


def test_barrier_plot_shows_one_line_per_curve_and_split_and_the_barrier_values_in_the_legend():
    fig = Figure()
    ax = fig.add_subplot()
    curves = [_curve("naive", 1.0), _curve("aligned", 0.2)]
    plot_barrier(ax, curves, metric="loss", split=("test", "train"))
    gids = {line.get_gid() for line in ax.get_lines() if line.get_gid()}
    assert gids == {"naive|test", "naive|train", "aligned|test", "aligned|train"}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "naive:  1" and legend[1] == "aligned:  0.2"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"]


def test_accuracy_barrier_is_shown_as_points_of_drop():
    fig = Figure()
    ax = fig.add_subplot()
    plot_barrier(ax, [_curve("naive", 1.0)], metric="accuracy")
    assert ax.get_legend().get_texts()[0].get_text() == "naive:  30.0 pts"


def test_a_path_through_a_merged_model_marks_the_merged_model_on_the_axis():
    fig = Figure()
    ax = fig.add_subplot()
    plot_barrier(ax, [_curve("naive", 1.0, ("m0", "m1")), _curve("via merged", 0.3, ("m0", "merged", "m1"))])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "A\nm0" and labels[1].startswith("merged") and labels[2] == "B\nm1"


def test_live_plotter_extends_lines_as_points_arrive_and_skips_other_splits():
    fig = Figure()
    plotter = BarrierPlotter(fig.add_subplot(), metric="loss", splits=("test",))
    assert plotter.add_point(BarrierPoint("naive", 0.0, "test", 1.0, 0.9))
    assert plotter.add_point(BarrierPoint("naive", 0.5, "test", 2.0, 0.5))
    assert not plotter.add_point(BarrierPoint("naive", 0.5, "train", 2.0, 0.5))
    assert plotter.add_point(BarrierPoint("BN reset", 0.0, "test", 1.0, 0.9))
    assert plotter.line_count == 2
    xs, ys = plotter.ax.get_lines()[0].get_data()
    assert list(xs) == [0.0, 0.5] and list(ys) == [1.0, 2.0]
    assert plotter.ax.get_ylim()[1] >= 2.0


def test_a_whole_report_saves_to_png_svg_and_pdf(tmp_path):
    fig = Figure(figsize=(8, 3))
    axes = draw_barrier_report(fig, [_curve("naive", 1.0), _curve("BN reset", 0.5)], title="t")
    assert len(axes) == 2
    for suffix in ("png", "svg", "pdf"):
        fig.savefig(tmp_path / f"b.{suffix}")
        assert (tmp_path / f"b.{suffix}").stat().st_size > 1000


def test_model_scores_draw_one_bar_per_model_and_split_with_values():
    fig = Figure()
    ax = fig.add_subplot()
    results = {"train": [EvalResult(0.1, 0.99, n=10), EvalResult(0.5, 0.8, n=10)],
               "test": [EvalResult(0.2, 0.97, n=5), EvalResult(0.6, 0.75, n=5)]}
    plot_model_scores(ax, ["a", "merged"], results, "accuracy", highlight="merged")
    assert len(ax.patches) == 4
    labels = [t.get_text() for t in ax.texts]
    assert "97.0%" in labels and "75.0%" in labels
    assert ax.get_xticklabels()[1].get_fontweight() == "bold"


def test_regression_scores_get_no_accuracy_chart():
    fig = Figure()
    axes = draw_model_scores(fig, ["a"], {"test": [EvalResult(0.3, None, n=4)]})
    assert len(axes) == 1
