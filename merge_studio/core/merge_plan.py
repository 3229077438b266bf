"""Everything decided before the first tensor is read: roles, key actions, output layout.

Planning opens the checkpoints lazily (headers only), so mistakes — a missing
base, a shape mismatch, an output that would overwrite an input — are reported
in a second, before any work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from merge_studio.core.checkpoints import Checkpoint, open_checkpoint
from merge_studio.core.device import resolve_device
from merge_studio.core.dtypes import parse_dtype
from merge_studio.core.hf.merge_setup import prepare_hf_merge
from merge_studio.core.hf.output_folder import OutputFolder
from merge_studio.core.methods.layered import format_validation_error, layer_ranks
from merge_studio.core.methods.spec import MethodSpec
from merge_studio.core.param_scopes import Place, Scopes, method_scopes, model_scopes, place_tensors, resolve_in_scopes, sort_recipe
from merge_studio.core.naming.base import GENERIC, LayerNaming, naming_for
from merge_studio.core.naming.merge_rules import check_block_weights, resolve_part_sources
from merge_studio.core.recipe import ModelEntry, Recipe
from merge_studio.core.recipe_slices import keeps_layer_structure
from merge_studio.core.stacking import StackPlan, TensorInputs, plan_stack
from merge_studio.core.writer import PlannedTensor, output_targets
from merge_studio.errors import IncompatibleCheckpointsError, MethodError, OutputError, RecipeError

ARCH_METADATA_KEY = "merge_studio.arch"


@dataclass(frozen=True)
class KeyAction:
    """What happens to one tensor: merged by the method, copied from ``source``, or left out."""

    kind: str  # "merge" | "copy"
    source: Checkpoint | None = None
    reason: str = ""


def _resolved(path: str | Path) -> Path:
    """The real path, or the absolute one where it cannot be resolved (a link loop)."""
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return p.absolute()


def _same_path(a: str | Path, b: str | Path) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return _resolved(pa) == _resolved(pb)


@dataclass
class MergePlan:
    """Roles of the inputs and the fate of every tensor, for one recipe."""

    recipe: Recipe
    spec: MethodSpec
    models: list[Checkpoint]
    model_entries: list[ModelEntry]
    base: Checkpoint | None
    device: torch.device
    compute_dtype: torch.dtype
    out_dtype: torch.dtype | None
    keys: list[str] = field(default_factory=list)
    actions: dict[str, KeyAction] = field(default_factory=dict)
    planned: list[PlannedTensor] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    depths: dict[str, float] = field(default_factory=dict)
    arch: str | None = None
    output_folder: OutputFolder | None = None  # config, tokenizer and card for a Hugging Face output
    scopes: Scopes | None = None
    places: dict[str, Place] = field(default_factory=dict)
    naming: LayerNaming = GENERIC  # the family's parts and blocks, from the tensor names
    kept_parts: dict[str, Checkpoint] = field(default_factory=dict)  # part key -> the input it is copied from
    stack: StackPlan | None = None  # slices that stack layers into a model of a new depth
    _param_cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def all_checkpoints(self) -> list[Checkpoint]:
        """Every distinct input (base included once)."""
        out = list(self.models)
        if self.base is not None and all(self.base is not m for m in out):
            out.append(self.base)
        return out

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(ck.name for ck in self.models)

    def targets(self, count: int) -> list[Path]:
        assert self.recipe.output is not None
        return output_targets(Path(self.recipe.output), count)

    def _scopes(self) -> Scopes:
        if self.scopes is None:
            recipe = self.recipe
            self.scopes = sort_recipe(self.spec, recipe.params, recipe.models, recipe.slices or [])
        return self.scopes

    def _validated(self, model: Any, kind: str, resolved: dict[str, Any], name: str) -> Any:
        key = (kind, tuple(sorted((k, repr(v)) for k, v in resolved.items())))
        if key not in self._param_cache:
            try:
                self._param_cache[key] = model.model_validate(resolved)
            except ValidationError as exc:
                raise RecipeError(format_validation_error(exc, f"parameters at {name or 'the model'}")) from None
        return self._param_cache[key]

    def inputs_for(self, name: str) -> TensorInputs:
        """The models (with their recipe entries) and base one output tensor is made from."""
        if self.stack is not None:
            return self.stack.inputs_for(name)
        return TensorInputs(self.models, self.model_entries, self.base if self.spec.base != "unused" else None)

    def params_for(self, name: str, depth: float) -> Any:
        """The method's parameters for one tensor (per-layer values and scopes resolved, validated)."""
        place = self.places.get(name)
        chain = method_scopes(self._scopes(), place.slice_index if place else None)
        block = self.naming.block_ref(name) if name else None
        return self._validated(self.spec.params, "p", resolve_in_scopes(chain, name, depth, block), name)

    def model_params_for(self, name: str, depth: float) -> list[Any]:
        """Each model's per-model parameters for one tensor (the most specific scope wins)."""
        scopes = self._scopes()
        place = self.places.get(name)
        out = []
        block = self.naming.block_ref(name) if name else None
        for entry in self.inputs_for(name).entries:
            index = next((i for i, e in enumerate(self.recipe.models) if e is entry), None)
            own = scopes.models[index] if index is not None else {}
            chain = model_scopes(scopes, own, entry.path, place.slice_index if place else None)
            out.append(self._validated(self.spec.model_params, "m", resolve_in_scopes(chain, name, depth, block), name))
        return out

    def close(self) -> None:
        for ck in self.all_checkpoints:
            ck.close()


def _order_models(recipe: Recipe, spec: MethodSpec) -> tuple[list[ModelEntry], bool]:
    """The models the method sees, and whether the base is used as a base.

    Task methods take the base separately (and skip it in the model list, as
    mergekit does). Methods without a base role see the base first when it is one
    of the models, or prepended when they need one more model (SLERP's base).
    """
    entries = list(recipe.models)
    base = recipe.base
    if spec.base == "required" and base is None:
        raise MethodError(f"{spec.label} needs a base model", hint="mark one model as the base")
    if spec.base != "unused":
        if base is not None:
            entries = [e for e in entries if not _same_path(e.path, base)]
        return entries, base is not None
    if base is not None:
        at = [i for i, e in enumerate(entries) if _same_path(e.path, base)]
        if at:
            entries.insert(0, entries.pop(at[0]))
        elif spec.n_models[1] is not None and len(entries) == spec.n_models[1] - 1:
            entries.insert(0, ModelEntry(path=base))
    return entries, False


def _check_output(recipe: Recipe, inputs: Sequence[Checkpoint]) -> None:
    if not recipe.output:
        raise OutputError("no output path given", hint="set output in the recipe or pass -o OUT")
    target = _resolved(recipe.output)
    for ck in inputs:
        paths = [_resolved(ck.path), *[_resolved(p) for p in ck.source_files()]]
        for p in paths:
            if target == p or (p.is_dir() and p in target.parents) or (target.exists() and _same_path(target, p)):
                raise OutputError(
                    f"the output {target} would overwrite the input {ck.name}",
                    hint="choose another output path; inputs are never overwritten",
                )


def _describe_problems(problems: list[str]) -> str:
    shown = problems[:8]
    more = f"; … and {len(problems) - 8} more" if len(problems) > 8 else ""
    return "; ".join(shown) + more


def plan_merge(recipe: Recipe) -> MergePlan:
    """Open the inputs lazily, assign roles and decide every tensor's fate."""
    spec = recipe.spec
    entries, uses_base = _order_models(recipe, spec)
    if not recipe.slices:
        spec.check_model_count(len(entries))
    opened: dict[str, Checkpoint] = {}

    def open_once(path: str) -> Checkpoint:
        key = str(_resolved(path))
        if key not in opened:
            opened[key] = open_checkpoint(path)
        return opened[key]

    try:
        models = [open_once(e.path) for e in entries]
        base = open_once(recipe.base) if recipe.base else None
        _check_output(recipe, [*models, *([base] if base else [])])
        hf = prepare_hf_merge(recipe, [e.path for e in entries], models, base, spec.label)
        if hf is not None:  # vocabulary rows lined up by token; config, tokenizer and card planned
            models, base = hf.models, hf.base
        arch = recipe.arch or next(
            (ck.metadata[ARCH_METADATA_KEY] for ck in [*([base] if base else []), *models] if ARCH_METADATA_KEY in ck.metadata),
            None,
        )
        if spec.needs_arch and not arch:
            raise MethodError(f"{spec.label} needs the model's architecture", hint="set arch in the recipe or pass --arch")
        plan = MergePlan(
            recipe=recipe,
            spec=spec,
            models=models,
            model_entries=entries,
            base=base,
            device=resolve_device(recipe.device),
            compute_dtype=parse_dtype(recipe.compute_dtype) or torch.float32,
            out_dtype=parse_dtype(recipe.dtype),
            arch=arch,
            output_folder=hf.output_folder if hf is not None else None,
        )
        if recipe.slices and _stacks(recipe, base if base is not None else models[0]):
            _plan_stack(plan, entries, uses_base)
        elif recipe.slices:
            spec.check_model_count(len(entries))
        if spec.streaming:
            _plan_naming(plan, [open_once(e.path) for e in recipe.models])
            _plan_keys(plan, uses_base)
        return plan
    except BaseException:
        for ck in opened.values():
            ck.close()
        raise


def _stacks(recipe: Recipe, reference: Checkpoint) -> bool:
    """Whether the recipe's slices stack layers (rather than only set parameters per range)."""
    assert recipe.slices
    depth = len({r for r in layer_ranks(reference.keys()).values() if r is not None})
    return not keeps_layer_structure(recipe.slices, depth)


def _plan_stack(plan: MergePlan, entries: list[ModelEntry], uses_base: bool) -> None:
    """Plan a stacked model: which views feed each slice; the output config and card follow."""
    recipe, spec = plan.recipe, plan.spec
    if not spec.streaming or spec.outputs != "one":
        raise MethodError(f"{spec.label} cannot stack layers", hint="stack slices with passthrough or a tensor-wise method")
    by_path = {str(_resolved(e.path)): ck for e, ck in zip(entries, plan.models, strict=True)}
    if recipe.base and plan.base is not None:
        by_path.setdefault(str(_resolved(recipe.base)), plan.base)
    entry_by_path = {str(_resolved(e.path)): e for e in recipe.models}

    def checkpoint_for(path: str) -> Checkpoint:
        return by_path[str(_resolved(path))]

    def entry_for(path: str) -> ModelEntry:
        return entry_by_path.get(str(_resolved(path))) or ModelEntry(path=path)

    plan.stack = plan_stack(
        recipe.slices or [], checkpoint_for, entry_for,
        is_base=lambda p: bool(recipe.base) and _same_path(p, recipe.base),
        uses_base=uses_base, base_required=spec.base == "required", check_count=spec.check_model_count,
    )
    folder = plan.output_folder
    if folder is not None:
        folder.override_config(plan.stack.config_overrides(folder.config))
        folder.card = replace(folder.card, layers=tuple(plan.stack.lines))


def _plan_naming(plan: MergePlan, recipe_models: list[Checkpoint]) -> None:
    """The family's naming (from the reference's names and shapes), checked against the recipe."""
    recipe = plan.recipe
    reference = plan.base if plan.base is not None else plan.models[0]
    plan.naming = naming_for({name: info.shape for name, info in reference.infos.items()})
    check_block_weights(recipe.params, plan.naming, "params")
    for i, entry in enumerate(plan.model_entries):
        check_block_weights(entry.params, plan.naming, f"models.{i}.params")
    plan.kept_parts = resolve_part_sources(
        recipe.part_sources, plan.naming, recipe_models, [e.path for e in recipe.models], plan.base, _same_path
    )


def _key_order(plan: MergePlan, reference: Checkpoint) -> list[str]:
    """Every output tensor's name, the reference's first (a stack lists its own)."""
    if plan.stack is not None:
        return plan.stack.output_names()
    keys: list[str] = []
    seen: set[str] = set()
    for ck in [reference, *plan.models]:
        for k in ck.keys():
            if k not in seen:
                seen.add(k)
                keys.append(k)
    return keys


def _plan_keys(plan: MergePlan, uses_base: bool) -> None:
    recipe, models, base = plan.recipe, plan.models, plan.base
    role_base = base if uses_base else None
    reference = base if base is not None else models[0]
    keys = _key_order(plan, reference)
    problems: list[str] = []
    for key in keys:
        kept_from = plan.kept_parts.get(plan.naming.part_of(key) or "") if plan.kept_parts else None
        if kept_from is not None and key in kept_from:
            plan.actions[key] = KeyAction("copy", kept_from, f"{plan.naming.part_of(key)} kept from {kept_from.name}")
            continue
        if plan.stack is not None:
            inputs = plan.stack.inputs_for(key)
            participants = [*inputs.models, *([inputs.base] if inputs.base is not None else [])]
            key_reference = inputs.base if inputs.base is not None else inputs.models[0]
        else:
            participants = [*models, *([role_base] if role_base is not None else [])]
            key_reference = reference
        holders = [ck for ck in participants if key in ck]
        shapes = {ck.info(key).shape for ck in holders}
        complete = len(holders) == len(participants)
        if complete and len(shapes) == 1:
            if all(ck.info(key).dtype.is_floating_point for ck in holders):
                plan.actions[key] = KeyAction("merge")
            else:
                source = key_reference if key in key_reference else holders[0]
                plan.actions[key] = KeyAction("copy", source, "not a float tensor")
            continue
        if complete:
            detail = ", ".join(f"{ck.name} {tuple(ck.info(key).shape)}" for ck in holders)
            why = f"{key}: shapes differ ({detail})"
        else:
            lacking = [ck.name for ck in participants if key not in ck]
            why = f"{key}: missing from {', '.join(lacking)}"
        if recipe.on_mismatch == "error" or not holders:
            problems.append(why)
        elif recipe.on_mismatch == "skip":
            plan.skipped.append(key)
        else:
            source = key_reference if key in key_reference else holders[0]
            plan.actions[key] = KeyAction("copy", source, why)
    if problems:
        raise IncompatibleCheckpointsError(
            f"{len(problems)} tensor(s) cannot be merged: {_describe_problems(problems)}",
            hint="set on_mismatch to copy_base (copy them from the base or first model) or skip (leave them out)",
        )
    plan.keys = [k for k in keys if k in plan.actions]
    if not plan.keys:
        held = ", ".join(f"{ck.name} ({len(ck)} tensors)" for ck in [*models, *([base] if base else [])])
        raise IncompatibleCheckpointsError(
            f"nothing to merge: no tensor is left to write ({held})"
            + (f"; {len(plan.skipped)} left out as mismatched" if plan.skipped else ""),
            hint="check that these are the model files you meant",
        )
    if plan.stack is not None:
        plan.places = {k: plan.stack.place(k) for k in plan.keys}
    else:
        ranges = [sl.layer_range for sl in recipe.slices or []]
        plan.places = place_tensors(plan.keys, ranges)
    plan.depths = {k: place.depth for k, place in plan.places.items()}
    if plan.naming.blocks and not recipe.slices:  # SD: gradients run IN00 … M00 … OUT11, not by block number
        plan.depths = plan.naming.depths(plan.keys)
    for key in plan.keys:
        action = plan.actions[key]
        if action.source is not None:
            src = action.source
        else:
            inputs = plan.inputs_for(key)
            src = inputs.base if (inputs.base is not None and uses_base) else inputs.models[0]
        info = src.info(key)
        dtype = plan.out_dtype if (plan.out_dtype is not None and info.dtype.is_floating_point) else info.dtype
        plan.planned.append(PlannedTensor(key, info.shape, dtype))
