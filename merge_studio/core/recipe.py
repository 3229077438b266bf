"""Recipes: what to merge, how, and where to write it — one YAML file for the GUI and the CLI.

A recipe is validated by the same pydantic models the method declares, so the
window, the command line and a file on disk reject exactly the same inputs.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from merge_studio.core.safe_yaml import compose_yaml, construct_yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from merge_studio.core.hf.settings import TokenizerSettings
from merge_studio.core.methods.layered import format_validation_error
from merge_studio.core.methods.registry import get_method
from merge_studio.core.methods.spec import MethodSpec
from merge_studio.core.recipe_slices import SliceEntry
from merge_studio.errors import MergeStudioError, RecipeError

RECIPE_VERSION = 1
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: str | int | None) -> int | None:
    """``"5GB"`` -> 5_000_000_000; ints are bytes; ``None`` means no limit."""
    if value is None or isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    unit = (m.group(2) or "").lower() if m else None
    if not m or unit not in _UNITS:
        raise RecipeError(f"cannot read size {value!r}", hint="write e.g. 5GB, 500MB or 2GiB")
    return int(float(m.group(1)) * _UNITS[unit])


class ModelEntry(BaseModel):
    """One input model and its per-model parameters."""

    model_config = ConfigDict(extra="forbid")

    path: str
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(BaseModel):
    """A complete, reproducible description of a merge."""

    model_config = ConfigDict(extra="forbid")

    recipe_version: int = RECIPE_VERSION
    method: str
    models: list[ModelEntry] = Field(min_length=1)
    base: str | None = Field(None, description="Base model path (task vectors are taken against it).")
    params: dict[str, Any] = Field(default_factory=dict)
    slices: list[SliceEntry] | None = Field(
        None, description="Parameters for ranges of layers (mergekit's slices); the most specific scope wins."
    )
    output: str | None = None
    dtype: str | None = Field(None, description="Output dtype; default: the inputs' dtype.")
    compute_dtype: str = "float32"
    device: str = "auto"
    shard_size: str | int | None = Field(None, description="Split the output into shards above this size.")
    on_mismatch: Literal["error", "copy_base", "skip"] = Field(
        "error",
        description="What to do with tensors that are missing from some models or differ in shape: "
        "stop with a report (error), copy them from the base or first model that has them "
        "(copy_base), or leave them out (skip).",
    )
    allow_non_finite: bool = Field(
        False,
        description="Merge inputs holding NaN or infinite values instead of stopping with an error.",
    )
    part_sources: dict[str, str | int] = Field(
        default_factory=dict,
        description="Parts copied unchanged from one input instead of merged (Stable Diffusion: "
        "vae, text_encoder, unet), each to a model's path, its index in models, or 'base'.",
    )
    seed: int = 0
    arch: str | None = None
    data: dict[str, Any] | None = None
    hash_sources: bool = True
    tokenizer: TokenizerSettings | None = Field(
        None, description="Output vocabulary and tokenizer for Hugging Face folders: base (default), union or a model path."
    )

    @field_validator("dtype", "compute_dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        from merge_studio.core.dtypes import canonical_dtype_name

        try:
            canonical_dtype_name(value)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("shard_size")
    @classmethod
    def _readable_size(cls, value: str | int | None) -> str | int | None:
        try:
            parse_size(value)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _method_params(self) -> Recipe:
        try:
            spec = get_method(self.method)
        except MergeStudioError as exc:
            raise ValueError(str(exc)) from None
        from merge_studio.core.param_scopes import check_slice_models, sort_recipe

        try:
            sort_recipe(spec, self.params, self.models, self.slices or [])
            check_slice_models(self.slices or [], [e.path for e in self.models], self.base)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        if self.data is not None:
            from merge_studio.core.evaluate.data import DataSpec

            try:
                DataSpec.model_validate(self.data)
            except ValidationError as exc:
                raise ValueError(format_validation_error(exc, "data")) from None
        self.method = spec.name  # aliases (mergekit's "linear") become the canonical name
        return self

    # --- derived ---------------------------------------------------------------------
    @property
    def spec(self) -> MethodSpec:
        return get_method(self.method)

    @property
    def shard_bytes(self) -> int | None:
        return parse_size(self.shard_size)

    def resolved(self, base_dir: str | Path) -> Recipe:
        """A copy whose relative paths are taken against ``base_dir`` (the recipe's folder)."""
        root = Path(base_dir)

        def fix(p: str | None) -> str | None:
            if p is None:
                return None
            if "+" in p:  # "base+adapter": each side against the recipe's folder
                from merge_studio.core.lora.paths import split_adapted_path

                split = split_adapted_path(p, root)
                if split is not None:
                    return f"{fix(split[0])}+{fix(split[1])}"
            path = Path(p).expanduser()
            return str(path if path.is_absolute() else (root / path))

        slices = None
        if self.slices is not None:
            slices = [
                sl.model_copy(update={"sources": [src.model_copy(update={"model": fix(src.model)}) for src in sl.sources]})
                for sl in self.slices
            ]
        return self.model_copy(
            update={
                "models": [e.model_copy(update={"path": fix(e.path)}) for e in self.models],
                "base": fix(self.base),
                "output": fix(self.output),
                "tokenizer": self.tokenizer.with_paths(lambda p: fix(p) or p) if self.tokenizer else None,
                "slices": slices,
                "part_sources": {
                    k: v if isinstance(v, int) or v == "base" else fix(v) for k, v in self.part_sources.items()
                },
            }
        )

    def with_learned(self, report: Mapping[str, Any] | None) -> Recipe:
        """This recipe with the parameters a data-aware merge learned (its report's
        ``learned_params``, e.g. AdaMerging's coefficients), so it re-runs without data."""
        learned = (report or {}).get("learned_params")
        if not learned:
            return self
        return self.model_copy(update={"params": {**self.params, **learned}})

    # --- files -----------------------------------------------------------------------
    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=False)
        # Keep files short: drop empty optional sections but keep what a reader needs.
        for key in ("arch", "data", "base", "output", "dtype", "shard_size", "tokenizer", "slices"):
            if data.get(key) is None:
                data.pop(key, None)
        if self.tokenizer is not None:
            data["tokenizer"] = self.tokenizer.to_data()
        if not data.get("part_sources"):
            data.pop("part_sources", None)
        for entry in data["models"]:
            if not entry["params"]:
                entry.pop("params")
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)

    def save(self, path: str | Path) -> Path:
        """Write the recipe atomically (temporary file, then rename)."""
        return write_text_atomic(Path(path), self.to_yaml())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "recipe", lines: Mapping[tuple, int] | None = None) -> Recipe:
        """Validate a mapping; errors name the field, the problem and the line when known."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            messages = []
            for err in exc.errors():
                loc = tuple(err["loc"])
                line = _line_for(lines or {}, loc)
                where = ".".join(str(x) for x in loc)
                msg = err["msg"].removeprefix("Value error, ")
                prefix = f"{source}{f':{line}' if line else ''}"
                messages.append(f"{prefix}: {where}: {msg}" if where else f"{prefix}: {msg}")
            raise RecipeError("; ".join(messages)) from None


def _line_for(lines: Mapping[tuple, int], loc: tuple) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _node_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    out: dict[tuple, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out.update(_node_lines(value, (*prefix, key.value)))
            out[(*prefix, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_node_lines(item, (*prefix, i)))
    return out


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML safely and keep line numbers for error messages."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from exc
    try:
        node = compose_yaml(text)
        data = construct_yaml(node)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path.name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path.name}: expected a mapping at the top of the file")
    return data, (_node_lines(node) if node is not None else {})


def load_recipe(path: str | Path) -> Recipe:
    """Read our recipe or a mergekit config (told apart by content); paths become absolute."""
    from merge_studio.core.mergekit_config import is_mergekit_config, recipe_from_mergekit

    p = Path(path).expanduser()
    data, lines = read_yaml(p)
    if is_mergekit_config(data):
        recipe = recipe_from_mergekit(data, source=p.name, base_dir=p.resolve().parent)
    else:
        recipe = Recipe.from_mapping(data, source=p.name, lines=lines)
    return recipe.resolved(p.resolve().parent)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` next to ``path`` under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
