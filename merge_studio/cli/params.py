"""Parsing ``--param key=value`` arguments: values are read as YAML, so numbers,
booleans and lists (``[0, 0.5, 1]``) mean the same as in a recipe file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from merge_studio.core.safe_yaml import load_yaml
from merge_studio.errors import RecipeError


def parse_value(text: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def parse_assignments(items: Sequence[str] | None, option: str = "--param") -> dict[str, Any]:
    """``["t=0.3", "normalize=false"]`` -> ``{"t": 0.3, "normalize": False}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"{option} {item!r}: expected NAME=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def parse_model_params(items: Sequence[str] | None, n_models: int) -> list[dict[str, Any]]:
    """``--model-param weight=0.3,0.7`` gives each model its own value, in order."""
    per_model: list[dict[str, Any]] = [{} for _ in range(n_models)]
    for key, value in parse_assignments(items, "--model-param").items():
        values = value if isinstance(value, list) else [parse_value(v) for v in str(value).split(",")]
        if len(values) == 1:
            values = values * n_models
        if len(values) != n_models:
            raise RecipeError(f"--model-param {key}: {len(values)} values for {n_models} models")
        for params, v in zip(per_model, values, strict=True):
            params[key] = v
    return per_model
