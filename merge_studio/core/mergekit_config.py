"""Bring mergekit YAML configs in, and write ours out, for the methods both tools share.

mergekit users keep their configs: ``merge-studio merge config.yml`` accepts either
format. Parameters keep mergekit's names and meanings (weight, density, normalize,
lambda, t, rescale); per-layer filters and gradients use the same shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from merge_studio.core.hf.hub_cache import resolve_model_reference
from merge_studio.core.hf.mergekit_tokenizer import tokenizer_from_mergekit, tokenizer_to_mergekit
from merge_studio.core.recipe import ModelEntry, Recipe
from merge_studio.errors import RecipeError

# mergekit method name -> ours
FROM_MERGEKIT = {
    "linear": "weighted_average",
    "slerp": "slerp",
    "task_arithmetic": "task_arithmetic",
    "ties": "ties",
    "dare_linear": "dare_linear",
    "dare_ties": "dare_ties",
    "model_stock": "model_stock",
    "breadcrumbs": "breadcrumbs",
    "breadcrumbs_ties": "breadcrumbs_ties",
    "della": "della",
    "della_linear": "della_linear",
    "sce": "sce",
    "ram": "ram",
    "ramplus_tl": "ramplus_tl",
    "karcher": "karcher",
    "multislerp": "multislerp",
    "nuslerp": "nuslerp",
    "nearswap": "nearswap",
    "arcee_fusion": "arcee_fusion",
    "passthrough": "passthrough",
}
TO_MERGEKIT = {ours: theirs for theirs, ours in FROM_MERGEKIT.items()}
# mergekit parameters that have no effect on our results (memory or speed knobs).
_IGNORED = {"int8_mask"}
# Methods without a base role for which mergekit still merges the base with the models.
_BASE_JOINS = {"karcher"}


def is_mergekit_config(data: Mapping[str, Any]) -> bool:
    """mergekit configs say ``merge_method``; ours say ``method``."""
    return "merge_method" in data and "method" not in data


def _model_path(item: Any, where: str, base_dir: str | Path | None = None) -> str:
    model = item.get("model") if isinstance(item, Mapping) else item
    if isinstance(model, Mapping):  # {model: {model: {path: ...}}} long form
        model = model.get("model", {}).get("path") if isinstance(model.get("model"), Mapping) else model.get("path")
    if not isinstance(model, str) or not model:
        raise RecipeError(f"{where}: expected a model path")
    if "+" in model:  # mergekit's "base+adapter": each side a local path or a hub id in the cache
        from merge_studio.core.lora.paths import split_adapted_path

        split = split_adapted_path(model, Path(base_dir) if base_dir is not None else None)
        if split is None and not _local(model, base_dir):
            split = tuple(model.rsplit("+", 1))  # type: ignore[assignment]
        if split is not None:
            return f"{resolve_model_reference(split[0], base_dir)}+{resolve_model_reference(split[1], base_dir)}"
    return resolve_model_reference(model, base_dir)  # a hub id: its folder in the local cache


def _without_ignored(params: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(params or {}).items() if k not in _IGNORED}


def _slices(data: Mapping[str, Any], source: str, base_dir: str | Path | None) -> list[dict[str, Any]]:
    """mergekit's ``slices:`` as recipe slices (sources with layer ranges, parameters per scope)."""
    out = []
    for s, sl in enumerate(data.get("slices") or []):
        if not isinstance(sl, Mapping):
            raise RecipeError(f"{source}: slices.{s}: expected a mapping with sources")
        if sl.get("base_model") not in (None, data.get("base_model")):
            raise RecipeError(f"{source}: slices.{s}: a base model per slice is not supported",
                              hint="use one base_model for the whole config")
        sources = []
        for j, src in enumerate(sl.get("sources") or []):
            rng = src.get("layer_range") if isinstance(src, Mapping) else None
            if not isinstance(rng, list) or len(rng) != 2:
                raise RecipeError(f"{source}: slices.{s}.sources.{j}: layer_range must be a list [start, end]")
            sources.append({"model": _model_path(src, f"{source}: slices.{s}.sources.{j}", base_dir), "layer_range": rng,
                            "params": _without_ignored(src.get("parameters"))})
        out.append({"sources": sources, "params": _without_ignored(sl.get("parameters"))})
    return out


def _local(ref: str, base_dir: str | Path | None) -> bool:
    path = Path(ref).expanduser()
    return (Path(base_dir) / path if base_dir is not None and not path.is_absolute() else path).exists()


def recipe_from_mergekit(data: Mapping[str, Any], *, source: str = "config", base_dir: str | Path | None = None) -> Recipe:
    """Translate a mergekit config into a :class:`Recipe` (errors name the field).

    ``base_dir`` is the config's folder: relative model paths are looked for there
    before a name like ``org/name`` is taken for a Hugging Face hub id.
    Parameters keep their scope: ``parameters`` at the top, on a model, on a slice or
    on a slice's source (the most specific wins when the merge runs).
    """
    method = data.get("merge_method")
    if method not in FROM_MERGEKIT:
        raise RecipeError(
            f"{source}: mergekit method {method!r} has no counterpart here",
            hint=f"supported: {', '.join(FROM_MERGEKIT)}",
        )
    if data.get("modules"):
        raise RecipeError(f"{source}: configs with modules: are not supported", hint="use models: or slices:")
    slices = _slices(data, source, base_dir)
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(data.get("models") or []):
        path = _model_path(item, f"{source}: models.{i}", base_dir)
        if path not in seen:
            seen.add(path)
            entries.append(ModelEntry(path=path, params=_without_ignored(item.get("parameters") if isinstance(item, Mapping) else None)))
    for sl in slices:
        for src in sl["sources"]:
            if src["model"] not in seen:
                seen.add(src["model"])
                entries.append(ModelEntry(path=src["model"]))
    base = data.get("base_model")
    base_path = _model_path({"model": base}, f"{source}: base_model", base_dir) if base else None
    ours = FROM_MERGEKIT[method]
    from merge_studio.core.methods.registry import get_method

    spec = get_method(ours)
    # mergekit's slerp interpolates from the base; make it the first model.
    if ours == "slerp" and base_path and base_path not in seen:
        entries.insert(0, ModelEntry(path=base_path))
    recipe_data: dict[str, Any] = {
        "method": ours,
        "models": [e.model_dump() for e in entries],
        "params": _without_ignored(data.get("parameters")),
    }
    if slices:
        recipe_data["slices"] = slices
    if base_path:
        recipe_data["base"] = base_path
    if data.get("dtype"):
        recipe_data["dtype"] = data["dtype"]
    if data.get("out_dtype"):
        recipe_data["dtype"] = data["out_dtype"]
    if spec.base != "unused" and base_path:
        # mergekit tolerates the base among models; methods with a base role take it separately.
        recipe_data["models"] = [m for m in recipe_data["models"] if m["path"] != base_path] or recipe_data["models"]
        recipe_data["on_mismatch"] = "copy_base"
    elif ours in _BASE_JOINS and base_path and base_path not in seen and not slices:
        # mergekit adds a base that is not among the models to the inputs; these methods use every input.
        recipe_data["models"].append(ModelEntry(path=base_path).model_dump())
    tokenizer = tokenizer_from_mergekit(data, source, lambda ref: resolve_model_reference(ref, base_dir))
    if tokenizer is not None:
        recipe_data["tokenizer"] = tokenizer
    if ours == "weighted_average" and not slices and "weight" not in recipe_data["params"] and any(
        "weight" not in m["params"] for m in recipe_data["models"]
    ):
        raise RecipeError(f"{source}: mergekit's linear needs a weight for every model")
    return Recipe.from_mapping(recipe_data, source=source)


def mergekit_from_recipe(recipe: Recipe) -> dict[str, Any]:
    """The mergekit config equivalent to ``recipe``; error when mergekit has no such method."""
    if recipe.method not in TO_MERGEKIT:
        raise RecipeError(
            f"method {recipe.method!r} has no mergekit equivalent",
            hint=f"exportable: {', '.join(sorted(TO_MERGEKIT))}",
        )
    from merge_studio.core.naming.blocks import is_block_weights

    blocked = [k for k, v in recipe.params.items() if is_block_weights(v)] + [
        k for e in recipe.models for k, v in e.params.items() if is_block_weights(v)]
    if blocked:
        raise RecipeError(
            f"{', '.join(sorted(set(blocked)))} is given per UNet block, which mergekit cannot express",
            hint="give a single value or a list over depth to export this recipe",
        )
    config: dict[str, Any] = {"merge_method": TO_MERGEKIT[recipe.method]}
    if recipe.base:
        config["base_model"] = recipe.base
    models = []
    for entry in recipe.models:
        item: dict[str, Any] = {"model": entry.path}
        if entry.params:
            item["parameters"] = dict(entry.params)
        models.append(item)
    base_listed = any(m["model"] == recipe.base for m in models)
    if recipe.method == "slerp" and recipe.base is None:
        config["base_model"] = recipe.models[0].path
    if recipe.base and recipe.spec.base != "unused" and not base_listed:
        models.append({"model": recipe.base})
    elif recipe.base and recipe.spec.base == "unused" and recipe.method != "slerp" and not base_listed:
        # mergekit would merge a base that is not among the models; ours only copies from it.
        config.pop("base_model", None)
    if recipe.slices:
        config["slices"] = _slices_to_mergekit(recipe, models)
    else:
        config["models"] = models
    if recipe.params:
        config["parameters"] = dict(recipe.params)
    if recipe.dtype:
        # merge-studio computes in compute_dtype and rounds once to dtype: mergekit's dtype and out_dtype.
        config["dtype"] = recipe.compute_dtype
        config["out_dtype"] = recipe.dtype
    config.update(tokenizer_to_mergekit(recipe.tokenizer))
    return config


def _slices_to_mergekit(recipe: Recipe, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recipe slices in mergekit's form, where a slices: config has no per-model section: each
    model's own parameters go onto its source in every slice (under the slice source's own)."""
    out = []
    if _stacking_form(recipe):  # the slices say exactly which layers of which models to stack
        own = {item["model"]: item.get("parameters", {}) for item in models}
        for sl in recipe.slices or []:
            sources = []
            for src in sl.sources:
                entry: dict[str, Any] = {"model": src.model, "layer_range": list(src.layer_range)}
                params = {**own.get(src.model, {}), **src.params}
                if params:
                    entry["parameters"] = params
                sources.append(entry)
            out.append({"sources": sources, **({"parameters": dict(sl.params)} if sl.params else {})})
        return out
    for sl in recipe.slices or []:
        given = {src.model: src for src in sl.sources}
        sources = []
        for item in models:
            src = given.get(item["model"])
            params = {**item.get("parameters", {}), **(src.params if src is not None else {})}
            entry: dict[str, Any] = {"model": item["model"], "layer_range": list(sl.layer_range)}
            if params:
                entry["parameters"] = params
            sources.append(entry)
        piece: dict[str, Any] = {"sources": sources}
        if sl.params:
            piece["parameters"] = dict(sl.params)
        out.append(piece)
    return out


def _stacking_form(recipe: Recipe) -> bool:
    """Slices that pick layers (passthrough, or ranges that differ, skip or repeat), not only set parameters."""
    slices = recipe.slices or []
    if recipe.method == "passthrough" or not all(sl.keeps_structure for sl in slices):
        return True
    return any(sl.layer_range[0] != (slices[i - 1].layer_range[1] if i else 0) for i, sl in enumerate(slices))


def mergekit_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(mergekit_from_recipe(recipe), sort_keys=False)
