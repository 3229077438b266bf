"""The per-layer bar chart stays readable from a handful to hundreds of layers."""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from merge_studio.plots.deltas import figure_height_for, plot_layer_values


def _axes(layers: int = 10):
    return Figure(figsize=(6, figure_height_for(layers))).add_subplot()


def test_one_bar_per_layer_in_model_order_top_down():
    ax = _axes()
    values = {"conv1": 0.1, "layer1.0.conv1": 0.5, "fc": 0.2}
    bars = plot_layer_values(ax, values, title="relative change", xlabel="‖merged − A‖ / ‖A‖")
    assert [b.get_width() for b in bars] == [0.1, 0.5, 0.2]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["conv1", "layer1.0.conv1", "fc"]
    top, bottom = ax.get_ylim()
    assert top > bottom  # inverted: the first layer is drawn on top
    assert ax.get_title() == "relative change" and ax.get_xlabel() == "‖merged − A‖ / ‖A‖"


def test_highlighted_layers_stand_out():
    ax = _axes()
    bars = plot_layer_values(ax, {"a": 1.0, "b": 2.0}, highlight=["b"])
    assert bars[0].get_facecolor() != bars[1].get_facecolor()


def test_hundreds_of_layers_get_thinned_labels():
    ax = _axes(300)
    values = {f"blocks.{i}.mlp.fc1": i / 300 for i in range(300)}
    bars = plot_layer_values(ax, values)
    assert len(bars) == 300
    assert len(ax.get_yticklabels()) <= 60


def test_non_finite_values_are_left_out_and_said():
    ax = _axes()
    bars = plot_layer_values(ax, {"a": 1.0, "b": math.nan}, title="cosine")
    assert len(bars) == 1 and "1 non-finite left out" in ax.get_title()


def test_no_values_says_so():
    ax = _axes()
    assert plot_layer_values(ax, {}) == []
    assert any("no per-layer values" in t.get_text() for t in ax.texts)
