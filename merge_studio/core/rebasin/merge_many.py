"""MergeMany (Ainsworth et al. 2023, Algorithm 3): align N models to their running average.

In turns (seeded random order), each model is weight-matched to the average of
all the *other* aligned models; rounds repeat until no permutation changes, then
the aligned models are averaged. With ``matching="activation"`` each model is
instead matched to the others' averaged activations on the data. BatchNorm
statistics of the average describe no real model, so callers with data should
re-estimate them (or use REPAIR) afterwards.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.rebasin.apply import apply_permutation
from merge_studio.core.rebasin.matching import iter_weight_matching, moved_fraction
from merge_studio.core.rebasin.spec import PermutationSpec
from merge_studio.errors import MethodError

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class MergeManyResult:
    """The average of the aligned models and how each model was permuted."""

    merged: dict[str, torch.Tensor]
    aligned: list[dict[str, torch.Tensor]]
    perms: list[dict[str, torch.Tensor]]
    rounds: int
    converged: bool
    changes_per_round: tuple[int, ...]

    def moved_fraction(self) -> list[dict[str, float]]:
        return [{g: moved_fraction(p) for g, p in perms.items()} for perms in self.perms]


def average_states(states: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Element-wise mean of float tensors; other tensors (counters) come from the first model."""
    out: dict[str, torch.Tensor] = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            acc = torch.zeros_like(first, dtype=torch.float32)
            for s in states:
                acc += s[name].float()
            out[name] = (acc / len(states)).to(first.dtype)
        else:
            out[name] = first.clone()
    return out


def iter_merge_many(
    spec: PermutationSpec,
    states: Sequence[StateDict],
    *,
    max_iterations: int = 100,
    max_sweeps: int = 100,
    seed: int = 0,
    device: str | torch.device = "auto",
    cancel: CancelToken | None = None,
    matching: str = "weight",
    analysis: Any = None,
    batches: Sequence[Any] | None = None,
) -> Generator[Progress, None, MergeManyResult]:
    """Align every model to the others' average in turns, then average them.

    ``matching="activation"`` needs ``analysis`` (from :func:`analyse_module`) and ``batches``.
    """
    n = len(states)
    if n < 2:
        raise MethodError(f"MergeMany needs at least two models, got {n}")
    if matching == "activation" and (analysis is None or not batches):
        raise MethodError("MergeMany by activations needs data to run the models on", hint="choose evaluation data")
    member_tensors = list(spec.members_by_tensor())
    perms = [{g.name: torch.arange(g.size) for g in spec.groups} for _ in range(n)]
    aligned = [dict(s) for s in states]
    rng = np.random.default_rng(seed)
    changes: list[int] = []
    converged = False
    rounds = 0
    while rounds < max_iterations:
        changed = 0
        for k, i in enumerate(rng.permutation(n)):
            check_cancel(cancel)
            if matching == "activation":
                from merge_studio.core.rebasin.activation import iter_activation_matching

                others_full = [aligned[j] for j in range(n) if j != i]
                result = yield from _quiet(
                    iter_activation_matching(analysis, others_full, states[i], batches, seed=seed, device=device, cancel=cancel)
                )
            else:
                others = [{t: aligned[j][t] for t in member_tensors} for j in range(n) if j != i]
                target = average_states(others)
                result = yield from _quiet(
                    iter_weight_matching(spec, target, states[i], max_sweeps=max_sweeps, seed=seed + rounds * n + k,
                                         device=device, cancel=cancel, init=perms[i])
                )
            if any(not torch.equal(result.perms[g], perms[i][g]) for g in perms[i]):
                changed += 1
            perms[i] = result.perms
            aligned[i] = apply_permutation(spec, states[i], perms[i])
            yield Progress("merge many", rounds * n + k + 1, None, current=f"model {i + 1}", unit="alignments",
                           message=f"round {rounds + 1}")
        rounds += 1
        changes.append(changed)
        if changed == 0:
            converged = True
            break
    return MergeManyResult(average_states(aligned), aligned, perms, rounds, converged, tuple(changes))


def _quiet(job: Generator[Progress, None, object]) -> Generator[Progress, None, object]:
    """Run a nested job without passing its progress on (the caller reports per alignment)."""
    try:
        while True:
            next(job)
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()
    yield  # pragma: no cover - makes this a generator
