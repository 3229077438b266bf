"""Layer stacking: slices of different models and layer ranges make a model of a new depth.

mergekit calls it passthrough with ``slices`` (frankenmerges; SOLAR-10.7B's depth
up-scaling stacked two copies of one model). Output layer k of a slice is made from
layer ``start + k`` of each of its sources: copied by passthrough when the slice has one
source, merged by the recipe's method when it has several. Tensors outside the
numbered layers (embeddings, the final norm, the head) come from the first slice's
sources when they feed the first layer and from the last slice's otherwise, as in
mergekit.

Nothing is copied: each source is seen through a :class:`LayerView` that renames its
layers to the output's numbers, so the engine streams a stacked merge tensor by tensor
like any other, with the per-tensor inputs the plan gives it (:meth:`StackPlan.inputs_for`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from merge_studio.core.checkpoints.base import Checkpoint, TensorInfo
from merge_studio.core.param_scopes import Place, input_side
from merge_studio.core.recipe import ModelEntry
from merge_studio.core.recipe_slices import SliceEntry, output_ranges
from merge_studio.errors import MergeStudioError, RecipeError

_NUMBER = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")
# Config keys that hold the number of layers (Llama/Mistral/Qwen/Gemma/Phi; GPT-2; others).
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def split_layer(name: str) -> tuple[str, int] | None:
    """``("model.layers", 12)`` for ``model.layers.12.mlp.up_proj.weight``; ``None`` outside numbered blocks."""
    m = _NUMBER.search(name)
    return (name[: m.start(1)].rstrip("."), int(m.group(1))) if m else None


def renumbered(name: str, layer: int) -> str:
    """``name`` with its layer number replaced by ``layer``."""
    m = _NUMBER.search(name)
    assert m is not None
    return f"{name[: m.start(1)]}{layer}{name[m.end(1):]}"


def layer_stack(names: Sequence[str]) -> tuple[str, int]:
    """The prefix of the network's main stack of layers and its depth.

    The stack is the numbered block list with the most layers (the decoder layers of a
    language model, not a vision tower beside them); ties go to the one with more tensors.
    """
    layers: dict[str, set[int]] = {}
    tensors: Counter[str] = Counter()
    for name in names:
        split = split_layer(name)
        if split is not None:
            layers.setdefault(split[0], set()).add(split[1])
            tensors[split[0]] += 1
    if not layers:
        raise RecipeError("layer stacking needs numbered layers (names like model.layers.N…), and these "
                          "models have none")
    prefix = max(layers, key=lambda p: (len(layers[p]), tensors[p]))
    return prefix, max(layers[prefix]) + 1


class LayerView(Checkpoint):
    """A checkpoint seen with some of its layers renumbered: output layer → source layer.

    Tensors outside the stack keep their names; other layers of the stack are hidden.
    """

    def __init__(self, inner: Checkpoint, prefix: str, layers: Mapping[int, int]) -> None:
        super().__init__(inner.path)
        self.inner, self.format, self.metadata, self.skipped = inner, inner.format, inner.metadata, inner.skipped
        wanted: dict[int, list[int]] = {}
        for out, src in layers.items():
            wanted.setdefault(src, []).append(out)
        self._source: dict[str, str] = {}
        for name, info in inner.infos.items():
            split = split_layer(name)
            if split is None or split[0] != prefix:
                self._add(name, name, info)
                continue
            for out in wanted.get(split[1], ()):
                self._add(renumbered(name, out), name, info)

    def _add(self, out: str, src: str, info: TensorInfo) -> None:
        self._source[out] = src
        self._infos[out] = info if out == src else TensorInfo(out, info.shape, info.dtype)

    @property
    def name(self) -> str:
        return self.inner.name

    def source_files(self) -> list:
        return self.inner.source_files()

    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        src = self._source[name]
        return self.inner.get_tensor(src) if flat_range is None else self.inner.get_flat(src, *flat_range)

    def close(self) -> None:
        """The plan closes the checkpoint inside; a view holds nothing of its own."""


@dataclass(frozen=True)
class TensorInputs:
    """What one output tensor is made from: the method's models (with their recipe entries) and base."""

    models: list[Checkpoint]
    entries: list[ModelEntry]
    base: Checkpoint | None


@dataclass
class StackPlan:
    """Where every output layer comes from (see the module docstring)."""

    prefix: str
    slices: list[TensorInputs]
    ranges: list[tuple[int, int]]  # each slice's output layers
    lines: list[str]  # one line per slice, for the model card
    layer_sources: list[int] = field(default_factory=list)  # output layer -> the first source's layer

    @property
    def depth(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    def slice_of(self, name: str) -> int:
        """The slice an output tensor belongs to."""
        split = split_layer(name)
        if split is not None and split[0] == self.prefix:
            return next(s for s, (a, b) in enumerate(self.ranges) if a <= split[1] < b)
        return 0 if input_side(name) else len(self.ranges) - 1

    def inputs_for(self, name: str) -> TensorInputs:
        return self.slices[self.slice_of(name)]

    def place(self, name: str) -> Place:
        """Depth inside the slice (k/(n − 1), as mergekit) and slice, for parameters and gradients."""
        s = self.slice_of(name)
        split = split_layer(name)
        if split is None or split[0] != self.prefix:
            return Place(0.0, s)
        start, end = self.ranges[s]
        return Place((split[1] - start) / (end - start - 1) if end - start > 1 else 1.0, s)

    def output_names(self) -> list[str]:
        """Every output tensor, in order: input side, the layers, output side."""
        first, last = self.slices[0], self.slices[-1]
        ref = lambda ins: ins.base if ins.base is not None else ins.models[0]  # noqa: E731
        head = [n for n in ref(first).keys() if split_layer(n) is None or split_layer(n)[0] != self.prefix]
        names = [n for n in head if input_side(n)]
        for ins, (a, b) in zip(self.slices, self.ranges, strict=True):
            names += [n for n in ref(ins).keys() if (sp := split_layer(n)) and sp[0] == self.prefix and a <= sp[1] < b]
        tail = [n for n in ref(last).keys() if (split_layer(n) is None or split_layer(n)[0] != self.prefix)]
        return names + [n for n in tail if not input_side(n)]

    def config_overrides(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The new layer count (and per-layer lists re-ordered) for a Hugging Face ``config.json``."""
        out: dict[str, Any] = {}
        for scope, cfg in (("", config), ("text_config", config.get("text_config"))):
            if not isinstance(cfg, Mapping):
                continue
            target = out.setdefault(scope, {}) if scope else out
            n_source = next((cfg[k] for k in LAYER_COUNT_KEYS if isinstance(cfg.get(k), int)), None)
            for key in LAYER_COUNT_KEYS:
                if isinstance(cfg.get(key), int):
                    target[key] = self.depth
            for key, value in cfg.items():  # per-layer settings (Gemma's layer_types, …) follow their layers
                if isinstance(value, list) and n_source and len(value) == n_source and key not in LAYER_COUNT_KEYS:
                    target[key] = [value[i] for i in self.layer_sources]
            if scope and not target:
                out.pop(scope)
        return out


def plan_stack(
    slices: Sequence[SliceEntry],
    checkpoint_for: Callable[[str], Checkpoint],
    entry_for: Callable[[str], ModelEntry],
    is_base: Callable[[str], bool],
    uses_base: bool,
    base_required: bool,
    check_count: Callable[[int], None],
) -> StackPlan:
    """Check every slice against its models and plan the views that feed each output layer.

    ``uses_base``: the method takes a base; it is the source of each slice that is the
    recipe's base. ``check_count`` raises when a slice has a number of models the method
    cannot merge.
    """
    first = checkpoint_for(slices[0].sources[0].model)
    prefix, _ = layer_stack(first.keys())
    ranges = output_ranges(slices)
    plan = StackPlan(prefix, [], ranges, [])
    for s, (sl, (out_start, out_end)) in enumerate(zip(slices, ranges, strict=True)):
        models: list[Checkpoint] = []
        entries: list[ModelEntry] = []
        base: Checkpoint | None = None
        for j, src in enumerate(sl.sources):
            ck = checkpoint_for(src.model)
            depth = _depth(ck, prefix, f"slices.{s}.sources.{j}")
            start, end = src.layer_range
            check_range(f"slices.{s}.sources.{j}", ck.name, src.layer_range, depth)
            view = LayerView(ck, prefix, {out_start + k: start + k for k in range(end - start)})
            if uses_base and is_base(src.model) and base is None:
                base = view
            else:
                models.append(view)
                entries.append(entry_for(src.model))
        if base is None and base_required:
            raise RecipeError(f"slices.{s}: the base model is not among this slice's sources",
                              hint="add the base model to each slice, with the layers the others are measured from")
        try:
            check_count(len(models))
        except MergeStudioError as exc:  # which slice has too few or too many
            raise RecipeError(f"slices.{s}: {exc.message}", hint=exc.hint) from None
        plan.slices.append(TensorInputs(models, entries, base))
        plan.layer_sources += list(range(*sl.sources[0].layer_range))
        parts = ", ".join(f"{checkpoint_for(src.model).name} layers {src.layer_range[0]}–{src.layer_range[1] - 1}"
                          for src in sl.sources)
        plan.lines.append(f"layers {out_start}–{out_end - 1}: {parts}")
    return plan


def check_range(where: str, model: str, layer_range: tuple[int, int], depth: int) -> None:
    """:class:`RecipeError` when a slice source asks for layers the model does not have."""
    start, end = layer_range
    if end > depth:
        raise RecipeError(f"{where}: layer_range [{start}, {end}] goes past the {depth} layers of {model}",
                          hint=f"layers are numbered 0 to {depth - 1}; the end is exclusive")


def _depth(ck: Checkpoint, prefix: str, where: str) -> int:
    layers = {sp[1] for n in ck.keys() if (sp := split_layer(n)) is not None and sp[0] == prefix}
    if not layers:
        raise RecipeError(f"{where}: {ck.name} has no layers named {prefix}.N like the first slice's model",
                          hint="stack slices of models of one family")
    return max(layers) + 1


def layer_origins(checkpoint: Checkpoint) -> dict[str, str]:
    """For the output of a stacking merge: each layer's module path → the model(s) it came from.

    Read from the recipe the merge wrote into the file's metadata; empty for any other
    checkpoint (so the Graph tab can colour a stacked model's blocks by their source).
    """
    from merge_studio.core.safe_yaml import load_yaml

    text = checkpoint.metadata.get("merge_studio.recipe")
    if not text:
        return {}
    try:
        data = load_yaml(text)
        slices = [SliceEntry.model_validate(sl) for sl in (data.get("slices") or [])]
        prefix, depth = layer_stack(checkpoint.keys())
    except Exception:  # noqa: BLE001 - metadata written by someone else: no colours, no error
        return {}
    ranges = output_ranges(slices)
    if not slices or ranges[-1][1] != depth or all(sl.keeps_structure for sl in slices) and [
        sl.layer_range for sl in slices] == ranges:
        return {}
    out: dict[str, str] = {}
    for sl, (start, end) in zip(slices, ranges, strict=True):
        names = " + ".join(dict.fromkeys(_display_name(src.model) for src in sl.sources))
        out.update({f"{prefix}.{layer}": names for layer in range(start, end)})
    return out


def _display_name(path: str) -> str:
    from pathlib import Path

    return Path(path).name or path


@dataclass(frozen=True)
class StackSummary:
    """What a set of slices would make: its depth and parameter count (for the slice editor)."""

    depth: int
    parameters: int
    merged_slices: int  # slices with more than one source (made by the recipe's method)


def layer_count(names: Sequence[str]) -> int:
    """How many layers a model's main stack has (0 when it has no numbered layers)."""
    try:
        return layer_stack(names)[1]
    except RecipeError:
        return 0


def summarize_stack(slices: Sequence[SliceEntry], infos: Mapping[str, Mapping[str, TensorInfo]]) -> StackSummary:
    """Depth and parameters of the stacked output, from the models' headers only.

    ``infos`` maps each slice source's model to its tensors' infos. Layers are counted
    from each slice's first source; outside tensors from the first slice (input side)
    and the last (output side), as the merge takes them.
    """
    if not slices:
        return StackSummary(0, 0, 0)
    first = infos[slices[0].sources[0].model]
    prefix, _ = layer_stack(list(first))
    per_layer: dict[tuple[str, int], int] = {}
    for model, model_infos in infos.items():
        for name, info in model_infos.items():
            split = split_layer(name)
            if split is not None and split[0] == prefix:
                per_layer[(model, split[1])] = per_layer.get((model, split[1]), 0) + info.numel
    depths: dict[str, int] = {}
    for layer_model, layer in per_layer:
        depths[layer_model] = max(depths.get(layer_model, 0), layer + 1)
    for s, sl in enumerate(slices):
        for j, src in enumerate(sl.sources):
            check_range(f"slices.{s}.sources.{j}", _display_name(src.model), src.layer_range, depths.get(src.model, 0))
    params = 0
    for sl in slices:
        src = sl.sources[0]
        params += sum(per_layer.get((src.model, layer), 0) for layer in range(*src.layer_range))

    def outside(model_infos: Mapping[str, TensorInfo], want_input: bool) -> int:
        return sum(info.numel for name, info in model_infos.items()
                   if (split_layer(name) is None or split_layer(name)[0] != prefix) and input_side(name) == want_input)

    params += outside(first, True) + outside(infos[slices[-1].sources[0].model], False)
    return StackSummary(sum(sl.length for sl in slices), params, sum(len(sl.sources) > 1 for sl in slices))
