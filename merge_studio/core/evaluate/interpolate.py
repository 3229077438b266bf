"""Sweeping θ(λ) along a straight line (or a chain of lines) between models.

One module is allocated once; for each λ its parameters and buffers are
overwritten in place (``_foreach_copy_`` then ``_foreach_lerp_``) from endpoint
tensors kept on the device, so a point costs a few vector ops plus its forward
passes. Each evaluated point is yielded as a :class:`BarrierPoint` as soon as it
is known, so plots fill in live.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from merge_studio.core.device import resolve_device
from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint
from merge_studio.core.evaluate.data import EvalData
from merge_studio.core.evaluate.loop import evaluate, has_batchnorm, reset_batchnorm
from merge_studio.core.evaluate.streaming import StreamingInterpolator, is_lazy
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import IncompatibleCheckpointsError, OutputError

ResetBN = Literal["auto", "on", "off"] | bool
StateDict = Mapping[str, torch.Tensor]


def resolve_reset_bn(reset_bn: ResetBN, module: nn.Module) -> bool:
    """``auto`` re-estimates BN statistics exactly when the module has BatchNorm layers."""
    if isinstance(reset_bn, bool):
        return reset_bn
    if reset_bn == "auto":
        return has_batchnorm(module)
    return reset_bn == "on"


def path_position(lam: float, n_anchors: int, positions: Sequence[float] | None = None) -> tuple[int, float]:
    """Which segment of a chain of ``n_anchors`` models λ falls in, and where along it.

    ``positions`` are the anchors' λ (increasing, from 0 to 1); evenly spread when not given.
    """
    if positions is None or len(positions) != n_anchors:
        segments = n_anchors - 1
        scaled = lam * segments
        seg = min(int(np.floor(scaled)), segments - 1)
        return seg, float(scaled - seg)
    seg = 0
    while seg < n_anchors - 2 and lam > positions[seg + 1]:
        seg += 1
    start, end = positions[seg], positions[seg + 1]
    return seg, float(0.0 if end <= start else min(1.0, max(0.0, (lam - start) / (end - start))))


def path_lambdas(steps: int, positions: Sequence[float] | None = None) -> np.ndarray:
    """``steps`` evenly spaced λ in [0, 1], plus the anchors' own positions (so the curve meets them)."""
    lambdas = np.linspace(0.0, 1.0, steps)
    if positions is None:
        return lambdas
    return np.unique(np.round(np.concatenate([lambdas, np.asarray(positions, dtype=np.float64)]), 12))


class _InPlaceInterpolator:
    """Writes interpolated weights into a module's own tensors, with no new allocation per point."""

    def __init__(self, module: nn.Module, anchors: Sequence[StateDict], names: Sequence[str], device: torch.device,
                 positions: Sequence[float] | None = None) -> None:
        self.module = module.to(device)
        self.positions = positions
        targets = module.state_dict()
        for anchor, name in zip(anchors, names, strict=True):
            missing = [k for k in targets if k not in anchor]
            if missing:
                raise IncompatibleCheckpointsError(
                    f"model {name} lacks {len(missing)} tensor(s) of the architecture, e.g. {missing[0]!r}",
                    hint="choose the architecture these checkpoints were trained with",
                )
            for key, target in targets.items():
                if tuple(anchor[key].shape) != tuple(target.shape):
                    raise IncompatibleCheckpointsError(
                        f"{key} of model {name} has shape {tuple(anchor[key].shape)}, the architecture wants {tuple(target.shape)}",
                        hint="choose the architecture these checkpoints were trained with",
                    )
        float_keys = [k for k, t in targets.items() if t.is_floating_point()]
        other_keys = [k for k in targets if k not in set(float_keys)]
        self.targets = [targets[k] for k in float_keys]
        self.anchors = [[a[k].to(device=device, dtype=targets[k].dtype) for k in float_keys] for a in anchors]
        self.other_targets = [targets[k] for k in other_keys]
        self.other_values = [anchors[0][k].to(device=device, dtype=targets[k].dtype) for k in other_keys]
        self.keys = float_keys + other_keys

    @torch.no_grad()
    def set(self, lam: float) -> None:
        seg, t = path_position(lam, len(self.anchors), self.positions)
        if t <= 0.0:
            torch._foreach_copy_(self.targets, self.anchors[seg])
        elif t >= 1.0:
            torch._foreach_copy_(self.targets, self.anchors[seg + 1])
        else:
            torch._foreach_copy_(self.targets, self.anchors[seg])
            torch._foreach_lerp_(self.targets, self.anchors[seg + 1], t)
        if self.other_targets:
            torch._foreach_copy_(self.other_targets, self.other_values)


def make_interpolator(
    module: nn.Module, states: Sequence[StateDict], names: Sequence[str], device: torch.device,
    positions: Sequence[float] | None = None, cancel: CancelToken | None = None,
) -> _InPlaceInterpolator | StreamingInterpolator:
    """Endpoints in memory are interpolated with a few vector ops; lazy checkpoints
    (:class:`~merge_studio.core.evaluate.streaming.LazyState`) tensor by tensor from disk."""
    if any(is_lazy(state) for state in states):
        return StreamingInterpolator(module, states, names, device, positions, cancel)
    return _InPlaceInterpolator(module, states, names, device, positions)


def _save_point(module: nn.Module, folder: Path, label: str, lam: float, anchors: Sequence[str]) -> Path:
    """Write one interpolated model as safetensors (temp file, then rename)."""
    from safetensors.torch import save_file

    safe_label = "".join(c if c.isalnum() or c in "-_" else "_" for c in label) or "curve"
    path = folder / f"{safe_label}_lambda_{lam:.4f}.safetensors"
    tmp = path.with_suffix(".safetensors.tmp")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    metadata = {"merge_studio.interpolation": f"{' -> '.join(anchors)} at lambda={lam:.6g}", "merge_studio.curve": label}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a folder you can write to") from exc
    return path


def iter_path_interpolation(
    module: nn.Module,
    states: Sequence[StateDict],
    data: EvalData,
    *,
    steps: int = 25,
    splits: Sequence[str] = ("train", "test"),
    reset_bn: ResetBN = "auto",
    label: str = "naive",
    anchor_names: Sequence[str] | None = None,
    save_dir: str | Path | None = None,
    device: torch.device | str = "auto",
    eval_batch_size: int | None = None,
    positions: Sequence[float] | None = None,
    anchor_note: str = "",
    cancel: CancelToken | None = None,
    correct: Callable[[nn.Module, float], None] | None = None,
) -> Generator[Progress | BarrierPoint, None, BarrierCurve]:
    """Evaluate ``steps`` evenly spaced points along the chain of lines through ``states``.

    With two states this is θ(λ) = (1−λ)·θ_A + λ·θ_B; with three (A, M, B) λ walks
    A→M up to M's position (``positions``, default the middle) and M→B after it; M's
    own position is always one of the points, so the curve passes through the model.
    ``module`` is a template: its weights are overwritten. With BN reset on, every
    point (the endpoints too) gets statistics re-estimated on the training split.
    ``correct(module, λ)``, when given, adjusts each point in place instead (REPAIR).
    """
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 steps")
    if len(states) < 2:
        raise ValueError("an interpolation needs at least 2 models")
    names = tuple(anchor_names or (["A", "B"] if len(states) == 2 else ["A", *[f"M{i}" for i in range(1, len(states) - 1)], "B"]))
    dev = resolve_device(device)
    on_dev = data.to(dev)
    do_reset = resolve_reset_bn(reset_bn, module)
    batch = eval_batch_size or data.eval_batch_size
    folder = Path(save_dir) if save_dir is not None else None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {folder}: {exc.strerror or exc}", hint="choose another folder") from exc
    check_cancel(cancel)
    if positions is not None and (len(positions) != len(states) or list(positions) != sorted(positions)
                                  or positions[0] != 0.0 or positions[-1] != 1.0):
        raise ValueError("anchor positions go from 0 to 1 in order, one per model")
    interp = make_interpolator(module, states, names, dev, positions, cancel)
    lambdas = path_lambdas(steps, positions)
    steps = len(lambdas)
    points: list[BarrierPoint] = []
    for i, lam in enumerate(lambdas):
        check_cancel(cancel)
        interp.set(float(lam))
        if correct is not None:
            correct(module, float(lam))
        elif do_reset:
            reset_batchnorm(module, on_dev.train, device=dev, batch_size=data.batch_size)
        if folder is not None:
            _save_point(module, folder, label, float(lam), names)
        for split in splits:
            result = evaluate(module, on_dev.split(split), data.task, device=dev, batch_size=batch, cancel=cancel)
            point = BarrierPoint(label, float(lam), split, result.loss, result.accuracy, index=i, total=steps)
            points.append(point)
            yield point
        yield Progress("interpolate", i + 1, steps, current=f"{label} λ={lam:.3f}", unit="points")
    return BarrierCurve.from_points(label, points, reset_bn=do_reset or correct is not None, anchors=names,
                                    positions=tuple(positions) if positions is not None else (), anchor_note=anchor_note)


def iter_interpolation(
    module: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    data: EvalData,
    *,
    steps: int = 25,
    splits: Sequence[str] = ("train", "test"),
    reset_bn: ResetBN = "auto",
    label: str = "naive",
    save_dir: str | Path | None = None,
    device: torch.device | str = "auto",
    eval_batch_size: int | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress | BarrierPoint, None, BarrierCurve]:
    """Sweep θ(λ) = (1−λ)·θ_A + λ·θ_B over ``steps`` points; see :func:`iter_path_interpolation`."""
    return (
        yield from iter_path_interpolation(
            module, [state_a, state_b], data, steps=steps, splits=splits, reset_bn=reset_bn, label=label,
            save_dir=save_dir, device=device, eval_batch_size=eval_batch_size, cancel=cancel,
        )
    )
