"""An adapter applied onto its base, read lazily: W + scale · B·A per adapted tensor.

:class:`AdaptedCheckpoint` is a :class:`Checkpoint` like any other input: it has
the base's names, shapes and dtypes, reads untouched tensors straight from the
base, and computes an adapted tensor only when it is read (one at a time, the
last one kept for the chunks of the same tensor). So ``base+adapter`` can be an
input to any merge (mergekit's syntax), and memory holds one tensor, not a model.

Each target follows PEFT's ``merge_and_unload`` rules: scale α/r (α/√r with
rsLoRA, rank and alpha patterns per module), B·A transposed for fan-in-fan-out
layers (GPT-2's Conv1D) and for embeddings, convolutions from flattened
kernels, DoRA's magnitude rescaling of each output row, tensors saved whole
(``modules_to_save``) replacing the base's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from merge_studio.core.checkpoints.base import Checkpoint, TensorInfo
from merge_studio.core.lora.adapter import LoraAdapter, LoraModule
from merge_studio.core.lora.kohya_names import Target, kohya_lookup
from merge_studio.core.lora.paths import split_adapted_path
from merge_studio.errors import CheckpointError, IncompatibleCheckpointsError

MAX_LISTED = 6
KEPT_TENSORS = 2  # adapted tensors kept for chunked reads (the engine's workers interleave two at most)


@dataclass(frozen=True)
class Adaptation:
    """One module of one adapter changing (some rows of) one base tensor."""

    adapter: LoraAdapter
    module: LoraModule
    rows: tuple[int, int] | None
    strength: float


def _listed(items: Sequence[str]) -> str:
    return ", ".join(items[:MAX_LISTED]) + (f" … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _peft_target(module: str, weights: set[str], by_suffix: dict[str, list[str]]) -> str | None:
    """The base weight a PEFT module adapts: ``module.weight``, else a unique name ending in it."""
    exact = f"{module}.weight"
    if exact in weights:
        return exact
    parts = module.split(".")
    for start in range(1, len(parts)):  # the adapter was made on a wrapper (model.model.…)
        candidate = ".".join(parts[start:]) + ".weight"
        if candidate in weights:
            return candidate
    found = by_suffix.get(parts[-1], [])
    longer = [n for n in found if n.endswith("." + exact)]
    return longer[0] if len(longer) == 1 else None


def match_adapter(adapter: LoraAdapter, base: Checkpoint) -> tuple[dict[str, list[tuple[LoraModule, Target]]], dict[str, str]]:
    """Base tensor -> the adapter modules that change it, and base tensor -> replacing adapter tensor.

    Raises :class:`IncompatibleCheckpointsError` naming the modules the base does not have.
    """
    shapes = {n: i.shape for n, i in base.infos.items()}
    weights = {n for n in shapes if n.endswith("weight")}
    found: dict[str, list[tuple[LoraModule, Target]]] = {}
    missing: list[str] = []
    if adapter.format == "kohya":
        table = kohya_lookup(shapes)
        for name, module in adapter.modules.items():
            target = table.get(name)
            if target is None:
                missing.append(name)
            else:
                found.setdefault(target.name, []).append((module, target))
    else:
        by_suffix: dict[str, list[str]] = {}
        for n in weights:
            parts = n.split(".")
            if len(parts) >= 2:
                by_suffix.setdefault(parts[-2], []).append(n)
        for name, module in adapter.modules.items():
            target_name = _peft_target(name, weights, by_suffix)
            if target_name is None:
                missing.append(name)
            else:
                found.setdefault(target_name, []).append((module, Target(target_name)))
    replaced: dict[str, str] = {}
    for base_name, adapter_key in adapter.replacements.items():
        if base_name in shapes:
            replaced[base_name] = adapter_key
        else:
            stripped = _peft_target(base_name.rsplit(".", 1)[0], set(shapes), {})
            if stripped is not None and base_name.endswith(".weight"):
                replaced[stripped] = adapter_key
            else:
                missing.append(base_name)
    if missing:
        raise IncompatibleCheckpointsError(
            f"{adapter.name} adapts {len(missing)} module(s) that {base.name} does not have: {_listed(missing)}",
            hint=f"apply it onto the model it was trained from ({adapter.base_model or 'its config names no base'})",
        )
    return found, replaced


def module_delta(adapter: LoraAdapter, module: LoraModule, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """scale · B·A for one module, laid out like the base tensor (or its rows) of ``shape``."""
    ck = adapter.checkpoint
    down = ck.get_tensor(module.down).to(dtype)
    up = ck.get_tensor(module.up).to(dtype)
    if module.kind == "embedding":
        delta = (up @ down).T
    elif down.dim() > 2 or up.dim() > 2:
        delta = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(up.shape[0], *down.shape[1:])
    else:
        delta = up @ down
        if module.fan_in_fan_out:
            delta = delta.T
    if tuple(delta.shape) != tuple(shape):
        if delta.numel() != torch.Size(shape).numel():
            raise IncompatibleCheckpointsError(
                f"{adapter.name}: {module.name} gives a change of shape {tuple(delta.shape)} for a base tensor "
                f"of shape {tuple(shape)}",
                hint="the adapter was trained on a model of another size",
            )
        delta = delta.reshape(shape)  # a linear LoRA on a 1×1 convolution
    return delta.mul_(module.scale)


def _dora(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, fan_in_fan_out: bool) -> torch.Tensor:
    """DoRA: rescale each output row of W + ΔW to the trained magnitude."""
    merged = weight + delta
    rows = merged.T if fan_in_fan_out else merged
    norm = torch.linalg.vector_norm(rows.reshape(rows.shape[0], -1), dim=1)
    factor = (magnitude.reshape(-1) / norm).reshape(-1, *([1] * (rows.dim() - 1)))
    scaled = factor * rows
    return scaled.T if fan_in_fan_out else scaled


CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})


def base_uses_conv1d(base: Checkpoint, found: dict[str, list[tuple[LoraModule, Target]]], adapter: LoraAdapter) -> bool:
    """Whether the base stores its linear layers [in, out] (transformers' Conv1D, GPT-2).

    peft transposes B·A for such layers even when the saved config says
    ``fan_in_fan_out: false`` (it warns and sets it at load), so we look at the base:
    its ``config.json`` model type, or a non-square weight that only fits transposed.
    """
    import json

    config = base.path / "config.json" if base.path.is_dir() else None
    if config is not None and config.is_file():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("model_type") in CONV1D_MODEL_TYPES:
                return True
        except (OSError, ValueError, AttributeError, RecursionError):
            pass
    for name, pairs in found.items():
        shape = base.info(name).shape
        for module, _ in pairs:
            if module.kind != "linear" or len(shape) != 2 or shape[0] == shape[1]:
                continue
            down = adapter.checkpoint.info(module.down).shape
            up = adapter.checkpoint.info(module.up).shape
            if len(down) == 2 and (down[1], up[0]) == (shape[0], shape[1]):
                return True
    return False


class AdaptedCheckpoint(Checkpoint):
    """``base`` with ``adapters`` (each with a strength) applied, computed tensor by tensor on read."""

    def __init__(self, base: Checkpoint, adapters: Sequence[tuple[LoraAdapter, float]], *, owns: Sequence[Checkpoint] = ()) -> None:
        label = "+".join([str(base.path), *(str(a.path) for a, _ in adapters)])
        super().__init__(Path(label))
        self.base = base
        self.adapters = [a for a, _ in adapters]
        self._owned = list(owns)
        self._display_name = "+".join([base.name, *(a.name for a, _ in adapters)])
        self.format = f"{base.format} + " + " + ".join(a.kind_label for a, _ in adapters)
        self.metadata = dict(base.metadata)
        self._infos = dict(base.infos)
        self._changes: dict[str, list[Adaptation]] = {}
        self._bias_changes: dict[str, list[Adaptation]] = {}  # PEFT lora_bias: B's bias, scaled
        self._replaced: dict[str, tuple[LoraAdapter, str]] = {}
        for adapter, strength in adapters:
            found, replaced = match_adapter(adapter, base)
            if adapter.format == "peft" and base_uses_conv1d(base, found, adapter):
                found = {n: [(replace(m, fan_in_fan_out=m.kind == "linear"), t) for m, t in pairs]
                         for n, pairs in found.items()}
            for name, key in replaced.items():
                self._replaced[name] = (adapter, key)
                info = adapter.checkpoint.info(key)
                self._infos[name] = TensorInfo(name, info.shape, base.info(name).dtype)
            for name, pairs in found.items():
                for module, target in pairs:
                    change = Adaptation(adapter, module, target.rows, strength)
                    self._changes.setdefault(name, []).append(change)
                    if module.up_bias is not None:
                        bias = name.removesuffix("weight") + "bias"
                        if bias not in self._infos:
                            raise IncompatibleCheckpointsError(
                                f"{adapter.name} trains a bias for {module.name}, but {base.name} has no {bias}",
                            )
                        self._bias_changes.setdefault(bias, []).append(change)
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, torch.Tensor] = OrderedDict()  # the last adapted tensors, for their chunks

    @property
    def name(self) -> str:
        return self._display_name

    def adapted_names(self) -> list[str]:
        """Base tensors the adapters change or replace."""
        return sorted({*self._changes, *self._replaced, *self._bias_changes})

    def source_files(self) -> list[Path]:
        files = list(self.base.source_files())
        for adapter in self.adapters:
            files += adapter.checkpoint.source_files()
        return files

    def _compute(self, name: str) -> torch.Tensor:
        info = self._infos[name]
        if name in self._replaced:
            adapter, key = self._replaced[name]
            weight = adapter.checkpoint.get_tensor(key)
        else:
            weight = self.base.get_tensor(name)
        changes = self._changes.get(name, [])
        biases = self._bias_changes.get(name, [])
        if not (changes or biases) or not info.dtype.is_floating_point:
            return weight.to(info.dtype)
        work = torch.float64 if info.dtype == torch.float64 else torch.float32
        out = weight.to(work)
        for change in biases:
            bias = change.adapter.checkpoint.get_tensor(change.module.up_bias).to(work)
            out.add_(bias, alpha=change.module.scale * change.strength)
        for change in changes:
            module = change.module
            rows = change.rows
            region = out[rows[0]:rows[1]] if rows else out
            delta = module_delta(change.adapter, module, tuple(region.shape), work)
            if change.strength != 1.0:
                delta.mul_(change.strength)
            if module.magnitude is not None:
                magnitude = change.adapter.checkpoint.get_tensor(module.magnitude).to(work)
                region.copy_(_dora(region, delta, magnitude, module.fan_in_fan_out))
            else:
                region.add_(delta)
        return out.to(info.dtype)

    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        if name not in self._changes and name not in self._replaced and name not in self._bias_changes:
            return self.base.get_tensor(name) if flat_range is None else self.base.get_flat(name, *flat_range)
        with self._lock:  # merge workers read chunks of one tensor, or a few tensors, at once
            tensor = self._recent.get(name)
            if tensor is None:
                while len(self._recent) >= KEPT_TENSORS:
                    self._recent.popitem(last=False)  # free the oldest before computing the next
                tensor = self._recent[name] = self._compute(name)
            self._recent.move_to_end(name)
        if flat_range is None:
            return tensor.clone()
        return tensor.reshape(-1)[flat_range[0]:flat_range[1]].clone()

    def close(self) -> None:
        self._recent.clear()
        for ck in self._owned:
            ck.close()


# --- "base+adapter" paths -------------------------------------------------------------------
def open_adapted_path(text: str) -> AdaptedCheckpoint | None:
    """Open ``base+adapter`` as an :class:`AdaptedCheckpoint` (``None`` when it is not one)."""
    split = split_adapted_path(text)
    if split is None:
        return None
    from merge_studio.core.checkpoints.registry import open_checkpoint

    left, right = split
    base = open_checkpoint(left)
    try:
        adapter_ck = open_checkpoint(right)
        adapter = getattr(adapter_ck, "adapter", None)
        if adapter is None:
            adapter_ck.close()
            raise CheckpointError(
                f"{Path(right).name} is not a LoRA adapter, so it cannot be added to {Path(left).name} with '+'",
                hint="give a PEFT adapter folder or a kohya LoRA file after the '+'",
            )
        return AdaptedCheckpoint(base, [(adapter, 1.0)], owns=[base, adapter_ck])
    except BaseException:
        base.close()
        raise
