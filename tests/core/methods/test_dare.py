"""DARE: random drop with keep probability = density, rescaled, reproducible from the seed."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core.methods.sparsify import _keep_mask

from tests.core.methods.conftest import call_method, make_ctx

N = 100_000


def _dare(method: str, tensors, base, *, seed: int = 0, name: str = "blocks.0.fc.weight", **kw):
    return call_method(method, tensors, base, ctx=make_ctx(name, tuple(base.shape), seed=seed), **kw)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_same_seed_gives_the_same_merge_and_another_seed_a_different_one(method, randn):
    base = randn(64, 32, seed=0)
    tensors = [base + randn(64, 32, seed=s) for s in (1, 2)]
    mps = [{"density": 0.5}, {"density": 0.5}]
    first = _dare(method, tensors, base, seed=7, model_params=mps)
    again = _dare(method, tensors, base, seed=7, model_params=mps)
    other = _dare(method, tensors, base, seed=8, model_params=mps)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_masks_depend_on_the_tensor_name_too(randn):
    base = randn(1000, seed=0)
    tensors = [base + randn(1000, seed=1)]
    a = _dare("dare_linear", tensors, base, name="a.weight", model_params=[{"density": 0.5}])
    b = _dare("dare_linear", tensors, base, name="b.weight", model_params=[{"density": 0.5}])
    assert not torch.equal(a, b)


def test_drop_rate_matches_one_minus_density():
    base = torch.zeros(N)
    model = torch.ones(N)
    out = _dare("dare_linear", [model], base, params={"rescale": False}, model_params=[{"density": 0.3}])
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert (out != 0).float().mean().item() == pytest.approx(0.3, abs=0.01)  # ~7 standard deviations


def test_each_model_gets_its_own_mask():
    base = torch.zeros(N)
    out = _dare(
        "dare_linear",
        [torch.ones(N), torch.full((N,), 2.0)],
        base,
        params={"rescale": False},
        model_params=[{"density": 0.5}, {"density": 0.5}],
    )
    # independent masks give every combination: 0 (both dropped), 1, 2 and 3 (both kept)
    shares = {v: (out == v).float().mean().item() for v in (0.0, 1.0, 2.0, 3.0)}
    assert all(share == pytest.approx(0.25, abs=0.01) for share in shares.values())


def test_rescale_keeps_the_expected_task_vector(randn):
    base = randn(N, seed=0)
    delta = torch.rand(N, generator=torch.Generator().manual_seed(1)) + 0.5
    out = _dare("dare_linear", [base + delta], base, model_params=[{"density": 0.25}])
    change = out - base
    kept = change != 0
    torch.testing.assert_close(change[kept], delta[kept] / 0.25, rtol=1e-5, atol=1e-5)
    assert change.mean().item() == pytest.approx(delta.mean().item(), rel=0.03)


def test_dare_ties_keeps_only_changes_with_the_elected_sign(randn):
    base = randn(2000, seed=0)
    tensors = [base + randn(2000, seed=s) for s in (1, 2, 3)]
    out = _dare("dare_ties", tensors, base, model_params=[{"density": 0.5}] * 3)
    # rebuild the same masks: one generator per call, drawn model by model
    gen = make_ctx("blocks.0.fc.weight", (2000,)).generator()
    dropped = [(t - base) * _keep_mask(2000, 0.5, gen) / 0.5 for t in tensors]
    elected = torch.where(sum(dropped) >= 0, 1.0, -1.0)
    assert ((out - base) * elected >= -1e-6).all()


def test_weights_and_lambda_scale_dare_like_task_arithmetic(randn):
    base = randn(300, seed=0)
    tensors = [base + randn(300, seed=1)]
    plain = _dare("dare_linear", tensors, base, model_params=[{"density": 0.5}])
    scaled = _dare("dare_linear", tensors, base, params={"lambda": 0.5}, model_params=[{"density": 0.5, "weight": 3.0}])
    torch.testing.assert_close(scaled - base, 1.5 * (plain - base), rtol=1e-5, atol=1e-5)


def test_kept_fraction_metric_is_close_to_the_density():
    ctx = make_ctx("x.weight", (N,))
    call_method("dare_linear", [torch.ones(N)], torch.zeros(N), model_params=[{"density": 0.4}], ctx=ctx)
    assert ctx.metrics["task_mass_kept"] / ctx.metrics["task_mass_total"] == pytest.approx(0.4, abs=0.01)
