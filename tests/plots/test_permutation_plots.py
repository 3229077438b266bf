"""Permutation pictures: matrices, similarity before/after reordering, convergence, moved share."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from merge_studio.plots.permutations import (
    BLOCKED_COLOUR,
    permutation_matrix,
    plot_group_overview,
    plot_moved_fraction,
    plot_objective,
    plot_permutation_matrix,
    plot_similarity,
    save_axes_figure,
)

REPORT = {
    "groups": [
        {"name": "fc1", "size": 4, "n_heads": 1, "perm": [1, 0, 2, 3], "moved_fraction": 0.5, "members": []},
        {"name": "attn.qk", "size": 4, "n_heads": 2, "perm": [2, 3, 0, 1], "moved_fraction": 1.0, "members": []},
    ],
    "blocked": {"fc2.weight": ["cumsum: not known"], "fc2.bias": ["cumsum: not known"]},
    "objective_per_sweep": [3.0, 4.0, 4.0],
    "initial_objective": 1.0,
}


def test_the_permutation_matrix_has_one_entry_per_row_at_the_source_unit():
    matrix = permutation_matrix(torch.tensor([2, 0, 1]))
    assert matrix.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    ax = Figure().add_subplot()
    plot_permutation_matrix(ax, [2, 0, 1, 3])
    rgba = np.asarray(ax.images[0].get_array())
    filled = rgba[..., :3].sum(axis=2) < 2.9  # white where no unit goes
    assert np.array_equal(filled, permutation_matrix([2, 0, 1, 3]).astype(bool))
    assert not np.array_equal(rgba[0, 2], rgba[3, 3])  # moved and kept units differ in colour
    assert "75% of 4 units moved" in ax.get_title()


def test_similarity_after_reordering_puts_the_matches_on_the_diagonal():
    perm = np.array([3, 1, 0, 2])
    sim = np.eye(4)[:, np.argsort(perm)]  # A's unit i matches B's unit perm[i]
    fig = Figure()
    before, after = fig.subplots(1, 2)
    plot_similarity(before, sim)
    plot_similarity(after, sim, perm)
    shown = np.asarray(after.images[0].get_array())
    assert np.array_equal(shown.argmax(axis=1), np.arange(4))
    assert not np.array_equal(np.asarray(before.images[0].get_array()).argmax(axis=1), np.arange(4))
    assert "after reordering (100% of rows" in after.get_title() and "before" in before.get_title()


def test_centring_keeps_the_assignment_and_removes_common_offsets():
    from scipy.optimize import linear_sum_assignment

    from merge_studio.plots.permutations import centred

    sim = np.random.default_rng(1).normal(size=(5, 5)) + 10.0 + np.arange(5)[:, None]
    c = centred(sim)
    assert np.allclose(c.mean(axis=0), 0) and np.allclose(c.mean(axis=1), 0)
    assert np.array_equal(linear_sum_assignment(sim, maximize=True)[1], linear_sum_assignment(c, maximize=True)[1])


def test_the_convergence_plot_starts_at_the_objective_before_any_permutation():
    ax = Figure().add_subplot()
    plot_objective(ax, REPORT["objective_per_sweep"], initial=REPORT["initial_objective"])
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == [0, 1, 2, 3] and list(ys) == [1.0, 3.0, 4.0, 4.0]


def test_moved_fraction_shows_a_bar_per_group_and_unpermutable_layers_in_their_own_colour():
    ax = Figure().add_subplot()
    plot_moved_fraction(ax, REPORT)
    widths = [p.get_width() for p in ax.patches]
    assert widths == [0.5, 1.0, 1.0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["fc1 (4)", "attn.qk (4, 2 heads)", "fc2 — not permutable"]
    assert ax.patches[2].get_facecolor()[:3] == tuple(int(BLOCKED_COLOUR[i : i + 2], 16) / 255 for i in (1, 3, 5))


def test_a_group_overview_can_be_saved_as_png(tmp_path):
    fig = Figure(figsize=(9, 3))
    plot_group_overview(fig, REPORT["groups"][0], np.random.default_rng(0).normal(size=(4, 4)))
    path = save_axes_figure(fig, tmp_path / "fc1.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len([ax for ax in fig.axes if ax.images]) == 3
