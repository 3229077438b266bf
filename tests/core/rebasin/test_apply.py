"""The function-preservation check: measured, and an error naming the group when it fails."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from merge_studio.core.rebasin.apply import apply_permutation, verify_function
from merge_studio.core.rebasin.spec import PermutationSpec, spec_from_module
from merge_studio.errors import ArchitectureError
from tests.core.rebasin.models import VGGish, random_perms, randomize_batchnorm


def _without_running_stats(spec: PermutationSpec, group: str) -> PermutationSpec:
    """The seeds' bug: a spec that forgets BatchNorm running statistics in one group."""
    groups = tuple(
        dataclasses.replace(g, members=tuple(m for m in g.members if "running" not in m.tensor)) if g.name == group else g
        for g in spec.groups
    )
    return dataclasses.replace(spec, groups=groups)


def test_forgetting_batchnorm_statistics_is_an_error_that_names_the_group():
    model = randomize_batchnorm(VGGish())
    x = torch.randn(2, 1, 8, 8)
    spec = _without_running_stats(spec_from_module(model, x), "features.4")
    state = model.state_dict()
    perms = random_perms(spec, 1)
    with pytest.raises(ArchitectureError, match="features.4"):
        verify_function(model, state, apply_permutation(spec, state, perms), x, spec=spec, perms=perms)


def test_the_check_also_runs_on_given_data_and_returns_the_difference():
    model = randomize_batchnorm(VGGish())
    x = torch.randn(2, 1, 8, 8)
    spec = spec_from_module(model, x)
    state = model.state_dict()
    permuted = apply_permutation(spec, state, random_perms(spec, 2))
    diff = verify_function(model, state, permuted, data=[torch.randn(5, 1, 8, 8)])
    assert 0.0 <= diff < 1e-10


def test_applying_a_permutation_leaves_the_input_state_untouched():
    model = VGGish()
    spec = spec_from_module(model, torch.randn(2, 1, 8, 8))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    apply_permutation(spec, state, random_perms(spec, 3))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_permutation_of_the_wrong_size_is_refused():
    model = VGGish()
    spec = spec_from_module(model, torch.randn(2, 1, 8, 8))
    with pytest.raises(ArchitectureError, match="features.0"):
        apply_permutation(spec, model.state_dict(), {"features.0": torch.arange(3)})
