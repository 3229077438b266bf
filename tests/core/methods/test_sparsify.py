"""The thinning rules shared by TIES and DARE: keep counts, thresholds, drops."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core import methods
from merge_studio.core.methods.sparsify import (
    delta_magnitude_threshold,
    keep_count,
    kth_largest_,
    magnitude_threshold,
    random_drop_,
    trim_below_,
)


@pytest.mark.parametrize(("numel", "density", "kept"), [(10, 0.5, 5), (10, 0.29, 2), (3, 0.1, 1), (0, 0.5, 0)])
def test_keep_count_rounds_down_like_mergekit_but_keeps_at_least_one(numel, density, kept):
    assert keep_count(numel, density) == kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_kth_largest_agrees_with_a_full_sort(randn, dtype):
    values = randn(1001, seed=3).to(dtype)
    expected = torch.sort(values.float(), descending=True).values
    for k in (1, 17, 500, 1001):
        assert kth_largest_(values.clone(), k) == pytest.approx(float(expected[k - 1]))


@pytest.mark.parametrize("kind", ["spread", "many ties", "mostly zeros", "all equal"])
def test_large_tensors_find_the_exact_kth_largest_through_a_sampled_bracket(kind):
    n = 1_200_007  # above the bracketing size, not a multiple of the sample step
    gen = torch.Generator().manual_seed(5)
    if kind == "spread":
        values = torch.randn(n, generator=gen).abs()
    elif kind == "many ties":  # differences of bfloat16 weights take few distinct values
        values = (torch.randn(n, generator=gen).bfloat16().float() - torch.randn(n, generator=gen).bfloat16().float()).abs()
    elif kind == "mostly zeros":
        values = torch.zeros(n)
        values[::9] = torch.rand(values[::9].shape, generator=gen)
    else:
        values = torch.full((n,), 0.25)
    expected = torch.sort(values, descending=True).values
    for k in (1, 40, n // 10, n // 2, n - 3, n):
        assert kth_largest_(values.clone(), k) == float(expected[k - 1]), k


@pytest.mark.parametrize("kind", ["spread", "many ties", "all equal", "bracket misses"])
def test_a_models_threshold_made_chunk_by_chunk_is_the_same_number_as_from_the_whole_delta(kind, monkeypatch):
    n = 2_500_003  # three chunks, the last one short
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(n, generator=gen).bfloat16().float()
    if kind == "all equal":
        model = base + 0.25
    else:
        noise = torch.randn(n, generator=gen) * (1.0 if kind == "spread" else 0.02)
        model = (base + noise).bfloat16().float()
    if kind == "bracket misses":  # a useless bracket must fall back to the exact selection
        monkeypatch.setattr(methods.sparsify, "_bracket", lambda sample, k, n: (0.0, 0.0))
    before = model.clone()
    for density in (0.01, 0.3, 0.5, 0.97, 1.0):
        expected = magnitude_threshold(model - base, density)
        assert delta_magnitude_threshold(model, base, density) == expected, density
    assert torch.equal(model, before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_threshold_from_tensors_as_stored_is_the_one_from_their_float32_values(dtype):
    n = 1_300_001  # chunked, the last block short
    gen = torch.Generator().manual_seed(4)
    base = (torch.randn(n, generator=gen) * 0.02).to(dtype)
    model = (base.float() + torch.randn(n, generator=gen) * 0.002).to(dtype)
    for density in (0.1, 0.5, 0.9):
        expected = magnitude_threshold(model.float() - base.float(), density)
        assert delta_magnitude_threshold(model, base, density) == expected, density
        small = slice(0, 5000)  # below the chunked path's size: the fallback converts too
        expected = magnitude_threshold(model[small].float() - base[small].float(), density)
        assert delta_magnitude_threshold(model[small], base[small], density) == expected, density


def test_threshold_leaves_the_callers_delta_alone_unless_told(randn):
    delta = randn(20, 30, seed=1).t()  # not contiguous
    before = delta.clone()
    threshold = magnitude_threshold(delta, 0.25)
    assert torch.equal(delta, before)
    assert (delta.abs() >= threshold).sum().item() == 150
    assert magnitude_threshold(delta.clone(), 0.25, overwrite=True) == threshold


def test_trim_keeps_entries_at_or_above_the_threshold():
    delta = torch.tensor([0.5, -1.0, 2.0, -0.2, 1.0])
    torch.testing.assert_close(trim_below_(delta, 1.0), torch.tensor([0.0, -1.0, 2.0, 0.0, 1.0]))


def test_random_drop_is_reproducible_from_the_generator():
    first = random_drop_(torch.ones(1000), 0.5, torch.Generator().manual_seed(4), rescale=True)
    again = random_drop_(torch.ones(1000), 0.5, torch.Generator().manual_seed(4), rescale=True)
    assert torch.equal(first, again)
    assert set(first.unique().tolist()) == {0.0, 2.0}


def test_full_density_changes_nothing_and_draws_nothing():
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    delta = torch.randn(50)
    assert torch.equal(random_drop_(delta.clone(), 1.0, gen, rescale=True), delta)
    assert torch.equal(gen.get_state(), state)
    assert magnitude_threshold(delta, 1.0) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_trim_keeps_the_threshold_itself_in_every_dtype(dtype):
    threshold = float(torch.tensor(0.3, dtype=dtype))
    below = float(torch.nextafter(torch.tensor(threshold, dtype=dtype), torch.tensor(0.0, dtype=dtype)))
    delta = torch.tensor([threshold, -threshold, below, -below, 0.0, 1.0], dtype=dtype)
    trimmed = trim_below_(delta, threshold)
    assert trimmed.tolist() == [threshold, -threshold, 0.0, 0.0, 0.0, 1.0]
