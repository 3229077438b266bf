"""Fisher merging: the weighted average, the Fisher estimate, and the method as the engine runs it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.methods.fisher import (
    FisherModelParams,
    FisherParams,
    fisher_merge,
    fisher_merge_state_dicts,
    iter_diagonal_fisher,
)
from merge_studio.core.methods.registry import get_method
from merge_studio.core.methods.spec import ModelJobContext
from merge_studio.core.progress import CancelToken, Progress, drive
from merge_studio.errors import Cancelled


def _states(make_mlp):
    return [make_mlp(0).state_dict(), make_mlp(1).state_dict(), make_mlp(2).state_dict()]


def test_equal_fisher_gives_the_simple_average(make_mlp):
    states = _states(make_mlp)
    fisher = {k: torch.rand_like(v) + 0.1 for k, v in states[0].items()}
    merged = fisher_merge_state_dicts(states, [fisher] * 3)
    for key in states[0]:
        assert torch.allclose(merged[key], sum(s[key] for s in states) / 3, atol=1e-6)


def test_a_dominant_fisher_pulls_the_merge_to_that_model(make_mlp):
    states = _states(make_mlp)[:2]
    big = {k: torch.full_like(v, 1e4) for k, v in states[0].items()}
    small = {k: torch.full_like(v, 1e-4) for k, v in states[0].items()}
    merged = fisher_merge_state_dicts(states, [big, small], normalize=False, min_fisher=0.0)
    for key in states[0]:
        assert torch.allclose(merged[key], states[0][key], atol=1e-6)
    # per parameter: where model B cares more, B's value wins
    mixed = {k: torch.where(torch.arange(v.numel()).reshape(v.shape) % 2 == 0, 1e4, 1e-4) for k, v in states[0].items()}
    flipped = {k: 1e4 + 1e-4 - v for k, v in mixed.items()}
    merged = fisher_merge_state_dicts(states, [mixed, flipped], normalize=False, min_fisher=0.0)
    w = merged["0.weight"].reshape(-1)
    assert torch.allclose(w[0::2], states[0]["0.weight"].reshape(-1)[0::2], atol=1e-6)
    assert torch.allclose(w[1::2], states[1]["0.weight"].reshape(-1)[1::2], atol=1e-6)


def test_excluded_parameters_get_the_plain_average(make_mlp):
    states = _states(make_mlp)[:2]
    big = {k: torch.full_like(v, 1e4) for k, v in states[0].items()}
    small = {k: torch.full_like(v, 1e-4) for k, v in states[0].items()}
    merged = fisher_merge_state_dicts(states, [big, small], normalize=False, exclude_regex=r"^2\.")
    assert torch.allclose(merged["2.weight"], (states[0]["2.weight"] + states[1]["2.weight"]) / 2, atol=1e-6)
    assert torch.allclose(merged["0.weight"], states[0]["0.weight"], atol=1e-5)


def test_normalisation_cancels_a_uniformly_larger_fisher(make_mlp):
    states = _states(make_mlp)[:2]
    ones = {k: torch.ones_like(v) for k, v in states[0].items()}
    thousands = {k: 1000 * torch.ones_like(v) for k, v in states[0].items()}
    merged = fisher_merge_state_dicts(states, [ones, thousands], normalize=True, min_fisher=0.0)
    assert torch.allclose(merged["0.bias"], (states[0]["0.bias"] + states[1]["0.bias"]) / 2, atol=1e-6)


def test_diagonal_fisher_equals_the_mean_squared_per_example_gradient(two_mlps, digits_flat):
    model = two_mlps[0]
    x, y = digits_flat.train.inputs[:10], digits_flat.train.targets[:10]
    progress: list[Progress] = []
    fisher = drive(iter_diagonal_fisher(model, x, y, batch_size=4, label_source="empirical"), on_progress=progress.append)
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(10):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        for k, p in model.named_parameters():
            expected[k] += p.grad.pow(2) / 10
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], rtol=1e-4, atol=1e-7)
    assert [p.done for p in progress] == [4, 8, 10]


def test_sampled_labels_are_reproducible_for_a_seed(two_mlps, digits_flat):
    x, y = digits_flat.train.inputs[:16], digits_flat.train.targets[:16]
    first = drive(iter_diagonal_fisher(two_mlps[0], x, y, label_source="sampled", seed=3))
    again = drive(iter_diagonal_fisher(two_mlps[0], x, y, label_source="sampled", seed=3))
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.fixture()
def mlp_files(tmp_path):
    from merge_studio.core.arch import arch_metadata, build_module

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        module = build_module("zoo:mlp?hidden=16")
        path = tmp_path / f"mlp{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path), metadata=arch_metadata("zoo:mlp?hidden=16"))
        paths.append(path)
    return paths


def test_fisher_method_runs_as_a_job_with_progress_and_a_model_weight_steers_it(mlp_files):
    spec = get_method("fisher")
    assert spec.needs_arch and spec.needs_data and spec.family == "Data-aware"
    cks = [open_checkpoint(p) for p in mlp_files]
    ctx = ModelJobContext(device=torch.device("cpu"), arch=None, data={"source": "digits", "max_examples": 40},
                          model_names=("a", "b"))
    params = FisherParams(num_examples=20, batch_size=8)
    progress: list[Progress] = []
    out = drive(fisher_merge(cks, None, params, [FisherModelParams(weight=1000.0), FisherModelParams(weight=1e-3)], ctx),
                on_progress=progress.append)
    merged = out.state_dicts[0]
    a, b = cks[0].state_dict(), cks[1].state_dict()
    key = "hidden.0.weight"
    assert (merged[key] - a[key]).abs().mean() < 0.05 * (b[key] - a[key]).abs().mean()
    assert set(merged) == set(a)
    fisher_steps = [p for p in progress if p.stage == "fisher"]
    assert fisher_steps[-1].done == fisher_steps[-1].total == 40
    assert out.report["examples_per_model"] == 20


def test_fisher_method_stops_when_cancelled(mlp_files):
    cancel = CancelToken()
    cks = [open_checkpoint(p) for p in mlp_files]
    ctx = ModelJobContext(device=torch.device("cpu"), cancel=cancel, arch="zoo:mlp?hidden=16", data={"max_examples": 40})
    job = fisher_merge(cks, None, FisherParams(num_examples=40, batch_size=4), [FisherModelParams()] * 2, ctx)
    next(job)
    cancel.cancel()
    with pytest.raises(Cancelled):
        list(job)


def test_models_that_cannot_be_vmapped_fall_back_to_a_loop_with_the_same_fisher(two_mlps, digits_flat, monkeypatch):
    from merge_studio.core.methods import fisher as fisher_module

    x, y = digits_flat.train.inputs[:12], digits_flat.train.targets[:12]
    fast = drive(iter_diagonal_fisher(two_mlps[0], x, y, batch_size=5, label_source="argmax"))

    def refuse(*args, **kwargs):
        raise RuntimeError("vmap: in-place operation")

    monkeypatch.setattr(fisher_module, "_per_example_sq_grads_vmap", refuse)
    slow = drive(iter_diagonal_fisher(two_mlps[0], x, y, batch_size=5, label_source="argmax"))
    for k in fast:
        assert torch.allclose(fast[k], slow[k], rtol=1e-4, atol=1e-8)


def test_an_invalid_exclusion_regex_is_rejected_when_the_parameters_are_read():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="regular expression"):
        FisherParams(exclude_regex="head(")
