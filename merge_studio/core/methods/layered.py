"""Parameters that vary through the network.

A parameter value in a recipe may be

* a plain value: ``0.5``;
* a list of numbers, interpolated linearly over layer depth (mergekit's
  "gradient"): ``[0, 0.5, 1]`` fades from 0 at the first layer to 1 at the last;
  a list of on/off values or words steps through them instead (``[true, false]``:
  on in the first half of the layers);
* a list of ``{filter: PATTERN, value: V}`` entries, tried in order, where an entry
  without ``filter`` matches everything: ``[{filter: attn, value: 0.3}, {value: 0.7}]``.
  A pattern with ``*``, ``?`` or ``[`` is a glob on the tensor name; otherwise it
  matches when it occurs in the name (as in mergekit). ``V`` may itself be a list;
* block weights, one value per named block of the family (SD's BASE, IN00…OUT11):
  ``{blocks: "0,1,1,…"}`` (see :mod:`merge_studio.core.naming.blocks`).

Where a tensor sits on a gradient follows mergekit: the k-th of n layers at
k/(n − 1) (at 1 when there is one layer), and every tensor outside the numbered
layers (embeddings, the final norm, the output head) at 0, so it takes the
gradient's first value. :mod:`merge_studio.core.param_scopes` places tensors
inside slices the same way.

:func:`resolve_params` turns such a mapping into plain values for one tensor, and
:func:`validate_layered` checks every value a recipe could produce against the
method's pydantic model before a merge starts.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from merge_studio.core.naming.blocks import BlockRef, block_weight, is_block_weights, leaf_block_values
from merge_studio.errors import RecipeError

MISSING = object()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_gradient(value: Any) -> bool:
    """A list of at least two numbers, interpolated over depth."""
    return isinstance(value, list) and len(value) >= 2 and all(_is_number(v) for v in value)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str))


def is_steps(value: Any) -> bool:
    """A list of at least two plain values that are not all numbers (on/off, words): stepped through."""
    return isinstance(value, list) and len(value) >= 2 and all(_is_scalar(v) for v in value) and not is_gradient(value)


def is_filtered(value: Any) -> bool:
    """A list of ``{filter, value}`` entries."""
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, Mapping) for v in value)


def is_layered(value: Any) -> bool:
    """Whether a raw value varies by tensor (gradient, steps, filters or block weights)."""
    return is_gradient(value) or is_steps(value) or is_filtered(value) or is_block_weights(value)


def name_matches(pattern: str, name: str) -> bool:
    """Glob when the pattern has wildcards, substring otherwise."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def interpolate(values: list[float], depth: float) -> float:
    """Piecewise-linear value at ``depth`` in [0, 1] through evenly spaced anchors."""
    pos = min(max(depth, 0.0), 1.0) * (len(values) - 1)
    i = min(int(math.floor(pos)), len(values) - 2)
    frac = pos - i
    return float(values[i] * (1.0 - frac) + values[i + 1] * frac)


def resolve_value(value: Any, name: str, depth: float, block: BlockRef | None = None) -> Any:
    """The plain value a raw parameter takes for tensor ``name`` at ``depth`` (in ``block``)."""
    if is_filtered(value):
        for entry in value:
            pattern = entry.get("filter")
            if pattern is None or name_matches(str(pattern), name):
                return resolve_value(entry.get("value"), name, depth, block)
        return MISSING
    if is_block_weights(value):
        weight = block_weight(value, block) if block is not None else None
        return MISSING if weight is None else weight
    if is_gradient(value):
        return interpolate(value, depth)
    if is_steps(value):
        return value[int(min(max(depth, 0.0), 1.0) * (len(value) - 1))]
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def resolve_params(raw: Mapping[str, Any], name: str, depth: float, block: BlockRef | None = None) -> dict[str, Any]:
    """Plain values for one tensor; filtered parameters that match nothing take their default."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        resolved = resolve_value(value, name, depth, block)
        if resolved is not MISSING:
            out[key] = resolved
    return out


def leaf_values(value: Any) -> list[Any]:
    """Every plain value a raw parameter can produce (anchors of gradients included)."""
    if is_filtered(value):
        leaves: list[Any] = []
        for entry in value:
            leaves.extend(leaf_values(entry.get("value")))
        return leaves
    if is_block_weights(value):
        try:
            return leaf_block_values(value)
        except RecipeError:
            return [value]  # validation then names the problem
    if is_gradient(value) or is_steps(value):
        return list(value)
    if isinstance(value, list) and len(value) == 1:
        return [value[0]]
    return [value]


def _field_name(model: type[BaseModel], key: str) -> str | None:
    """Field name for ``key``, which may be an alias (``lambda`` for ``lambda_``)."""
    for fname, field in model.model_fields.items():
        if key in (fname, field.alias):
            return fname
    return None


def format_validation_error(exc: ValidationError, where: str) -> str:
    """One readable line per problem: ``where.field: message``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{where}{'.' + loc if loc else ''}: {err['msg']}")
    return "; ".join(parts)


def validate_layered(model: type[BaseModel], raw: Mapping[str, Any], where: str) -> None:
    """Check that every value ``raw`` can produce is valid for ``model``.

    Raises :class:`RecipeError` naming the field and the bound it breaks.
    """
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{where}: expected a mapping of parameter names to values")
    plain: dict[str, Any] = {}
    variants: list[tuple[str, Any]] = []
    for key, value in raw.items():
        fname = _field_name(model, key)
        if fname is None:
            known = ", ".join(f.alias or n for n, f in model.model_fields.items()) or "none"
            raise RecipeError(f"{where}: unknown parameter {key!r}", hint=f"parameters: {known}")
        extra = model.model_fields[fname].json_schema_extra
        per_layer = extra.get("per_layer", True) if isinstance(extra, dict) else True
        if is_layered(value) and not per_layer:
            raise RecipeError(f"{where}.{key}: this parameter cannot vary by layer; give one value")
        if is_block_weights(value):
            try:
                leaf_block_values(value)
            except RecipeError as exc:
                raise RecipeError(f"{where}.{key}: {exc.message}", hint=exc.hint) from None
        leaves = leaf_values(value)
        if not leaves:
            raise RecipeError(f"{where}.{key}: empty value")
        plain[key] = leaves[0]
        variants.extend((key, leaf) for leaf in leaves[1:])
    try:
        model.model_validate(plain)
        for key, leaf in variants:
            model.model_validate({**plain, key: leaf})
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, where)) from None


def layer_key(name: str) -> tuple[int, ...] | None:
    """The numbers that place a tensor's block in the network.

    Up to the first purely numeric component: ``model.layers.12.mlp.w`` -> (12,),
    ``layer2.1.conv1.weight`` -> (2, 1) (the stage number in ``layer2`` counts too).
    ``None`` for tensors outside numbered blocks.
    """
    key: list[int] = []
    for part in name.split("."):
        if part.isdigit():
            key.append(int(part))
            return tuple(key)
        m = re.search(r"(\d+)$", part)
        if m:
            key.append(int(m.group(1)))
    return None


def layer_ranks(names: Iterable[str]) -> dict[str, int | None]:
    """Each tensor's layer number: the rank of its block among all numbered blocks (``None`` outside)."""
    names = list(names)
    keys = {n: layer_key(n) for n in names}
    ranks = {k: i for i, k in enumerate(sorted({k for k in keys.values() if k is not None}))}
    return {n: (ranks[k] if k is not None else None) for n, k in keys.items()}


def layer_depths(names: Iterable[str]) -> dict[str, float]:
    """Each tensor's depth in [0, 1], as mergekit places it on a gradient.

    The k-th of n blocks sits at k/(n − 1) (at 1 when there is a single block); for
    a transformer that is the layer index over the last index. Tensors outside
    numbered blocks (embeddings, final norms, heads) sit at 0, as in mergekit.
    """
    ranks = layer_ranks(names)
    top = max((r for r in ranks.values() if r is not None), default=0)
    return {n: (0.0 if r is None else (r / top if top else 1.0)) for n, r in ranks.items()}
