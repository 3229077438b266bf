"""Slices in a recipe: parameters for a range of layers, in mergekit's ``slices:`` form.

A slice names, for each source model, the layers it covers and (optionally)
parameters that apply inside it. For now slices keep the network's layer structure:
every source of a slice covers the same layers and the slices cover the layers in
order, so they only set parameters per range (mergekit's common non-passthrough
form). Stacking layers into a model of a new depth builds on the same structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from merge_studio.errors import RecipeError

STACKING_HINT = "layer stacking (slices that repeat, skip or reorder layers) is not supported yet; give slices that cover the layers in order"


class SliceSource(BaseModel):
    """One model's layers in a slice, with parameters for that model inside the slice."""

    model_config = ConfigDict(extra="forbid")

    model: str
    layer_range: tuple[int, int]
    params: dict[str, Any] = Field(default_factory=dict)


class SliceEntry(BaseModel):
    """A range of layers and the parameters that apply inside it."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SliceSource] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_range(self) -> SliceEntry:
        ranges = {src.layer_range for src in self.sources}
        if len(ranges) != 1:
            raise ValueError(f"the sources of a slice cover different layers ({sorted(ranges)}); {STACKING_HINT}")
        start, end = self.layer_range
        if not 0 <= start < end:
            raise ValueError(f"layer_range [{start}, {end}] is empty or negative")
        return self

    @property
    def layer_range(self) -> tuple[int, int]:
        return self.sources[0].layer_range


def check_layer_order(slices: Sequence[SliceEntry]) -> list[tuple[int, int]]:
    """The slices' layer ranges when each starts where the previous ended, from layer 0."""
    ranges = [sl.layer_range for sl in slices]
    expected = 0
    for start, end in ranges:
        if start != expected:
            raise RecipeError(f"slice layer ranges {ranges} do not follow each other from layer 0", hint=STACKING_HINT)
        expected = end
    return ranges


def check_layer_structure(slices: Sequence[SliceEntry], n_layers: int) -> list[tuple[int, int]]:
    """The slices' layer ranges when they cover ``0..n_layers`` in order; :class:`RecipeError` otherwise."""
    ranges = check_layer_order(slices)
    expected = ranges[-1][1] if ranges else 0
    if expected != n_layers:
        raise RecipeError(f"slice layer ranges {ranges} cover {expected} layers but the models have {n_layers}",
                          hint=STACKING_HINT)
    return ranges
