"""What a family's naming changes in a merge plan: block weights must fit its blocks, and
parts (VAE, text encoder) can be kept whole from one input instead of being merged."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from merge_studio.core.naming.base import LayerNaming
from merge_studio.core.naming.blocks import block_mapping, is_block_weights
from merge_studio.errors import RecipeError

BASE_SOURCE = "base"


def _block_values(raw: Any) -> Iterator[Mapping[str, Any]]:
    if is_block_weights(raw):
        yield raw
    elif isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, Mapping):
                yield from _block_values(entry.get("value"))


def check_block_weights(params: Mapping[str, Any], naming: LayerNaming, where: str) -> None:
    """Every block-weight value in ``params`` must name this family's blocks, in its count."""
    for key, raw in params.items():
        for value in _block_values(raw):
            if not naming.blocks:
                raise RecipeError(
                    f"{where}.{key} gives block weights, but these checkpoints have no named blocks "
                    f"(they look like a {naming.label.lower()})",
                    hint="block weights need a Stable Diffusion UNet (input_blocks, middle_block, output_blocks); "
                    "use a list of numbers for a gradient over depth instead",
                )
            try:
                block_mapping(value, naming.blocks)
            except RecipeError as exc:
                raise RecipeError(f"{where}.{key}: {exc.message} [{naming.label}]", hint=exc.hint) from None


def resolve_part_sources(
    part_sources: Mapping[str, Any],
    naming: LayerNaming,
    models: Sequence[Any],
    model_paths: Sequence[str],
    base: Any | None,
    same_path: Any,
) -> dict[str, Any]:
    """``{part key: checkpoint}`` for the parts kept from one input.

    A source is ``"base"``, a model's index in the recipe's ``models`` list, or a path
    that is one of the inputs.
    """
    kept: dict[str, Any] = {}
    for part_key, source in part_sources.items():
        if naming.part(part_key) is None:
            known = ", ".join(p.key for p in naming.parts) or "none"
            raise RecipeError(
                f"part_sources names part {part_key!r}, which these checkpoints do not have "
                f"({naming.label}; parts: {known})",
            )
        if source == BASE_SOURCE:
            if base is None:
                raise RecipeError(f"part_sources.{part_key} is 'base', but no base model is set")
            kept[part_key] = base
        elif isinstance(source, int) and not isinstance(source, bool):
            if not 0 <= source < len(models):
                raise RecipeError(f"part_sources.{part_key} is model {source}, but there are {len(models)} models")
            kept[part_key] = models[source]
        else:
            match = [ck for ck, p in zip(models, model_paths, strict=True) if same_path(p, str(source))]
            if not match and base is not None and same_path(str(base.path), str(source)):
                match = [base]
            if not match:
                raise RecipeError(
                    f"part_sources.{part_key} is {Path(str(source)).name}, which is not one of the inputs",
                    hint="name one of the models (its path or its index) or 'base'",
                )
            kept[part_key] = match[0]
    return kept
