"""Find the alignment that works for these two models: weight matching, activation matching, or the better.

Weight matching sees only weights and works when training pulled them far from
their random start (weight decay); activation matching needs data but also works
when it did not (measured on BatchNorm ResNets trained with Adam and no decay:
weight matching no better than the naive path, activation matching 19% of it).
``auto`` runs both and keeps the one whose midpoint ``(A + π(B)) / 2`` has the lower
loss on the data, after REPAIR (or BatchNorm re-estimation): that is the model a
merge at α = 0.5 would produce. Both permutations are kept in the report, with how
much they agree group by group, so users see which to trust.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import nn

from merge_studio.core.evaluate.data import EvalData, TensorSplit
from merge_studio.core.evaluate.loop import evaluate, has_batchnorm, reset_batchnorm
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.rebasin.align import DEFAULT_TOLERANCE, AlignResult, interpolate_states, iter_align
from merge_studio.core.rebasin.repair import Repairer, calibration_batches
from merge_studio.core.rebasin.spec import analyse_module

Choice = Literal["auto", "weight", "activation"]
CHOICES: tuple[str, ...] = ("auto", "weight", "activation")
DEFAULT_EXAMPLES = 2000  # all of the digits training split; more examples, steadier correlations


def agreement(perms_a: Mapping[str, torch.Tensor], perms_b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per group, the share of units two alignments send to the same unit of B."""
    out = {}
    for name, p in perms_a.items():
        q = perms_b.get(name)
        if q is not None and len(p):
            out[name] = float((torch.as_tensor(p) == torch.as_tensor(q)).float().mean())
    return out


def midpoint_loss(
    module: nn.Module,
    spec: Any,
    state_a: Mapping[str, torch.Tensor],
    aligned_b: Mapping[str, torch.Tensor],
    split: TensorSplit,
    task: str,
    *,
    repair: bool,
    device: torch.device | str = "cpu",
) -> float:
    """Loss of ``(A + B′) / 2`` on ``split``, after REPAIR (or BatchNorm re-estimation) on the same inputs."""
    from merge_studio.core.device import resolve_device

    device = resolve_device(device)
    merged = interpolate_states(state_a, aligned_b, 0.5)
    batches = calibration_batches(split.inputs)
    work = copy.deepcopy(module)
    if repair:
        merged = Repairer(module, spec, [state_a, aligned_b], batches, device=device).repaired_state(module, merged, (0.5, 0.5))
        work.load_state_dict(merged)
    else:
        work.load_state_dict(merged)
        if has_batchnorm(work):
            reset_batchnorm(work, split, device=device)
    return evaluate(work.to(device), split, task, device=device).loss


def iter_chosen_alignment(
    module: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    example_input: Any,
    data: EvalData | None,
    *,
    choose: Choice = "auto",
    repair: bool = True,
    examples: int = DEFAULT_EXAMPLES,
    arch: str | None = None,
    max_sweeps: int = 100,
    seed: int = 0,
    restarts: int = 0,
    device: str | torch.device = "cpu",
    tolerance: float = DEFAULT_TOLERANCE,
    models: tuple[str, str] = ("A", "B"),
    cancel: CancelToken | None = None,
    compare: bool = True,
) -> Generator[Progress, None, AlignResult]:
    """Align B to A by both methods (when there is data), keep the chosen or better one, report both.

    Without data only weight matching can run (``choose`` must not be ``activation``).
    The result's report says which method was used, each one's midpoint loss
    (with ``auto``) and, per group, how much the two agree. ``compare=False`` runs
    only the chosen method (``weight`` or ``activation``); data then only adds real
    inputs to the function check.
    """
    from merge_studio.core.rebasin.trace import primary_input
    from merge_studio.errors import MethodError

    example_input = primary_input(example_input)
    note = None
    if data is not None:
        problem = data_problem(module, data)
        if problem is not None:
            if choose == "activation":
                raise MethodError(f"activation matching cannot run the model on this data: {problem}",
                                  hint="choose data the model accepts (the same inputs it was trained on)")
            data, note = None, f"the data does not fit the model ({problem}): weight matching only"
    if data is None and choose != "weight":
        if choose == "activation":
            raise MethodError("activation matching needs data to run both models on", hint="choose evaluation data")
        choose = "weight"
    yield Progress("align", 0, None, message="tracing the model for its permutation groups")
    analysis = analyse_module(module, example_input)
    common = dict(arch=arch, max_sweeps=max_sweeps, seed=seed, restarts=restarts, device=device, tolerance=tolerance,
                  models=models, cancel=cancel, analysis=analysis)
    split = data.train.head(examples) if data is not None else None
    results: dict[str, AlignResult] = {}
    methods = ["weight", "activation"] if data is not None else ["weight"]
    if not compare and choose != "auto":
        methods = [choose]
    for method in methods:
        check_cancel(cancel)
        batches = calibration_batches(split.inputs) if split is not None else None
        results[method] = yield from iter_align(module, state_a, state_b, example_input, method=method, batches=batches,
                                               data=[split.inputs[:64]] if split is not None else None, **common)
    losses: dict[str, float] = {}
    if choose == "auto" and len(results) > 1:
        assert split is not None and data is not None
        for method, result in results.items():
            check_cancel(cancel)
            yield Progress("align", 0, None, message=f"evaluating the midpoint after {method} matching")
            losses[method] = midpoint_loss(module, analysis.spec, state_a, result.aligned, split, data.task, repair=repair, device=device)
        chosen = min(losses, key=losses.__getitem__)
    else:
        chosen = choose if choose in results else next(iter(results))
    result = _with_comparison(results, chosen, losses, choose, split)
    return replace(result, report={**result.report, "note": note}) if note else result


def data_problem(module: nn.Module, data: EvalData) -> str | None:
    """Why the model cannot run on the data (``None`` when a two-example batch goes through)."""
    work = copy.deepcopy(module).eval()
    try:
        with torch.no_grad():
            work(data.train.inputs[:2])
    except Exception as exc:  # noqa: BLE001 - any failure means the data does not fit
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
    return None


def _with_comparison(
    results: Mapping[str, AlignResult], chosen: str, losses: Mapping[str, float], choose: str, split: TensorSplit | None
) -> AlignResult:
    winner = results[chosen]
    report = dict(winner.report)
    report["choice"] = choose
    report["candidates"] = {
        method: {
            "objective": r.matching.objective[-1] if r.matching.objective else None,
            "seconds": round(r.matching.seconds, 4),
            **({"midpoint_loss": losses[method]} if method in losses else {}),
        }
        for method, r in results.items()
    }
    if losses:
        report["selected_on"] = f"{len(split) if split is not None else 0} training examples, loss at α = 0.5"
    if len(results) > 1:
        agree = agreement(results["weight"].matching.perms, results["activation"].matching.perms)
        report["agreement"] = agree
        report["groups"] = [{**g, "agreement": agree.get(g["name"])} for g in report["groups"]]
        report["alternative_perms"] = {
            method: {g: [int(i) for i in p.tolist()] for g, p in r.matching.perms.items()}
            for method, r in results.items() if method != chosen
        }
    return replace(winner, report=report)


__all__ = ["CHOICES", "Choice", "DEFAULT_EXAMPLES", "agreement", "iter_chosen_alignment", "midpoint_loss"]
