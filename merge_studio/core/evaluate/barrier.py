"""Comparing several interpolation curves at once and reporting their barriers.

The curves a user can ask for:

``naive``     A → B as stored (interpolated BN statistics kept: the honest baseline)
``bn_reset``  A → B with BatchNorm statistics re-estimated at every point
``aligned``   A → B′ where B′ is B permuted to match A (supplied by the re-basin code)
``repaired``  A → B′ with REPAIR at every point: each hidden unit's mean and spread reset to
              the interpolation of the endpoints' (and BatchNorm statistics re-estimated)
``merged``    A → M → B, the path through a merged model M

``bn_reset`` is left out for models without BatchNorm (it would repeat ``naive``).
``aligned`` and ``merged`` re-estimate BN statistics when ``reset_bn`` says so
(``auto``: when the model has BatchNorm).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint, barrier_height
from merge_studio.core.evaluate.data import EvalData
from merge_studio.core.evaluate.interpolate import ResetBN, StateDict, iter_path_interpolation, path_lambdas, resolve_reset_bn
from merge_studio.core.evaluate.merged_path import MergedAnchor
from merge_studio.core.evaluate.loop import has_batchnorm
from merge_studio.core.progress import CancelToken, Progress
from merge_studio.errors import MergeStudioError, OutputError

from merge_studio.core.evaluate.curve_kinds import CURVE_KINDS, CURVE_LABELS  # noqa: E402 - re-exported


@dataclass(frozen=True)
class BarrierReport:
    """All curves of one comparison, with what they were computed on."""

    curves: tuple[BarrierCurve, ...]
    task: str = "classification"
    data: str = ""
    steps: int = 25
    splits: tuple[str, ...] = ("train", "test")
    model_names: tuple[str, ...] = ("A", "B")
    extra: dict[str, str] = field(default_factory=dict)

    def curve(self, label: str) -> BarrierCurve:
        for c in self.curves:
            if c.label == label:
                return c
        raise KeyError(label)

    def summary_rows(self) -> list[dict[str, object]]:
        """One row per curve and split: the numbers the table and ``--json`` show."""
        rows = []
        for c in self.curves:
            for split in c.splits:
                loss = c.losses[split]
                acc = c.accuracies.get(split)
                rows.append({
                    "curve": c.label,
                    "split": split,
                    "loss_barrier": c.loss_barrier[split],
                    "accuracy_barrier": c.accuracy_barrier.get(split),
                    "loss_at_A": float(loss[0]),
                    "loss_at_B": float(loss[-1]),
                    "loss_max": float(loss.max()),
                    "accuracy_at_A": None if acc is None else float(acc[0]),
                    "accuracy_at_B": None if acc is None else float(acc[-1]),
                    "accuracy_min": None if acc is None else float(acc.min()),
                    "reset_bn": c.reset_bn,
                })
        return rows

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "data": self.data,
            "steps": self.steps,
            "splits": list(self.splits),
            "models": list(self.model_names),
            **({"extra": dict(self.extra)} if self.extra else {}),
            "summary": self.summary_rows(),
            "curves": [c.to_json() for c in self.curves],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(_finite(self.to_dict()), indent=indent, allow_nan=False)

    def to_csv(self) -> str:
        """Long format: one row per curve, split and λ."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["curve", "split", "lambda", "loss", "accuracy", "reset_bn"])
        for c in self.curves:
            for split in c.splits:
                accs = c.accuracies.get(split)
                for i, lam in enumerate(c.lambdas):
                    acc = "" if accs is None else f"{accs[i]:.8g}"
                    writer.writerow([c.label, split, f"{lam:.6g}", f"{c.losses[split][i]:.8g}", acc, int(c.reset_bn)])
        return out.getvalue()

    def save(self, *, json_path: str | Path | None = None, csv_path: str | Path | None = None) -> None:
        """Write the JSON and/or CSV next to each other (temp file, then rename)."""
        for path, text in ((json_path, self.to_json() if json_path else ""), (csv_path, self.to_csv() if csv_path else "")):
            if path is None:
                continue
            target = Path(path)
            tmp = target.with_name(target.name + ".tmp")
            try:
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(target)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise OutputError(f"cannot write {target}: {exc.strerror or exc}", hint="choose a folder you can write to") from exc


def _finite(value: object) -> object:
    """NaN and infinity become ``null`` so the JSON stays valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def default_curves(module: nn.Module, *, aligned: bool, merged: bool, reset_bn: ResetBN = "auto") -> list[str]:
    """The curves worth drawing for this model and these inputs."""
    kinds = ["naive"]
    if has_batchnorm(module) and reset_bn not in ("off", False):
        kinds.append("bn_reset")
    if aligned:
        kinds += ["aligned", "repaired"]
    if merged:
        kinds.append("merged")
    return kinds


def iter_barrier_comparison(
    module: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    data: EvalData,
    *,
    curves: Sequence[str] | None = None,
    aligned_b: StateDict | None = None,
    merged: StateDict | None = None,
    merged_anchor: MergedAnchor | None = None,
    merged_b: StateDict | None = None,
    steps: int = 25,
    splits: Sequence[str] = ("train", "test"),
    reset_bn: ResetBN = "auto",
    model_names: tuple[str, str] = ("A", "B"),
    save_dir: str | Path | None = None,
    device: torch.device | str = "auto",
    cancel: CancelToken | None = None,
) -> Generator[Progress | BarrierPoint, None, BarrierReport]:
    """Run several interpolation curves one after another and return them together.

    Yields every :class:`BarrierPoint` as it finishes and a :class:`Progress`
    counted over all curves. ``save_dir`` keeps each interpolated model, in a
    sub-folder per curve. ``merged_anchor`` places the merged model on the path
    (its λ, from the merge's own coefficients) and ``merged_b`` is the B it was
    made with (weight matching: B aligned to A); by default M sits at λ = 0.5 and
    the path ends at B.
    """
    kinds = list(curves) if curves is not None else default_curves(
        module, aligned=aligned_b is not None, merged=merged is not None, reset_bn=reset_bn)
    if "bn_reset" in kinds and not has_batchnorm(module):
        kinds.remove("bn_reset")  # without BatchNorm it would repeat the naive curve
    if not kinds:
        raise MergeStudioError("no curve to draw", hint=f"choose at least one of {', '.join(CURVE_KINDS)}")
    unknown = [k for k in kinds if k not in CURVE_KINDS]
    if unknown:
        raise MergeStudioError(f"unknown curve {unknown[0]!r}", hint=f"choose from {', '.join(CURVE_KINDS)}")
    for kind in ("aligned", "repaired"):
        if kind in kinds and aligned_b is None:
            raise MergeStudioError(f"the {CURVE_LABELS[kind]} curve needs B aligned to A",
                                   hint="run an alignment first, or leave that curve out")
    if "merged" in kinds and merged is None:
        raise MergeStudioError("the path through a merged model needs the merged model", hint="merge first, or leave that curve out")
    a_name, b_name = model_names
    anchor = merged_anchor or MergedAnchor()
    Correction = Callable[[nn.Module, float], None]
    plans: list[tuple[str, list[StateDict], tuple[str, ...], bool | Correction, tuple[float, ...] | None]] = []
    for kind in kinds:
        if kind == "naive":
            plans.append((kind, [state_a, state_b], (a_name, b_name), False, None))
        elif kind == "bn_reset":
            plans.append((kind, [state_a, state_b], (a_name, b_name), True, None))
        elif kind == "aligned":
            assert aligned_b is not None
            plans.append((kind, [state_a, aligned_b], (a_name, f"{b_name}′"), resolve_reset_bn(reset_bn, module), None))
        elif kind == "repaired":
            assert aligned_b is not None
            repairer = _repairer(module, state_a, aligned_b, data, device)
            plans.append((kind, [state_a, aligned_b], (a_name, f"{b_name}′"), repairer, None))
        else:
            assert merged is not None
            end, end_name = (merged_b, f"{b_name}′") if merged_b is not None else (state_b, b_name)
            plans.append((kind, [state_a, merged, end], (a_name, "merged", end_name), resolve_reset_bn(reset_bn, module),
                          (0.0, anchor.position, 1.0)))
    counts = [len(path_lambdas(steps, positions)) for *_, positions in plans]
    total = sum(counts)
    results: list[BarrierCurve] = []
    for n, (kind, states, names, do_reset, positions) in enumerate(plans):
        label = CURVE_LABELS[kind]
        correct = do_reset if callable(do_reset) else None
        job = iter_path_interpolation(
            module, states, data, steps=steps, splits=splits, reset_bn=bool(do_reset) and correct is None, label=label,
            anchor_names=names, save_dir=None if save_dir is None else Path(save_dir) / kind,
            device=device, positions=positions, anchor_note=anchor.description if positions else "", cancel=cancel,
            correct=correct,
        )
        try:
            while True:
                item = next(job)
                if isinstance(item, Progress):
                    yield Progress("barrier", sum(counts[:n]) + item.done, total, current=item.current, unit="points")
                else:
                    yield item
        except StopIteration as stop:
            results.append(stop.value)
        finally:
            job.close()
    return BarrierReport(
        curves=tuple(results), task=data.task, data=data.describe(), steps=steps, splits=tuple(splits),
        model_names=(a_name, b_name),
    )


def _repairer(module: nn.Module, state_a: StateDict, aligned_b: StateDict, data: EvalData, device: torch.device | str) -> Callable[[nn.Module, float], None]:
    """REPAIR between A and B′, measured once on the training split (used at every λ)."""
    from merge_studio.core.device import resolve_device
    from merge_studio.core.rebasin.repair import Repairer, calibration_batches
    from merge_studio.core.rebasin.spec import spec_from_module

    dev = resolve_device(device)
    spec = spec_from_module(module, data.train.inputs[:2])
    repairer = Repairer(module, spec, [state_a, aligned_b], calibration_batches(data.train.inputs), device=dev)
    return repairer.interpolation


__all__ = ["BarrierReport", "CURVE_KINDS", "CURVE_LABELS", "barrier_height", "default_curves", "iter_barrier_comparison"]
