"""The evaluation loop and BatchNorm re-estimation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from merge_studio.core.evaluate.data import EvalData, TensorSplit
from merge_studio.core.evaluate.loop import evaluate, evaluate_models, iter_evaluate_models, reset_batchnorm
from merge_studio.core.progress import CancelToken, Progress
from merge_studio.errors import Cancelled


def test_classification_reports_cross_entropy_and_accuracy_that_match_a_direct_computation(two_mlps, digits_flat):
    model = two_mlps[0]
    result = evaluate(model, digits_flat.test, "classification", device="cpu", batch_size=100)
    with torch.no_grad():
        logits = model(digits_flat.test.inputs)
    assert result.loss == pytest.approx(nn.functional.cross_entropy(logits, digits_flat.test.targets).item(), rel=1e-5)
    assert result.accuracy == pytest.approx((logits.argmax(1) == digits_flat.test.targets).float().mean().item())
    assert result.n == len(digits_flat.test)
    assert result.accuracy > 0.5


def test_regression_reports_mse_and_no_accuracy(regression):
    data = regression
    model = nn.Linear(5, 1)
    result = evaluate(model, data.test, "regression", device="cpu")
    with torch.no_grad():
        expected = nn.functional.mse_loss(model(data.test.inputs), data.test.targets).item()
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.accuracy is None and result.perplexity is None


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.head = nn.Linear(8, 11)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def test_language_modelling_reports_perplexity_as_exp_of_the_token_loss():
    tokens = torch.randint(0, 11, (6, 5))
    split = TensorSplit(tokens[:, :-1], tokens[:, 1:])
    result = evaluate(TinyLM(), split, "language_modeling", device="cpu")
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert 0.0 <= result.accuracy <= 1.0


def test_bn_reset_changes_bn_buffers_and_nothing_else(digits_image, make_bn_cnn):
    model = make_bn_cnn(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert reset_batchnorm(model, digits_image.train, device="cpu", batch_size=100) == 1
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert not model.training and model[1].momentum == 0.1
    # the statistics are those of the first layer's activations on the training data
    with torch.no_grad():
        acts = model[0](digits_image.train.inputs)
    assert torch.allclose(after["1.running_mean"], acts.mean(dim=(0, 2, 3)), atol=1e-4)


def test_evaluating_models_given_as_state_dicts_uses_the_template(two_mlps, digits_flat, make_mlp):
    a, b = two_mlps
    results = evaluate_models([a.state_dict(), b], ["A", "B"], digits_flat, template=make_mlp(5), device="cpu")
    assert results[0] == evaluate(a, digits_flat.test, device="cpu", batch_size=1024)
    assert results[1] == evaluate(b, digits_flat.test, device="cpu", batch_size=1024)


def test_evaluating_models_reports_progress_and_stops_on_cancel(two_mlps, digits_flat):
    cancel = CancelToken()
    job = iter_evaluate_models(list(two_mlps), ["A", "B"], digits_flat, device="cpu", cancel=cancel)
    first = next(job)
    assert isinstance(first, Progress) and first.total == 4
    cancel.cancel()
    with pytest.raises(Cancelled):
        list(job)


def test_an_empty_split_is_an_error_for_people(make_mlp):
    empty = EvalData(train=TensorSplit(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)),
                     test=TensorSplit(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(Exception, match="empty"):
        evaluate(make_mlp(0), empty.test, device="cpu")


def test_evaluating_a_batchnorm_model_re_estimates_statistics_on_a_copy(digits_image, make_bn_cnn):
    model = make_bn_cnn(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with_reset = evaluate_models([model], ["cnn"], digits_image, device="cpu")[0]
    without = evaluate_models([model], ["cnn"], digits_image, reset_bn="off", device="cpu")[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert with_reset.loss != pytest.approx(without.loss)
