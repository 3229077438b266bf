"""Similarity matrices of an alignment, for the inspection view and the plots.

``sim[i, j]`` is the summed inner product of A's unit ``i`` and B's unit ``j`` over
every weight the group reorders, with every other group permuted as found: the
very matrix weight matching solved its assignment on.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from merge_studio.core.device import resolve_device
from merge_studio.core.rebasin.matching import _float_state, _Problem
from merge_studio.core.rebasin.spec import PermutationSpec


def similarity_matrix(
    spec: PermutationSpec,
    group: str,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    perms: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The group's similarity matrix (rows: A's units, columns: B's units in B's own order).

    Every other group is permuted as in ``perms``; ``sim[:, perms[group]]`` shows the
    matched units on the diagonal.
    """
    dev = resolve_device(device)
    a = _float_state(spec, state_a, "A", dev)
    b = _float_state(spec, state_b, "B", dev)
    full = {g.name: torch.as_tensor(perms.get(g.name, torch.arange(g.size))).to(dev) for g in spec.groups}
    return _Problem(spec, a, b, full).cost(spec.group(group)).cpu()


class SimilarityProvider:
    """Similarity matrices of one alignment, computed on first request and kept (for the inspection view)."""

    def __init__(
        self,
        spec: PermutationSpec,
        state_a: Mapping[str, torch.Tensor],
        state_b: Mapping[str, torch.Tensor],
        perms: Mapping[str, torch.Tensor],
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        dev = resolve_device(device)
        a = _float_state(spec, state_a, "A", dev)
        b = _float_state(spec, state_b, "B", dev)
        full = {g.name: torch.as_tensor(perms.get(g.name, torch.arange(g.size))).to(dev) for g in spec.groups}
        self._problem = _Problem(spec, a, b, full)
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, group: str) -> torch.Tensor | None:
        if group not in self._problem.spec.names:
            return None
        if group not in self._cache:
            self._cache[group] = self._problem.cost(self._problem.spec.group(group)).cpu()
        return self._cache[group]
