"""Weight matching: identity for twins, exact recovery of a permuted copy, seeded and cancellable."""

from __future__ import annotations

import pytest
import torch

from merge_studio.core.progress import CancelToken, drive
from merge_studio.core.rebasin.apply import apply_permutation
from merge_studio.core.rebasin.matching import iter_weight_matching
from merge_studio.core.rebasin.similarity import similarity_matrix
from merge_studio.core.rebasin.spec import spec_from_module
from merge_studio.errors import ArchitectureError, Cancelled
from tests.core.rebasin.models import ARCHITECTURES, mlp, random_perms, randomize_batchnorm


def _setup(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    build, make_input = ARCHITECTURES[arch]
    model = randomize_batchnorm(build(), seed)
    return model, spec_from_module(model, make_input())


def test_two_identical_models_give_the_identity_permutation():
    model, spec = _setup("resnet")
    state = model.state_dict()
    result = drive(iter_weight_matching(spec, state, state, device="cpu"))
    assert result.converged and result.sweeps == 1
    assert all(torch.equal(p, torch.arange(len(p))) for p in result.perms.values())
    assert all(f == 0.0 for f in result.moved_fraction().values())


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_an_exact_hidden_unit_permutation_is_matched_back_exactly(arch):
    model, spec = _setup(arch)
    state_a = model.state_dict()
    hidden = random_perms(spec, seed=7)
    state_b = apply_permutation(spec, state_a, hidden)
    result = drive(iter_weight_matching(spec, state_a, state_b, device="cpu", seed=1))
    aligned = apply_permutation(spec, state_b, result.perms)
    for name, tensor in state_a.items():
        assert torch.equal(aligned[name], tensor), name
    assert result.converged


def test_the_objective_never_decreases_and_is_recorded_after_each_sweep():
    a, b = mlp(), mlp()
    spec = spec_from_module(a, torch.randn(2, 8))
    sweeps = []
    result = drive(iter_weight_matching(spec, a.state_dict(), b.state_dict(), device="cpu"), sweeps.append)
    assert len(result.objective) == result.sweeps == len(sweeps)
    values = [result.initial_objective, *result.objective]
    assert all(later >= earlier - 1e-6 for earlier, later in zip(values, values[1:]))
    assert result.objective[-1] > result.initial_objective


def test_the_same_seed_gives_the_same_permutations():
    a, b = mlp(), mlp()
    spec = spec_from_module(a, torch.randn(2, 8))
    one = drive(iter_weight_matching(spec, a.state_dict(), b.state_dict(), seed=3, device="cpu"))
    two = drive(iter_weight_matching(spec, a.state_dict(), b.state_dict(), seed=3, device="cpu"))
    assert all(torch.equal(one.perms[g], two.perms[g]) for g in spec.names)
    assert one.order == two.order


def test_matching_stops_when_cancelled():
    a, b = mlp(), mlp()
    spec = spec_from_module(a, torch.randn(2, 8))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        drive(iter_weight_matching(spec, a.state_dict(), b.state_dict(), cancel=token, device="cpu"))


def test_the_similarity_matrix_is_diagonal_after_reordering_a_permuted_copy():
    model, spec = _setup("mlp")
    state_a = model.state_dict()
    state_b = apply_permutation(spec, state_a, random_perms(spec, 2))
    result = drive(iter_weight_matching(spec, state_a, state_b, device="cpu"))
    sim = similarity_matrix(spec, "0", state_a, state_b, result.perms)
    reordered = sim[:, result.perms["0"]]
    assert torch.equal(reordered.argmax(dim=1), torch.arange(sim.shape[0]))
    assert not torch.equal(sim.argmax(dim=1), torch.arange(sim.shape[0]))


def test_models_of_different_widths_are_refused_with_the_tensor_named():
    a = mlp()
    spec = spec_from_module(a, torch.randn(2, 8))
    state_b = dict(a.state_dict())
    state_b["2.weight"] = torch.zeros(24, 20)
    with pytest.raises(ArchitectureError, match="2.weight in model B"):
        drive(iter_weight_matching(spec, a.state_dict(), state_b, device="cpu"))


def test_batchnorm_statistics_are_permuted_but_do_not_decide_the_match():
    model, spec = _setup("vgg")
    assert {"features.1.running_mean", "features.1.running_var"} <= spec.buffers
    state_a = model.state_dict()
    state_b = dict(state_a)
    state_b["features.1.running_var"] = state_a["features.1.running_var"].flip(0) * 100
    result = drive(iter_weight_matching(spec, state_a, state_b, device="cpu"))
    assert all(torch.equal(p, torch.arange(len(p))) for p in result.perms.values())


def test_restarts_keep_the_best_objective_of_several_seeds():
    a, b = mlp(), mlp()
    spec = spec_from_module(a, torch.randn(2, 8))
    singles = [drive(iter_weight_matching(spec, a.state_dict(), b.state_dict(), seed=s, device="cpu")) for s in range(3)]
    best = drive(iter_weight_matching(spec, a.state_dict(), b.state_dict(), seed=0, restarts=3, device="cpu"))
    assert best.objective[-1] == max(r.objective[-1] for r in singles)
