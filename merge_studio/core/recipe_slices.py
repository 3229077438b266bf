"""Slices in a recipe: parameters for a range of layers, in mergekit's ``slices:`` form.

A slice names, for each source model, the layers it covers and (optionally)
parameters that apply inside it. Two forms share this structure:

- slices that *keep the layer structure* (every source covers the same layers and the
  slices cover all layers in order) only set parameters per range of layers;
- slices that *stack* (sources with different ranges, ranges that repeat, skip or
  reorder layers) build a model of a new depth: output layer k of a slice is made
  from layer ``start + k`` of each of its sources (see :mod:`merge_studio.core.stacking`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from merge_studio.errors import RecipeError

STACKING_HINT = "every source of a slice gives the same number of layers (output layer k of the slice is made from each source's k-th layer)"


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
    def _same_length(self) -> SliceEntry:
        for src in self.sources:
            start, end = src.layer_range
            if not 0 <= start < end:
                raise ValueError(f"layer_range [{start}, {end}] of {src.model} is empty or negative")
        lengths = {src.layer_range[1] - src.layer_range[0] for src in self.sources}
        if len(lengths) != 1:
            ranges = ", ".join(f"{src.model} {list(src.layer_range)}" for src in self.sources)
            raise ValueError(f"the sources of a slice give different numbers of layers ({ranges}); {STACKING_HINT}")
        return self

    @property
    def layer_range(self) -> tuple[int, int]:
        """The first source's range (all sources' when the slice keeps the structure)."""
        return self.sources[0].layer_range

    @property
    def length(self) -> int:
        """How many output layers the slice makes."""
        start, end = self.layer_range
        return end - start

    @property
    def keeps_structure(self) -> bool:
        """Every source covers the same layers."""
        return len({src.layer_range for src in self.sources}) == 1


def keeps_layer_structure(slices: Sequence[SliceEntry], n_layers: int) -> bool:
    """Whether the slices only set parameters per range: same ranges per slice, covering
    ``0..n_layers`` in order. Otherwise they stack layers into a model of a new depth."""
    expected = 0
    for sl in slices:
        if not sl.keeps_structure or sl.layer_range[0] != expected:
            return False
        expected = sl.layer_range[1]
    return expected == n_layers


def output_ranges(slices: Sequence[SliceEntry]) -> list[tuple[int, int]]:
    """Each slice's layers in the output: the slices one after the other from layer 0."""
    out, start = [], 0
    for sl in slices:
        out.append((start, start + sl.length))
        start += sl.length
    return out
