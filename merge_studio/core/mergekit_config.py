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
}
TO_MERGEKIT = {ours: theirs for theirs, ours in FROM_MERGEKIT.items()}
# mergekit parameters that have no effect on our results (memory or speed knobs).
_IGNORED = {"int8_mask"}
# mergekit parameters that only some of our methods take; dropped where ours has no such knob.
_OPTIONAL = {"rescale"}


def is_mergekit_config(data: Mapping[str, Any]) -> bool:
    """mergekit configs say ``merge_method``; ours say ``method``."""
    return "merge_method" in data and "method" not in data


def _model_path(item: Any, where: str, base_dir: str | Path | None = None) -> str:
    model = item.get("model") if isinstance(item, Mapping) else item
    if isinstance(model, Mapping):  # {model: {model: {path: ...}}} long form
        model = model.get("model", {}).get("path") if isinstance(model.get("model"), Mapping) else model.get("path")
    if not isinstance(model, str) or not model:
        raise RecipeError(f"{where}: expected a model path")
    if "+" in model:
        raise RecipeError(f"{where}: LoRA suffixes ({model}) are not supported", hint="merge the LoRA into its base first")
    return resolve_model_reference(model, base_dir)  # a hub id: its folder in the local cache


def recipe_from_mergekit(data: Mapping[str, Any], *, source: str = "config", base_dir: str | Path | None = None) -> Recipe:
    """Translate a mergekit config into a :class:`Recipe` (errors name the field).

    ``base_dir`` is the config's folder: relative model paths are looked for there
    before a name like ``org/name`` is taken for a Hugging Face hub id.
    """
    method = data.get("merge_method")
    if method not in FROM_MERGEKIT:
        raise RecipeError(
            f"{source}: mergekit method {method!r} has no counterpart here",
            hint=f"supported: {', '.join(FROM_MERGEKIT)}",
        )
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    sources: list[Any] = list(data.get("models") or [])
    for s, sl in enumerate(data.get("slices") or []):
        for src in sl.get("sources", []):
            rng = src.get("layer_range")
            if rng is not None and not isinstance(rng, list):
                raise RecipeError(f"{source}: slices.{s}: layer_range must be a list")
            sources.append(src)
        if len(data.get("slices") or []) > 1:
            raise RecipeError(
                f"{source}: configs with several slices (layer stacking) are not supported",
                hint="use one slice covering all layers, or a models: list",
            )
    base = data.get("base_model")
    base_path = _model_path({"model": base}, f"{source}: base_model", base_dir) if base else None
    for i, item in enumerate(sources):
        path = _model_path(item, f"{source}: models.{i}", base_dir)
        if path in seen:
            continue
        seen.add(path)
        params = dict(item.get("parameters") or {}) if isinstance(item, Mapping) else {}
        for key in _IGNORED & params.keys():
            params.pop(key)
        entries.append(ModelEntry(path=path, params=params))
    ours = FROM_MERGEKIT[method]
    from merge_studio.core.methods.registry import get_method

    known = {f.alias or n for n, f in get_method(ours).params.model_fields.items()}
    params = {
        k: v
        for k, v in dict(data.get("parameters") or {}).items()
        if k not in _IGNORED and (k not in _OPTIONAL or k in known)
    }
    # mergekit's linear and slerp ignore the base for weighting; task methods skip it.
    if ours == "slerp" and base_path and base_path not in seen:
        entries.insert(0, ModelEntry(path=base_path))
    recipe_data: dict[str, Any] = {
        "method": ours,
        "models": [e.model_dump() for e in entries],
        "params": params,
    }
    if base_path:
        recipe_data["base"] = base_path
    if data.get("dtype"):
        recipe_data["dtype"] = data["dtype"]
    if data.get("out_dtype"):
        recipe_data["dtype"] = data["out_dtype"]
    if ours in ("task_arithmetic", "ties", "dare_linear", "dare_ties", "model_stock"):
        # mergekit tolerates the base among models; our task methods take it separately.
        recipe_data["models"] = [m for m in recipe_data["models"] if m["path"] != base_path]
        recipe_data["on_mismatch"] = "copy_base"
    tokenizer = tokenizer_from_mergekit(data, source, lambda ref: resolve_model_reference(ref, base_dir))
    if tokenizer is not None:
        recipe_data["tokenizer"] = tokenizer
    if ours == "weighted_average" and any("weight" not in m["params"] for m in recipe_data["models"]):
        raise RecipeError(f"{source}: mergekit's linear needs a weight for every model")
    return Recipe.from_mapping(recipe_data, source=source)


def mergekit_from_recipe(recipe: Recipe) -> dict[str, Any]:
    """The mergekit config equivalent to ``recipe``; error when mergekit has no such method."""
    if recipe.method not in TO_MERGEKIT:
        raise RecipeError(
            f"method {recipe.method!r} has no mergekit equivalent",
            hint=f"exportable: {', '.join(sorted(TO_MERGEKIT))}",
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
    if recipe.method == "slerp" and recipe.base is None:
        config["base_model"] = recipe.models[0].path
    if recipe.base and recipe.method not in ("slerp", "weighted_average") and all(
        m["model"] != recipe.base for m in models
    ):
        models.append({"model": recipe.base})
    config["models"] = models
    if recipe.params:
        config["parameters"] = dict(recipe.params)
    if recipe.dtype:
        config["dtype"] = recipe.dtype
    config.update(tokenizer_to_mergekit(recipe.tokenizer))
    return config


def mergekit_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(mergekit_from_recipe(recipe), sort_keys=False)
