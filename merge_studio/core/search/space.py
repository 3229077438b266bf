"""What a coefficient search may change in a recipe, and how a trial's numbers become a recipe.

A parameter is written ``NAME=LO:HI`` with optional flags:

* ``lambda=0:1.5`` — a method parameter, a float in [0, 1.5];
* ``density=0.1:1:log`` — sampled on a log scale; ``k=1:8:int`` — an integer;
* ``weight=0:1`` where ``weight`` is a per-model parameter — one dimension per model
  (``models.0.weight``, ``models.1.weight``, …); ``models.1.weight=0:1`` — one model's only;
* ``lambda=0:1@3`` — a per-layer gradient of 3 anchors (mergekit's list interpolated
  over depth), one dimension per anchor.

Every value a trial draws goes through the method's own validation when the recipe is
planned, so a range outside a parameter's bounds fails the first trial with the
method's message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from merge_studio.errors import MergeStudioError

_SPEC = re.compile(r"^\s*(?P<name>[A-Za-z_][\w.]*)\s*=\s*(?P<lo>[^:@]+):(?P<hi>[^:@]+)"
                   r"(?::(?P<flag>log|int))?(?:@(?P<anchors>\d+))?\s*$")
_MODEL = re.compile(r"^models\.(\d+)\.(\w+)$")


class SearchError(MergeStudioError):
    """A search cannot be set up or run as asked."""


@dataclass(frozen=True)
class Dimension:
    """One number a trial draws, and where it goes in the recipe."""

    key: str  # the name Optuna stores, e.g. "lambda", "models.0.weight", "lambda@1"
    param: str
    low: float
    high: float
    kind: Literal["float", "int"] = "float"
    log: bool = False
    model: int | None = None  # index in recipe.models for a per-model parameter
    anchor: int | None = None  # position in a per-layer gradient
    anchors: int = 1


@dataclass(frozen=True)
class ParamRange:
    """One ``NAME=LO:HI[:log|:int][@N]`` as the user wrote it."""

    name: str
    low: float
    high: float
    kind: Literal["float", "int"] = "float"
    log: bool = False
    anchors: int = 1

    @classmethod
    def parse(cls, text: str) -> ParamRange:
        m = _SPEC.match(text)
        if not m:
            raise SearchError(f"cannot read search parameter {text!r}",
                              hint="write NAME=LO:HI, e.g. lambda=0:1.5, weight=0:1, density=0.1:1:log, lambda=0:1@3")
        try:
            low, high = float(m["lo"]), float(m["hi"])
        except ValueError:
            raise SearchError(f"the range of {m['name']} must be two numbers: {text!r}") from None
        if not low < high:
            raise SearchError(f"the range of {m['name']} is empty: {low} is not below {high}")
        if m["flag"] == "log" and low <= 0:
            raise SearchError(f"a log-scale range must be above 0: {text!r}")
        anchors = int(m["anchors"] or 1)
        if anchors < 1 or anchors > 64:
            raise SearchError(f"a per-layer gradient takes 1 to 64 anchors, got {anchors}")
        return cls(m["name"], low, high, "int" if m["flag"] == "int" else "float", m["flag"] == "log", anchors)


@dataclass(frozen=True)
class SearchSpace:
    """The ranges of a search; :meth:`dimensions` expands them for one recipe."""

    ranges: tuple[ParamRange, ...]

    @classmethod
    def parse(cls, texts: Sequence[str]) -> SearchSpace:
        if not texts:
            raise SearchError("nothing to search", hint="give at least one --param NAME=LO:HI")
        ranges = tuple(ParamRange.parse(t) for t in texts)
        names = [r.name for r in ranges]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SearchError(f"search parameter given twice: {', '.join(dupes)}")
        return cls(ranges)

    def to_strings(self) -> list[str]:
        out = []
        for r in self.ranges:
            flag = ":log" if r.log else ":int" if r.kind == "int" else ""
            out.append(f"{r.name}={r.low:g}:{r.high:g}{flag}" + (f"@{r.anchors}" if r.anchors > 1 else ""))
        return out

    def dimensions(self, method: str, n_models: int) -> list[Dimension]:
        """Every number a trial draws for ``method`` merging ``n_models`` models."""
        from merge_studio.core.methods.registry import get_method

        spec = get_method(method)
        method_keys = _keys(spec.params)
        model_keys = _keys(spec.model_params)
        dims: list[Dimension] = []
        for r in self.ranges:
            m = _MODEL.match(r.name)
            if m:
                index, param = int(m.group(1)), m.group(2)
                if param not in model_keys:
                    raise SearchError(f"{spec.label} has no per-model parameter {param!r}",
                                      hint=f"per-model parameters: {', '.join(sorted(model_keys)) or 'none'}")
                if index >= n_models:
                    raise SearchError(f"{r.name}: the recipe has {n_models} models (numbered from 0)")
                targets = [(index, param)]
            elif r.name in method_keys:
                targets = [(None, r.name)]
            elif r.name in model_keys:
                targets = [(i, r.name) for i in range(n_models)]
            else:
                known = sorted(method_keys | model_keys)
                raise SearchError(f"{spec.label} has no parameter {r.name!r}", hint=f"parameters: {', '.join(known)}")
            for model, param in targets:
                base = param if model is None else f"models.{model}.{param}"
                for a in range(r.anchors):
                    key = base if r.anchors == 1 else f"{base}@{a}"
                    dims.append(Dimension(key, param, r.low, r.high, r.kind, r.log, model,
                                          a if r.anchors > 1 else None, r.anchors))
        return dims


def _keys(model: Any) -> set[str]:
    """A pydantic model's recipe keys (aliases such as ``lambda`` where they exist)."""
    return {f.alias or n for n, f in model.model_fields.items()}


def apply_values(recipe_data: Mapping[str, Any], dims: Sequence[Dimension], values: Mapping[str, float]) -> dict[str, Any]:
    """A copy of a recipe mapping with a trial's values put in place."""
    data = {**recipe_data, "params": dict(recipe_data.get("params") or {})}
    data["models"] = [{**m, "params": dict(m.get("params") or {})} for m in recipe_data["models"]]
    gradients: dict[tuple[int | None, str], list[float]] = {}
    for d in dims:
        value = values[d.key]
        value = int(round(value)) if d.kind == "int" else float(value)
        target = data["params"] if d.model is None else data["models"][d.model]["params"]
        if d.anchor is None:
            target[d.param] = value
        else:
            grad = gradients.setdefault((d.model, d.param), [0.0] * d.anchors)
            grad[d.anchor] = value
            target[d.param] = grad
    return data
