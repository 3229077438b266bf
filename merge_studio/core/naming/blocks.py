"""Block weights: one value per named block, as supermerger and A1111's merge-block-weighted use.

In a recipe a parameter takes block weights as a mapping with a ``blocks`` key::

    alpha: {blocks: "0,1,1,1,1,1,1,1,1,1,1,1,1,0.5,0,0,0,0,0,0,0,0,0,0,0,0"}   # text form
    alpha: {blocks: [0, 1, 1, …]}                                               # a list
    alpha: {blocks: {IN00: 1, M00: 0.5, OUT11: 0}}                              # by name

A list or text gives every block in order, ``BASE`` first: 26 values for SD 1.x/2.x
(BASE, IN00–IN11, M00, OUT00–OUT11), 20 for SDXL (BASE, IN00–IN08, M00,
OUT00–OUT08). One value fewer (25 or 19, the A1111 extension's form) leaves BASE
to ``base: V``. Blocks a mapping does not name, and BASE when no ``base`` is
given, take the parameter's default, like a filter that matches nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from merge_studio.errors import RecipeError

BLOCKS_KEY = "blocks"
BASE_KEY = "base"
_SPLIT = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class BlockRef:
    """A tensor's named block and the family's ordered list of blocks (for block weights)."""

    name: str
    blocks: tuple[str, ...]

    @property
    def index(self) -> int:
        return self.blocks.index(self.name)


def is_block_weights(value: Any) -> bool:
    """A mapping with a ``blocks`` key (and at most a ``base`` besides)."""
    return isinstance(value, Mapping) and BLOCKS_KEY in value


def parse_block_text(text: str) -> list[float]:
    """``"0.5, 1,1 …"`` -> numbers; commas and/or spaces separate them (the tools' text form)."""
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    values = []
    for i, part in enumerate(parts):
        try:
            value = float(part)
        except ValueError:
            raise RecipeError(f"block weight {i + 1} ({part!r}) is not a number",
                              hint="write the weights as numbers separated by commas") from None
        if not math.isfinite(value):
            raise RecipeError(f"block weight {i + 1} is {part}, not a finite number")
        values.append(value)
    if not values:
        raise RecipeError("the block weights are empty", hint="write one number per block, separated by commas")
    return values


def format_block_text(values: Sequence[float]) -> str:
    """The comma-separated text form (short numbers: 1, 0.5, 0.916667)."""
    return ",".join(f"{float(v):.6g}" for v in values)


@lru_cache(maxsize=256)
def _parsed(raw: Any) -> tuple[tuple[float, ...] | None, tuple[tuple[str, float], ...] | None]:
    if isinstance(raw, str):
        return tuple(parse_block_text(raw)), None
    if isinstance(raw, tuple):
        if raw and isinstance(raw[0], tuple):
            return None, raw
        return raw, None
    raise RecipeError(f"block weights must be a list, a comma-separated text or a mapping, not {type(raw).__name__}")


def _freeze(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return tuple((str(k), v) for k, v in raw.items())
    if isinstance(raw, list | tuple):
        return tuple(raw)
    return raw


def listed_values(value: Mapping[str, Any]) -> tuple[list[float] | None, dict[str, float] | None]:
    """The values as given: a positional list, or a mapping of block names."""
    values, named = _parsed(_freeze(value[BLOCKS_KEY]))
    if values is not None:
        for i, v in enumerate(values):
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise RecipeError(f"block weight {i + 1} ({v!r}) is not a number")
        return list(values), None
    assert named is not None
    for key, v in named:
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise RecipeError(f"block weight {key} ({v!r}) is not a number")
    return None, {k.upper(): float(v) for k, v in named}


def leaf_block_values(value: Mapping[str, Any]) -> list[float]:
    """Every number the block weights can produce (for validation before the family is known)."""
    values, named = listed_values(value)
    leaves = list(values if values is not None else (named or {}).values())
    if BASE_KEY in value:
        leaves.append(value[BASE_KEY])
    return leaves


def block_mapping(value: Mapping[str, Any], blocks: Sequence[str]) -> dict[str, float]:
    """Values by block name for a family's ``blocks`` (BASE first); raises when they do not fit."""
    values, named = listed_values(value)
    unknown = [k for k in value if k not in (BLOCKS_KEY, BASE_KEY)]
    if unknown:
        raise RecipeError(f"block weights: unknown key {unknown[0]!r}", hint="use blocks: and optionally base:")
    out: dict[str, float] = {}
    if named is not None:
        bad = [k for k in named if k not in blocks]
        if bad:
            raise RecipeError(f"block weights name {', '.join(bad)}, which this model does not have",
                              hint=f"its blocks are {', '.join(blocks)}")
        out.update(named)
    else:
        assert values is not None
        if len(values) == len(blocks):
            out.update(zip(blocks, values, strict=True))
        elif len(values) == len(blocks) - 1:
            out.update(zip(blocks[1:], values, strict=True))
        else:
            raise RecipeError(
                f"{len(values)} block weights given, but this model has {len(blocks)} blocks "
                f"({blocks[0]}, {blocks[1]}…{blocks[-1]})",
                hint=f"give {len(blocks)} values, BASE first (or {len(blocks) - 1} without BASE, plus base: V)",
            )
    if BASE_KEY in value:
        base = value[BASE_KEY]
        if not isinstance(base, int | float) or isinstance(base, bool):
            raise RecipeError(f"block weights: base ({base!r}) is not a number")
        out["BASE"] = float(base)
    return out


def block_weight(value: Mapping[str, Any], ref: BlockRef) -> float | None:
    """The value for one tensor's block, ``None`` when the weights leave that block open."""
    return block_mapping(value, ref.blocks).get(ref.name)
