"""Reorder a state dict by a set of permutations, and prove the function did not change.

A permutation ``perm`` of a group means: the aligned model's unit ``i`` is the
original model's unit ``perm[i]``, on every member axis (weights, biases, norm
parameters and BatchNorm running statistics alike).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from merge_studio.core.rebasin.axes import Member
from merge_studio.core.rebasin.spec import PermutationSpec, set_mode
from merge_studio.errors import ArchitectureError


def member_index(member: Member, perm: torch.Tensor) -> torch.Tensor:
    """Element indices along the member's axis range for a unit permutation (blocks kept whole).

    A key/value member of a grouped-query attention group (``repeat > 1``) follows the
    permutation the group's query heads induce on its fewer heads.
    """
    perm = perm.to(torch.long)
    if member.repeat > 1:
        from merge_studio.core.rebasin.heads import kv_permutation

        perm = kv_permutation(perm, member.heads, member.repeat)
    if member.block == 1:
        return perm
    inner = torch.arange(member.block, device=perm.device)
    return (perm[:, None] * member.block + inner[None, :]).reshape(-1)


def permute_member(tensor: torch.Tensor, member: Member, perm: torch.Tensor) -> torch.Tensor:
    """``tensor`` with the member's range reordered (a new tensor; the input is left alone)."""
    index = member_index(member, perm.to(tensor.device))
    if member.offset == 0 and member.length == tensor.shape[member.axis]:
        return tensor.index_select(member.axis, index)
    out = tensor.clone()
    part = tensor.narrow(member.axis, member.offset, member.length)
    out.narrow(member.axis, member.offset, member.length).copy_(part.index_select(member.axis, index))
    return out


def check_state(spec: PermutationSpec, state: Mapping[str, torch.Tensor], which: str = "the checkpoint") -> None:
    """Raise :class:`ArchitectureError` naming the first tensor that does not fit the spec."""
    for group in spec.groups:
        for m in group.members:
            t = state.get(m.tensor)
            if t is None:
                raise ArchitectureError(
                    f"{which} has no tensor {m.tensor} (in permutation group {group.name})",
                    hint="check that the architecture matches the checkpoint",
                )
            if m.axis >= t.dim() or m.offset + m.length > t.shape[m.axis]:
                raise ArchitectureError(
                    f"{m.tensor} in {which} has shape {tuple(t.shape)}, which does not fit the architecture "
                    f"(group {group.name} expects {m.offset + m.length} along axis {m.axis})",
                    hint="check the architecture and its width arguments (e.g. zoo:resnet20?width=2)",
                )


def apply_permutation(
    spec: PermutationSpec,
    state_dict: Mapping[str, torch.Tensor],
    perms: Mapping[str, torch.Tensor],
    *,
    groups: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """A new state dict with every member of the chosen groups (all by default) reordered.

    Tensors no group touches are passed through unchanged (same objects).
    """
    chosen = set(spec.names if groups is None else groups)
    out = dict(state_dict)
    for group in spec.groups:
        if group.name not in chosen or group.name not in perms:
            continue
        perm = torch.as_tensor(perms[group.name])
        if perm.numel() != group.size:
            raise ArchitectureError(
                f"permutation for group {group.name} has {perm.numel()} entries, the group has {group.size} units",
                hint="the permutation was found for a different model; align again",
            )
        for member in group.members:
            if member.tensor not in out:
                raise ArchitectureError(
                    f"tensor {member.tensor} (in permutation group {group.name}) is missing from the checkpoint",
                    hint="check that the architecture matches the checkpoint",
                )
            out[member.tensor] = permute_member(out[member.tensor], member, perm)
    return out


def identity_perms(spec: PermutationSpec) -> dict[str, torch.Tensor]:
    return {g.name: torch.arange(g.size) for g in spec.groups}


def _random_inputs(example: Any, n: int, seed: int) -> list[Any]:
    gen = torch.Generator().manual_seed(seed)

    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point():
                return torch.randn(x.shape, generator=gen, dtype=x.dtype)
            high = int(x.max().item()) + 1 if x.numel() else 1
            return torch.randint(0, max(high, 1), x.shape, generator=gen, dtype=x.dtype)
        if isinstance(x, (tuple, list)):
            return type(x)(one(v) for v in x)
        return x

    return [example] + [one(example) for _ in range(n)]


def _flat_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _flat_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _flat_outputs(v)]
    return []


def _as_args(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _to_double(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_to_double(v) for v in x)
    return x


class _Runner:
    """A float64, eval-mode copy of the model on the CPU, so round-off cannot hide a bug."""

    def __init__(self, module: nn.Module, inputs: Sequence[Any]) -> None:
        self.model = copy.deepcopy(module).to("cpu").double()
        set_mode(self.model, False)
        inputs = [_to_double(x) for x in inputs]
        # exported programs may guard their batch size: keep their inputs apart
        self.inputs = inputs if isinstance(module, torch.fx.GraphModule) else _batched(inputs)

    @torch.no_grad()
    def outputs(self, state: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        self.model.load_state_dict({k: v.detach().to("cpu") for k, v in state.items()}, strict=True)
        return [t for x in self.inputs for t in _flat_outputs(self.model(*_as_args(x)))]


def _batched(inputs: list[Any]) -> list[Any]:
    """One batch instead of several when the inputs are tensors of one shape (eval mode: same outputs)."""
    if len(inputs) > 1 and all(isinstance(x, torch.Tensor) and x.dim() > 0 for x in inputs):
        first = inputs[0]
        if all(x.shape[1:] == first.shape[1:] and x.dtype == first.dtype for x in inputs):
            return [torch.cat(inputs, dim=0)]
    return inputs


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    diff = max((float((x - y).abs().max()) for x, y in zip(a, b, strict=True) if x.numel()), default=0.0)
    scale = max((float(x.abs().max()) for x in a if x.numel() and x.is_floating_point()), default=0.0)
    return diff, scale


def verify_function(
    module: nn.Module,
    state_b: Mapping[str, torch.Tensor],
    state_b_perm: Mapping[str, torch.Tensor],
    example_input: Any = None,
    *,
    data: Sequence[Any] | None = None,
    tol: float = 1e-6,
    spec: PermutationSpec | None = None,
    perms: Mapping[str, torch.Tensor] | None = None,
    n_random: int = 3,
    seed: int = 0,
) -> float:
    """Largest output difference between B and permuted B on random inputs (and ``data``).

    The check runs in float64; ``tol`` is relative to the largest output value (at
    least 1). Above it, the groups are applied one at a time to find the one that
    changes the function, and an :class:`ArchitectureError` names it.
    """
    inputs: list[Any] = []
    if example_input is not None:
        inputs += _random_inputs(example_input, n_random, seed)
    inputs += list(data or [])
    if not inputs:
        raise ArchitectureError("no input to check the permuted model on", hint="give an example input or data")
    runner = _Runner(module, inputs)
    reference = runner.outputs(state_b)
    diff, scale = _max_diff(reference, runner.outputs(state_b_perm))
    limit = tol * max(1.0, scale)
    if diff <= limit:
        return diff
    culprit = _find_culprit(runner, reference, state_b, spec, perms, limit) if spec is not None and perms else None
    where = f"permutation group {culprit!r}" if culprit else "the permutation"
    raise ArchitectureError(
        f"{where} changes the model's outputs (max difference {diff:.3g}, tolerance {limit:.3g})",
        hint="this is a bug in the permutation spec for this architecture; please report it with the model",
    )


def _find_culprit(
    runner: _Runner,
    reference: list[torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    perms: Mapping[str, torch.Tensor],
    limit: float,
) -> str | None:
    done: set[str] = set()
    for group in spec.groups:
        if group.name in done:
            continue
        unit = [group.name] + ([group.head_partner] if group.head_partner else [])
        done.update(unit)
        state = apply_permutation(spec, state_b, perms, groups=unit)
        diff, _ = _max_diff(reference, runner.outputs(state))
        if diff > limit:
            return " + ".join(unit)
    return None
