"""SLERP and the averages: endpoints, fallbacks and formulas on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from merge_studio.core.methods.slerp import slerp_tensors
from merge_studio.errors import MethodError
from tests.core.methods.conftest import call_method


def test_slerp_returns_the_endpoints_at_t_0_and_1(randn):
    a, b = randn(6, 4, seed=1), randn(6, 4, seed=2)
    torch.testing.assert_close(call_method("slerp", [a, b], params={"t": 0.0}), a, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(call_method("slerp", [a, b], params={"t": 1.0}), b, rtol=1e-6, atol=1e-6)


def test_slerp_keeps_the_norm_of_orthogonal_unit_tensors_where_lerp_shrinks_it():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = call_method("slerp", [a, b], params={"t": 0.5})
    torch.testing.assert_close(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    third = call_method("slerp", [a, b], params={"t": 1 / 3})
    torch.testing.assert_close(third, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))


@pytest.mark.parametrize("scale", [2.5, -0.5])
def test_slerp_falls_back_to_lerp_for_parallel_tensors(randn, scale):
    a = randn(10, seed=3)
    b = scale * a
    out = call_method("slerp", [a, b], params={"t": 0.3})
    torch.testing.assert_close(out, 0.7 * a + 0.3 * b)


def test_slerp_falls_back_to_lerp_when_a_tensor_is_zero(randn):
    b = randn(5, seed=4)
    out = slerp_tensors(torch.zeros(5), b, 0.25)
    torch.testing.assert_close(out, 0.25 * b)
    assert torch.equal(slerp_tensors(torch.zeros(3), torch.zeros(3), 0.5), torch.zeros(3))


def test_slerp_keeps_the_shape_and_does_not_touch_its_inputs(randn):
    a, b = randn(3, 4, 5, seed=1), randn(3, 4, 5, seed=2)
    a0, b0 = a.clone(), b.clone()
    out = call_method("slerp", [a, b], params={"t": 0.4})
    assert out.shape == (3, 4, 5)
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_slerp_in_half_precision_stays_close_to_float32(randn):
    a, b = randn(64, seed=1), randn(64, seed=2)
    full = slerp_tensors(a, b, 0.3)
    half = slerp_tensors(a.half(), b.half(), 0.3)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_lerp_is_the_straight_line(randn):
    a, b = randn(4, seed=1), randn(4, seed=2)
    torch.testing.assert_close(call_method("lerp", [a, b], params={"t": 0.25}), 0.75 * a + 0.25 * b)


def test_simple_average_is_the_mean(randn):
    tensors = [randn(3, 3, seed=s) for s in range(4)]
    torch.testing.assert_close(call_method("simple_average", tensors), torch.stack(tensors).mean(0))


def test_weighted_average_with_weights_summing_to_zero_names_the_tensor():
    with pytest.raises(MethodError, match=r"weights sum to zero for blocks\.0\.fc\.weight"):
        call_method("weighted_average", [torch.ones(2), torch.ones(2)], model_params=[{"weight": 1.0}, {"weight": -1.0}])


def test_task_arithmetic_is_base_plus_lambda_times_the_weighted_task_vectors(randn):
    base = randn(4, 4, seed=0)
    tensors = [randn(4, 4, seed=s) for s in (1, 2)]
    out = call_method(
        "task_arithmetic", tensors, base, params={"lambda": 0.8},
        model_params=[{"weight": 0.5}, {"weight": -0.25}],
    )
    expected = base + 0.8 * (0.5 * (tensors[0] - base) - 0.25 * (tensors[1] - base))
    torch.testing.assert_close(out, expected)


def test_task_arithmetic_does_not_modify_its_inputs(randn):
    base, model = randn(4, seed=0), randn(4, seed=1)
    base0, model0 = base.clone(), model.clone()
    call_method("task_arithmetic", [model], base, params={"normalize": True})
    assert torch.equal(base, base0) and torch.equal(model, model0)
