"""The search plot: best-so-far for one objective, the Pareto front for two."""

from __future__ import annotations

from matplotlib.figure import Figure

from merge_studio.plots.search import pareto_mask, plot_search


def test_the_pareto_front_keeps_only_points_nobody_beats_on_both():
    values = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.9), (0.5, 0.5)]
    assert pareto_mask(values, ["maximize", "maximize"]) == [True, True, False, True, True]
    assert pareto_mask([(1.0, 2.0), (2.0, 1.0), (2.0, 2.0)], ["minimize", "minimize"]) == [True, True, False]


def test_one_objective_draws_the_trials_and_the_best_so_far():
    ax = Figure().add_subplot()
    plot_search(ax, [0, 1, 2, 3], [(0.3,), (0.5,), (0.4,), (0.6,)], ["maximize"], ["accuracy"])
    best = ax.lines[0]
    assert list(best.get_ydata()) == [0.3, 0.5, 0.5, 0.6]
    assert ax.get_ylabel() == "accuracy" and ax.get_xlabel() == "trial"


def test_two_objectives_draw_the_front_in_order():
    ax = Figure().add_subplot()
    plot_search(ax, [0, 1, 2], [(0.9, 0.1), (0.05, 0.05), (0.1, 0.9)], ["maximize", "maximize"], ["a", "b"], selected=2)
    front = ax.lines[0]
    assert list(front.get_xdata()) == [0.1, 0.9]
    assert ax.get_xlabel() == "a" and ax.get_ylabel() == "b"
