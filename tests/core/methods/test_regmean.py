"""RegMean: the closed form against a direct least-squares solve, Gram matrices, and the method as a job."""

from __future__ import annotations

import torch
from torch import nn

from merge_studio.core.methods.regmean import (
    iter_gram_matrices,
    regmean_merge_state_dicts,
    regmean_weight,
    scale_off_diagonal,
)
from merge_studio.core.progress import drive


def _problem(seed: int = 0, rows: int = 40, d_in: int = 6, d_out: int = 3):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(rows, d_in, generator=g, dtype=torch.float64) for _ in range(2)]
    ws = [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in range(2)]
    return xs, ws


def test_with_alpha_one_the_merge_is_the_least_squares_fit_of_both_models_outputs():
    xs, ws = _problem()
    grams = [x.T @ x for x in xs]
    merged = regmean_weight(ws, grams, alpha=1.0)
    stacked_x = torch.cat(xs)
    stacked_y = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    direct = torch.linalg.lstsq(stacked_x, stacked_y).solution.T
    torch.testing.assert_close(merged, direct, rtol=1e-9, atol=1e-9)


def test_with_alpha_zero_each_input_column_is_a_gram_weighted_average():
    xs, ws = _problem(1)
    grams = [x.T @ x for x in xs]
    merged = regmean_weight(ws, grams, alpha=0.0)
    d = [torch.diagonal(g) for g in grams]
    expected = (ws[0] * d[0] + ws[1] * d[1]) / (d[0] + d[1])
    torch.testing.assert_close(merged, expected, rtol=1e-9, atol=1e-9)


def test_alpha_shrinks_only_the_off_diagonal():
    g = torch.tensor([[4.0, 2.0], [2.0, 9.0]])
    torch.testing.assert_close(scale_off_diagonal(g, 0.9), torch.tensor([[4.0, 1.8], [1.8, 9.0]]))


def test_an_input_no_model_ever_sees_keeps_the_average_weight():
    xs, ws = _problem(2)
    for x in xs:
        x[:, 0] = 0.0  # like the always-blank border pixels of the digits
    merged = regmean_weight(ws, [x.T @ x for x in xs], alpha=1.0)
    assert torch.isfinite(merged).all()
    torch.testing.assert_close(merged[:, 0], (ws[0][:, 0] + ws[1][:, 0]) / 2)
    stacked_x = torch.cat(xs)[:, 1:]
    stacked_y = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    torch.testing.assert_close(merged[:, 1:], torch.linalg.lstsq(stacked_x, stacked_y).solution.T, rtol=1e-8, atol=1e-8)


def test_gram_matrices_are_accumulated_batch_by_batch_per_linear_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(23, 5)
    progress = []
    grams = drive(iter_gram_matrices(model, x, batch_size=8), on_progress=progress.append)
    assert set(grams) == {"0.weight", "2.weight"}
    torch.testing.assert_close(grams["0.weight"], x.T @ x / 23, rtol=1e-5, atol=1e-6)
    h = torch.relu(model[0](x)).detach()
    torch.testing.assert_close(grams["2.weight"], h.T @ h / 23, rtol=1e-5, atol=1e-6)
    assert [p.done for p in progress] == [8, 16, 23]
    assert not model[0]._forward_hooks  # hooks removed


def test_biases_and_excluded_layers_are_averaged():
    xs, ws = _problem(3)
    states = [{"fc.weight": w.float(), "fc.bias": torch.full((3,), float(i))} for i, w in enumerate(ws)]
    grams = [{"fc.weight": (x.T @ x).float()} for x in xs]
    merged = regmean_merge_state_dicts(states, grams, alpha=0.9)
    torch.testing.assert_close(merged["fc.bias"], torch.full((3,), 0.5))
    plain = regmean_merge_state_dicts(states, grams, exclude_regex="fc")
    torch.testing.assert_close(plain["fc.weight"], (states[0]["fc.weight"] + states[1]["fc.weight"]) / 2)
