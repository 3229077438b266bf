"""TIES: trim by magnitude, elect a sign, average only the models that agree."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core.methods import get_method
from merge_studio.core.methods.sparsify import magnitude_threshold
from merge_studio.errors import MethodError
from tests.core.methods.conftest import call_method, make_ctx


def test_merged_changes_always_have_the_elected_sign(randn):
    base = randn(40, 30, seed=0)
    tensors = [base + randn(40, 30, seed=s) for s in (1, 2, 3, 4)]
    weights, density = [1.0, 0.5, 0.8, 0.3], 0.4
    out = call_method(
        "ties", tensors, base, model_params=[{"weight": w, "density": density} for w in weights]
    )
    trimmed = []
    for t, w in zip(tensors, weights, strict=True):
        delta = t - base
        trimmed.append(w * delta * (delta.abs() >= magnitude_threshold(delta, density)))
    elected = torch.where(sum(trimmed) >= 0, 1.0, -1.0)
    change = out - base
    assert (change * elected >= 0).all()
    assert (change != 0).float().mean() > 0.5  # most entries did change


def test_count_consensus_follows_the_majority_and_sum_follows_the_total():
    base = torch.zeros(1)
    tensors = [torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([-5.0])]
    by_sum = call_method("ties", tensors, base, params={"consensus": "sum"})
    by_count = call_method("ties", tensors, base, params={"consensus": "count"})
    torch.testing.assert_close(by_sum, torch.tensor([-5.0]))
    torch.testing.assert_close(by_count, torch.tensor([1.0]))  # disjoint mean of the two agreeing models


def test_disjoint_mean_divides_by_the_weights_that_agreed():
    base = torch.zeros(2)
    tensors = [torch.tensor([2.0, 1.0]), torch.tensor([4.0, -3.0])]
    out = call_method("ties", tensors, base, model_params=[{"weight": 1.0}, {"weight": 3.0}])
    # entry 0: both agree -> (2 + 12) / 4; entry 1: votes 1 - 9 < 0, only model 2 -> -9 / 3
    torch.testing.assert_close(out, torch.tensor([3.5, -3.0]))


def test_entries_tied_at_the_threshold_are_all_kept():
    base = torch.zeros(6)
    model = torch.tensor([3.0, -2.0, 2.0, 2.0, 1.0, 0.5])  # density 0.5 -> k = 3, but three tie at 2
    out = call_method("ties", [model], base, model_params=[{"density": 0.5}])
    torch.testing.assert_close(out, torch.tensor([3.0, -2.0, 2.0, 2.0, 0.0, 0.0]))


def test_low_density_on_a_tiny_tensor_still_keeps_its_largest_entry():
    base = torch.zeros(4)
    out = call_method("ties", [torch.tensor([0.1, -0.9, 0.3, 0.2])], base, model_params=[{"density": 0.1}])
    torch.testing.assert_close(out, torch.tensor([0.0, -0.9, 0.0, 0.0]))


def test_lambda_scales_the_merged_task_vector(randn):
    base = randn(5, 5, seed=0)
    tensors = [base + randn(5, 5, seed=s) for s in (1, 2)]
    mps = [{"density": 0.6}, {"density": 0.6}]
    one = call_method("ties", tensors, base, params={"lambda": 1.0}, model_params=mps)
    half = call_method("ties", tensors, base, params={"lambda": 0.5}, model_params=mps)
    torch.testing.assert_close(half - base, 0.5 * (one - base))


def test_statistics_give_each_models_trim_threshold(randn):
    spec = get_method("ties")
    base = randn(100, seed=0)
    model = base + torch.arange(1, 101, dtype=torch.float32)  # |τ| = 1..100
    params = spec.params()
    threshold = spec.statistics(model, base, params, spec.model_params(density=0.25), make_ctx(shape=(100,)))
    assert threshold == pytest.approx(76.0)  # the 25th largest
    assert spec.statistics(model, base, params, spec.model_params(density=1.0), make_ctx(shape=(100,))) == 0.0


def test_a_chunk_without_thresholds_is_refused():
    spec = get_method("ties")
    with pytest.raises(MethodError, match="thresholds"):
        spec.merge(
            [torch.ones(4)], torch.zeros(4), spec.params(), [spec.model_params(density=0.5)],
            make_ctx(shape=(8,), chunk=(0, 4)),
        )


def test_kept_fraction_metrics_say_how_much_task_vector_survived(randn):
    base = randn(50, seed=0)
    tensors = [base + randn(50, seed=s) for s in (1, 2, 3)]
    ctx = make_ctx(shape=(50,))
    call_method("ties", tensors, base, model_params=[{"density": 0.3}] * 3, ctx=ctx)
    total = sum(float((t - base).abs().sum()) for t in tensors)
    assert ctx.metrics["task_mass_total"] == pytest.approx(total, rel=1e-5)
    assert 0.0 < ctx.metrics["task_mass_kept"] < 0.5 * total


def test_ties_without_a_base_names_the_tensor():
    with pytest.raises(MethodError, match=r"base model for blocks\.0\.fc\.weight"):
        call_method("ties", [torch.ones(3), torch.zeros(3)], None)


@pytest.mark.parametrize("weights", [[1.0, 0.5, 2.0], [1.0, -0.5, 2.0], [0.0, 1.0, 1.0]])
def test_disjoint_mean_matches_a_plain_reference_for_any_weights(randn, weights):
    """The quick "no zero divisor" path (positive weights) and the masked one agree with the definition."""
    base = randn(64, 48, seed=0)
    tensors = [base + randn(64, 48, seed=s) for s in (1, 2, 3)]
    density = 0.3
    out = call_method("ties", tensors, base, model_params=[{"weight": w, "density": density} for w in weights])
    trimmed = []
    for t, w in zip(tensors, weights, strict=True):
        delta = t - base
        trimmed.append(w * delta * (delta.abs() >= magnitude_threshold(delta, density)))
    elected = torch.where(sum(trimmed) >= 0, 1.0, -1.0)
    agreeing = [td * (td * elected > 0) for td in trimmed]
    divisor = sum(w * (a != 0) for w, a in zip(weights, agreeing, strict=True))
    divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    expected = base + sum(agreeing) / divisor
    assert (sum(agreeing) == 0).any()  # some entries had no model left: the divisor-0 case is exercised
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
