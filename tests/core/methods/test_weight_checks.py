"""Weights that cancel out are found from the recipe alone, before any tensor is read."""

from __future__ import annotations

from merge_studio.core.methods.weight_checks import weight_sum_problem


def test_weighted_average_with_weights_summing_to_zero_is_a_problem_only_when_normalising():
    weights = [{"weight": 1.0}, {"weight": -1.0}]
    assert "sum to zero" in weight_sum_problem("weighted_average", {}, weights)
    assert "Normalise weights" in weight_sum_problem("weighted_average", {"normalize": True}, weights)
    assert weight_sum_problem("weighted_average", {"normalize": False}, weights) is None
    assert weight_sum_problem("weighted_average", {}, [{"weight": 1.0}, {"weight": -0.5}]) is None


def test_defaults_count_as_weights_and_other_methods_are_not_checked():
    assert weight_sum_problem("weighted_average", {}, [{}, {"weight": -1.0}]) is not None
    assert weight_sum_problem("task_arithmetic", {}, [{"weight": 1.0}, {"weight": -1.0}]) is None
    assert weight_sum_problem("simple_average", {}, [{}, {}]) is None


def test_fisher_needs_a_positive_total():
    assert "positive" in weight_sum_problem("fisher", {}, [{"weight": 0.5}, {"weight": -1.0}])
    assert weight_sum_problem("fisher", {}, [{"weight": 0.5}, {"weight": 1.0}]) is None


def test_per_layer_weights_are_left_to_the_merge():
    assert weight_sum_problem("weighted_average", {}, [{"weight": [1.0, 0.0]}, {"weight": -1.0}]) is None
