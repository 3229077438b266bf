"""Align model B to model A from end to end: spec, matching, permutation, proof, report.

This is what ``merge-studio align``, the ``weight_matching`` and ``activation_matching``
methods, the GUI and the benchmark call; each step is a plain function in the
neighbouring modules. ``method`` chooses how the permutations are found: from the
weights (``"weight"``) or from activations on data (``"activation"``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.rebasin.apply import apply_permutation, verify_function
from merge_studio.core.rebasin.matching import MatchingResult, iter_weight_matching
from merge_studio.core.rebasin.report import build_report
from merge_studio.core.rebasin.spec import ModuleAnalysis, PermutationSpec, analyse_module
from merge_studio.errors import ArchitectureError, MethodError

DEFAULT_TOLERANCE = 1e-6
MatchMethod = Literal["weight", "activation"]
METHOD_NAMES = {"weight": "weight_matching", "activation": "activation_matching"}


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
    method: MatchMethod = "weight",
    batches: Sequence[Any] | None = None,
    analysis: ModuleAnalysis | None = None,
) -> Generator[Progress, None, AlignResult]:
    """Find B's permutation, apply it, and check B still computes the same outputs.

    ``module`` is any instance of the architecture (its weights are not used).
    ``method="activation"`` needs ``batches``: model inputs both models are run on.
    A difference above ``tolerance`` raises an error naming the group at fault.
    """
    from merge_studio.core.rebasin.trace import primary_input

    example_input = primary_input(example_input)
    if method not in METHOD_NAMES:
        raise MethodError(f"unknown alignment method {method!r}", hint="choose 'weight' or 'activation'")
    if method == "activation" and not batches:
        raise MethodError("activation matching needs data to run both models on",
                          hint="give evaluation data (e.g. --data digits), or align by weights")
    yield Progress("align", 0, None, message="tracing the model for its permutation groups")
    if analysis is None and (spec is None or method == "activation"):
        analysis = analyse_module(module, example_input)
    if spec is None:
        assert analysis is not None
        spec = analysis.spec
    _check_against_module(module, state_a, "model A")
    _check_against_module(module, state_b, "model B")
    check_cancel(cancel)
    if method == "activation":
        from merge_studio.core.rebasin.activation import iter_activation_matching

        assert analysis is not None and batches is not None
        matching = yield from iter_activation_matching(analysis, state_a, state_b, batches, seed=seed, device=device, cancel=cancel)
    else:
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
