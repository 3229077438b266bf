"""Evaluating a module on a split, and re-estimating BatchNorm statistics.

Evaluation runs batched under ``torch.no_grad`` in eval mode on data already on
the device; sums are kept as device tensors and read once at the end, so a sweep
point costs little more than its forward passes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn

from merge_studio.core.device import resolve_device
from merge_studio.core.evaluate.data import EvalData, TensorSplit
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import MergeStudioError

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class EvalResult:
    """How well a model does on one split. ``accuracy`` is ``None`` for regression (for
    language models it is next-token accuracy); ``perplexity`` and ``tokens`` (predicted
    tokens) are set only for language modelling; ``n`` counts examples (token windows)."""

    loss: float
    accuracy: float | None = None
    perplexity: float | None = None
    n: int = 0
    tokens: int | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def model_output(out: object) -> torch.Tensor:
    """The prediction tensor of a forward pass (a tuple's first item, an HF output's logits)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, list | tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise MergeStudioError(f"the model returned a {type(out).__name__}, not a tensor", hint="return logits from forward()")


def _batch_sums(pred: torch.Tensor, y: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(summed loss, number correct or None, number of loss terms) for one batch."""
    if task == "classification":
        if pred.ndim != 2:
            raise MergeStudioError(
                f"classification expects (batch, classes) outputs, got shape {tuple(pred.shape)}",
                hint="choose the task that fits the model (language_modeling for (B, T, V) logits)",
            )
        loss = F.cross_entropy(pred, y, reduction="sum")
        return loss, (pred.argmax(dim=1) == y).sum(), len(y)
    if task == "language_modeling":
        if pred.ndim != 3:
            raise MergeStudioError(f"language modelling expects (B, T, V) logits, got {tuple(pred.shape)}")
        flat_y = y.reshape(-1)
        flat_pred = pred.reshape(-1, pred.shape[-1])
        loss = F.cross_entropy(flat_pred, flat_y, reduction="sum", ignore_index=-100)
        valid = flat_y != -100
        correct = ((flat_pred.argmax(dim=1) == flat_y) & valid).sum()
        return loss, correct, int(valid.sum())
    target = y.reshape(pred.shape) if y.numel() == pred.numel() else y
    loss = F.mse_loss(pred, target, reduction="sum")
    return loss, None, pred.numel()


@torch.no_grad()
def evaluate(
    module: nn.Module,
    split: TensorSplit,
    task: str = "classification",
    *,
    device: torch.device | str = "auto",
    batch_size: int = 1024,
    cancel: CancelToken | None = None,
) -> EvalResult:
    """Loss (and accuracy / perplexity) of ``module`` on ``split``; the module is left in eval mode.

    ``cancel`` is checked between batches (a language model's batch can take seconds).
    """
    dev = resolve_device(device)
    split = split.to(dev)
    module.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct_sum = torch.zeros((), dtype=torch.int64, device=dev)
    terms = 0
    has_accuracy = False
    for x, y in split.batches(batch_size):
        check_cancel(cancel)
        loss, correct, count = _batch_sums(model_output(module(x)), y, task)
        loss_sum += loss.double()
        if correct is not None:
            correct_sum += correct
            has_accuracy = True
        terms += count
    if terms == 0:
        raise MergeStudioError("nothing to evaluate: the split is empty", hint="check the data source")
    loss_value = loss_sum.item() / terms
    accuracy = correct_sum.item() / terms if has_accuracy else None
    language = task == "language_modeling"
    perplexity = math.exp(min(loss_value, 700.0)) if language else None
    return EvalResult(loss=loss_value, accuracy=accuracy, perplexity=perplexity, n=len(split),
                      tokens=terms if language else None)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BN_TYPES) and m.track_running_stats for m in module.modules())


@torch.no_grad()
def reset_batchnorm(
    module: nn.Module,
    train_split: TensorSplit,
    *,
    device: torch.device | str = "auto",
    batch_size: int = 256,
    batches: int | None = None,
) -> int:
    """Re-estimate BatchNorm running statistics from training data; returns the layers reset.

    Each BN layer's running mean and variance become the cumulative average over the
    batches seen (``momentum=None``). Only BN layers run in train mode; every other
    module stays in eval mode, so parameters and other buffers are untouched.
    Interpolated BN models need this: their interpolated statistics describe
    neither endpoint's activations.
    """
    layers = [m for m in module.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
    if not layers:
        return 0
    dev = resolve_device(device)
    split = train_split.to(dev)
    module.eval()
    saved_momentum = [m.momentum for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for i, (x, _y) in enumerate(split.batches(batch_size)):
            if batches is not None and i >= batches:
                break
            if len(x) < 2:
                continue  # BN cannot take batch statistics of one example
            module(x)
    finally:
        for m, momentum in zip(layers, saved_momentum, strict=True):
            m.momentum = momentum
        module.eval()
    return len(layers)


def _as_module(model: nn.Module | Mapping[str, torch.Tensor], template: nn.Module | None, name: str) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if template is None:
        raise MergeStudioError(f"{name} is a state dict but no model template was given", hint="pass template= or --arch")
    copy_weights(template, model, name)
    return template


@torch.no_grad()
def copy_weights(template: nn.Module, state: Mapping[str, torch.Tensor], name: str = "the model") -> None:
    """Copy ``state`` into ``template``'s own tensors one at a time (a lazy state is read tensor by tensor).

    A tied tensor (an output head sharing the embeddings) is copied once, from
    whichever of its names the state has.
    """
    from merge_studio.core.arch.bind import state_dict_mismatch, tied_names

    problem = state_dict_mismatch(template, _Shapes(state))
    if problem:
        raise MergeStudioError(f"{name} does not fit the architecture: {problem}",
                               hint="choose the architecture these weights were trained with")
    aliases = tied_names(template)
    for key, target in template.state_dict().items():
        if key in aliases and (key not in state or aliases[key] in state):
            continue
        source = key
        if source not in state:
            source = next((a for a, c in aliases.items() if c == key and a in state), key)
            if source not in state:
                continue  # num_batches_tracked the checkpoint left out
        target.copy_(state[source])


class _Shapes(Mapping[str, object]):
    """A state's names and shapes without reading tensors (lazy states give their shapes)."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self._state = state

    def __getitem__(self, key: str) -> object:
        shape_of = getattr(self._state, "shape_of", None)
        return _Shape(shape_of(key)) if shape_of is not None else self._state[key]

    def __iter__(self):  # noqa: ANN204
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __contains__(self, key: object) -> bool:
        return key in self._state


class _Shape:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


@dataclass(frozen=True)
class ModelScores:
    """Results of evaluating several models: ``results[split][i]`` for ``names[i]``."""

    names: tuple[str, ...]
    results: dict[str, tuple[EvalResult, ...]]
    task: str = "classification"

    def best(self, split: str = "test") -> str:
        """The name of the model with the lowest loss on ``split``."""
        losses = [r.loss for r in self.results[split]]
        return self.names[losses.index(min(losses))]

    def to_json(self) -> dict[str, object]:
        return {
            "task": self.task,
            "models": [
                {"name": n, **{split: self.results[split][i].to_dict() for split in self.results}}
                for i, n in enumerate(self.names)
            ],
        }


def iter_evaluate_models(
    models: Sequence[nn.Module | Mapping[str, torch.Tensor]],
    names: Sequence[str],
    data: EvalData,
    *,
    template: nn.Module | None = None,
    splits: Sequence[str] = ("train", "test"),
    reset_bn: bool | str = "auto",
    device: torch.device | str = "auto",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, ModelScores]:
    """Evaluate each model (modules, or state dicts loaded into ``template``) on each split.

    Used after a merge to show at once whether the merged model beats its parents.
    ``reset_bn`` ("auto": for models with BatchNorm) re-estimates BN statistics on the
    training split first, so a merged BN model is judged with statistics that match
    its weights; modules passed in are copied first rather than changed.
    """
    if len(models) != len(names):
        raise MergeStudioError(f"{len(models)} models but {len(names)} names")
    dev = resolve_device(device)
    on_dev = data.to(dev)
    results: dict[str, list[EvalResult]] = {s: [] for s in splits}
    total = len(models) * len(splits)
    done = 0
    for model, name in zip(models, names, strict=True):
        check_cancel(cancel)
        module = _as_module(model, template, name)
        do_reset = has_batchnorm(module) if reset_bn == "auto" else reset_bn in (True, "on")
        if do_reset and module is model:
            module = copy.deepcopy(module)
        module = module.to(dev)
        if do_reset:
            reset_batchnorm(module, on_dev.train, device=dev, batch_size=on_dev.batch_size)
        for split in splits:
            check_cancel(cancel)
            results[split].append(evaluate(module, on_dev.split(split), data.task, device=dev,
                                           batch_size=data.eval_batch_size, cancel=cancel))
            done += 1
            yield Progress("evaluate", done, total, current=f"{name} ({split})", unit="evaluations")
    return ModelScores(names=tuple(names), results={s: tuple(r) for s, r in results.items()}, task=data.task)


def evaluate_models(
    models: Sequence[nn.Module | Mapping[str, torch.Tensor]],
    names: Sequence[str],
    data: EvalData,
    *,
    template: nn.Module | None = None,
    split: str = "test",
    reset_bn: bool | str = "auto",
    device: torch.device | str = "auto",
) -> list[EvalResult]:
    """One :class:`EvalResult` per model on ``split`` (a plain call over :func:`iter_evaluate_models`)."""
    from merge_studio.core.progress import drive

    scores = drive(iter_evaluate_models(models, names, data, template=template, splits=(split,), reset_bn=reset_bn,
                                        device=device))
    return list(scores.results[split])
