"""Align model B to model A from end to end: spec, matching, permutation, proof, report.

This is what ``merge-studio align``, the ``weight_matching`` method, the GUI and the
benchmark call; each step is a plain function in the neighbouring modules.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.rebasin.apply import apply_permutation, verify_function
from merge_studio.core.rebasin.matching import MatchingResult, iter_weight_matching
from merge_studio.core.rebasin.report import build_report
from merge_studio.core.rebasin.spec import PermutationSpec, spec_from_module
from merge_studio.errors import ArchitectureError

DEFAULT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AlignResult:
    """B aligned to A, with the spec and matching behind it and the JSON report."""

    aligned: dict[str, torch.Tensor]
    spec: PermutationSpec
    matching: MatchingResult
    max_output_difference: float
    report: dict[str, Any]


def iter_align(
    module: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    example_input: Any,
    *,
    arch: str | None = None,
    max_sweeps: int = 100,
    seed: int = 0,
    restarts: int = 0,
    device: str | torch.device = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    data: Sequence[Any] | None = None,
    models: tuple[str, str] = ("A", "B"),
    spec: PermutationSpec | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, AlignResult]:
    """Find B's permutation, apply it, and check B still computes the same outputs.

    ``module`` is any instance of the architecture (its weights are not used).
    A difference above ``tolerance`` raises an error naming the group at fault.
    """
    yield Progress("align", 0, None, message="tracing the model for its permutation groups")
    if spec is None:
        spec = spec_from_module(module, example_input)
    _check_against_module(module, state_a, "model A")
    _check_against_module(module, state_b, "model B")
    check_cancel(cancel)
    matching = yield from iter_weight_matching(
        spec, state_a, state_b, max_sweeps=max_sweeps, seed=seed, restarts=restarts, device=device, cancel=cancel
    )
    check_cancel(cancel)
    yield Progress("align", 0, None, message="checking that the permuted model computes the same function")
    aligned = apply_permutation(spec, state_b, matching.perms)
    diff = verify_function(module, state_b, aligned, example_input, data=data, tol=tolerance, spec=spec, perms=matching.perms, seed=seed)
    report = build_report(
        spec, matching, arch=arch, models=models, max_output_difference=diff, tolerance=tolerance
    )
    return AlignResult(aligned, spec, matching, diff, report)


def module_for_alignment(arch: str) -> nn.Module:
    """The module to trace for ``arch``: a ``.pt2`` program's flat ATen graph, else the built model.

    (The unflattened module views use for drawing hide the graph behind submodule calls.)
    """
    from merge_studio.core.arch import build_module, parse_arch

    parsed = parse_arch(arch)
    if parsed.kind == "pt2":
        from merge_studio.core.arch.export import load_program

        return load_program(parsed.target).module()
    return build_module(parsed)


def _check_against_module(module: nn.Module, state: Mapping[str, torch.Tensor], which: str) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ArchitectureError(
            f"{which} lacks {len(missing)} tensor(s) the architecture needs, e.g. {missing[0]}",
            hint="check that the architecture matches the checkpoint",
        )
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ArchitectureError(
                f"{name} in {which} has shape {tuple(state[name].shape)}, the architecture expects {shape}",
                hint="check the architecture and its width arguments (e.g. zoo:resnet20?width=2)",
            )


def interpolate_states(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 − α)·A + α·B for float tensors; other tensors (counters) come from A, or B at α = 1."""
    out: dict[str, torch.Tensor] = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.is_floating_point():
            out[name] = torch.lerp(a.float(), b.float(), float(alpha)).to(a.dtype)
        else:
            out[name] = (b if alpha >= 1.0 else a).clone()
    return out
