"""Model Stock: t = N·cos θ / (1 + (N−1)·cos θ), merged = t·mean + (1 − t)·base."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core.methods.model_stock import mean_pairwise_cosine, stock_ratio
from merge_studio.errors import MethodError
from tests.core.methods.conftest import call_method


def test_identical_fine_tunes_are_kept_as_they_are(randn):
    base, tuned = randn(5, 5, seed=0), randn(5, 5, seed=1)
    out = call_method("model_stock", [tuned, tuned.clone(), tuned.clone()], base)
    torch.testing.assert_close(out, tuned)


def test_orthogonal_task_vectors_fall_back_to_the_base():
    base = torch.tensor([1.0, 1.0, 1.0])
    tensors = [base + torch.tensor([1.0, 0.0, 0.0]), base + torch.tensor([0.0, 2.0, 0.0])]
    torch.testing.assert_close(call_method("model_stock", tensors, base), base)


def test_two_models_at_sixty_degrees_follow_the_formula():
    base = torch.zeros(2)
    tensors = [torch.tensor([1.0, 0.0]), torch.tensor([0.5, 3**0.5 / 2])]  # cos θ = 0.5
    t = 2 * 0.5 / (1 + 0.5)
    expected = t * (tensors[0] + tensors[1]) / 2
    torch.testing.assert_close(call_method("model_stock", tensors, base), expected)


def test_filter_wise_gives_each_row_its_own_ratio():
    base = torch.zeros(2, 2)
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # row 0 agrees (t = 1), row 1 is orthogonal (t = 0)
    out = call_method("model_stock", [a, b], base, params={"filter_wise": True})
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_filter_wise_on_a_conv_kernel_uses_one_ratio_per_output_channel(randn):
    base = randn(3, 2, 2, 2, seed=0)
    tensors = [base + randn(3, 2, 2, 2, seed=s) for s in (1, 2)]
    out = call_method("model_stock", tensors, base, params={"filter_wise": True})
    rows = [t.reshape(3, -1) - base.reshape(3, -1) for t in tensors]
    ratio = stock_ratio(mean_pairwise_cosine(rows), 2).unsqueeze(-1)
    mean = (tensors[0] + tensors[1]).reshape(3, -1) / 2
    torch.testing.assert_close(out, (ratio * mean + (1 - ratio) * base.reshape(3, -1)).reshape(base.shape))


def test_undefined_ratio_keeps_the_base():
    base = torch.zeros(2)
    out = call_method("model_stock", [torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])], base)  # cos θ = −1
    torch.testing.assert_close(out, base)


def test_model_stock_needs_a_base_and_two_fine_tunes():
    with pytest.raises(MethodError, match="base model"):
        call_method("model_stock", [torch.ones(2), torch.zeros(2)], None)
    with pytest.raises(MethodError, match="at least two"):
        call_method("model_stock", [torch.ones(2)], torch.zeros(2))
