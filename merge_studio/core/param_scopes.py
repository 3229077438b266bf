"""Where a parameter may be given, and which value a tensor gets: mergekit's scopes.

A parameter may be given for the whole merge (``params``), for one model
(``models[i].params``), for a range of layers (``slices[s].params``) or for one
model inside a slice (``slices[s].sources[j].params``). The most specific scope
that gives a value for a tensor wins: slice × model, then slice, then model, then
the whole merge; a filtered value that matches no filter falls through to the next
scope, as in mergekit. Per-model parameters (``weight``, ``density``) may be given
at any scope; the method's own parameters (``t``, ``lambda``) at the whole-merge
or slice scope.

Names are checked here too: a name the method does not take but another method
does (``weight`` on a SLERP merge, common in mergekit configs) is accepted with a
warning and ignored; a name no method takes is refused, with the closest real
name suggested.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from merge_studio.core.methods.layered import MISSING, layer_ranks, resolve_value, validate_layered
from merge_studio.core.methods.registry import list_methods
from merge_studio.core.methods.spec import MethodSpec
from merge_studio.errors import RecipeError

if TYPE_CHECKING:
    from merge_studio.core.recipe import Recipe

# Names that only change how mergekit uses memory; accepted anywhere without a word.
SILENT = frozenset({"int8_mask"})
# Looked up in the inputs' names to tell tensors before the first layer from those after the last.
_INPUT_SIDE = ("embed", "wte", "wpe", "tok_", "token", "patch", "pos_", "cls_token", "stem", "conv1.", "bn1.")


def keys_of(model: type[BaseModel]) -> set[str]:
    """The names a recipe uses for a pydantic model's fields (aliases such as ``lambda``)."""
    return {f.alias or n for n, f in model.model_fields.items()}


def _users() -> dict[str, list[str]]:
    """Every parameter name any method takes, with the labels of the methods that take it."""
    users: dict[str, list[str]] = {}
    for spec in list_methods():
        for key in keys_of(spec.params) | keys_of(spec.model_params):
            users.setdefault(key, []).append(spec.label)
    return users


@dataclass(frozen=True)
class ParamWarning:
    """A parameter given where its method does not use it: where, which, and why it is ignored."""

    where: str
    key: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.key!r} {self.reason}{f' ({self.detail})' if self.detail else ''}; ignored"


def _foreign(spec: MethodSpec, key: str, where: str, users: dict[str, list[str]]) -> ParamWarning:
    """The warning for a name ``spec`` does not take, or :class:`RecipeError` when no method does."""
    if key in users:
        others = ", ".join(users[key][:4]) + (", …" if len(users[key]) > 4 else "")
        return ParamWarning(where, key, f"is not a parameter of {spec.label}", f"it is one of {others}")
    close = difflib.get_close_matches(key, sorted(users), n=1, cutoff=0.6)
    own = sorted(keys_of(spec.params) | keys_of(spec.model_params))
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise RecipeError(
        f"{where}: unknown parameter {key!r}",
        hint=f"{hint}{spec.label} parameters: {', '.join(own) or 'none'}",
    )


def sort_names(spec: MethodSpec, raw: Mapping[str, Any], where: str, *, per_model: bool) -> tuple[dict, dict, list[ParamWarning]]:
    """Split a scope's parameters into (the method's own, per-model, warnings).

    ``per_model`` scopes (a model, a slice source) cannot set the method's own
    parameters: mergekit ignores them there, so do we, with a warning.
    """
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{where}: expected a mapping of parameter names to values")
    own_keys, model_keys = keys_of(spec.params), keys_of(spec.model_params)
    users: dict[str, list[str]] | None = None
    own: dict[str, Any] = {}
    per: dict[str, Any] = {}
    warnings: list[ParamWarning] = []
    for key, value in raw.items():
        if key in model_keys:
            per[key] = value
        elif key in own_keys and not per_model:
            own[key] = value
        elif key in own_keys:
            warnings.append(ParamWarning(where, key, f"is a parameter of the whole {spec.label} merge, not of one model",
                                         "give it under the merge's or a slice's parameters"))
        elif key not in SILENT:
            users = users if users is not None else _users()
            warnings.append(_foreign(spec, key, where, users))
    return own, per, warnings


@dataclass(frozen=True)
class Scopes:
    """A recipe's parameters sorted by scope, checked against its method."""

    own: dict[str, Any]
    per_model: dict[str, Any]
    models: list[dict[str, Any]]
    slices: list[tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]]
    warnings: list[ParamWarning]


def sort_recipe(spec: MethodSpec, recipe_params: Mapping[str, Any], models: Sequence[Any], slices: Sequence[Any]) -> Scopes:
    """Check every scope's names and values; raises :class:`RecipeError` on the first bad one."""
    own, per_model, warnings = sort_names(spec, recipe_params, "params", per_model=False)
    model_scopes = []
    for i, entry in enumerate(models):
        _, mine, notes = sort_names(spec, entry.params, f"models.{i}.params", per_model=True)
        model_scopes.append(mine)
        warnings += notes
    slice_scopes = []
    for s, sl in enumerate(slices):
        s_own, s_per, notes = sort_names(spec, sl.params, f"slices.{s}.params", per_model=False)
        warnings += notes
        sources: dict[str, dict[str, Any]] = {}
        for j, src in enumerate(sl.sources):
            _, mine, notes = sort_names(spec, src.params, f"slices.{s}.sources.{j}.params", per_model=True)
            sources[src.model] = mine
            warnings += notes
        slice_scopes.append((s_own, s_per, sources))
    scopes = Scopes(own, per_model, model_scopes, slice_scopes, warnings)
    _validate(spec, scopes, models)
    return scopes


def _validate(spec: MethodSpec, scopes: Scopes, models: Sequence[Any]) -> None:
    """Every value a scope can give, checked together with what it overrides (cross-field rules see both)."""
    validate_layered(spec.params, scopes.own, "params")
    for s, (s_own, _, _) in enumerate(scopes.slices):
        validate_layered(spec.params, {**scopes.own, **s_own}, f"slices.{s}.params")
    for i, entry in enumerate(models):
        merged = {**scopes.per_model, **scopes.models[i]}
        validate_layered(spec.model_params, merged, f"models.{i}.params" if scopes.models[i] else "params")
        for s, (_, s_per, sources) in enumerate(scopes.slices):
            inside = {**merged, **s_per, **sources.get(entry.path, {})}
            validate_layered(spec.model_params, inside, f"slices.{s}.params")


# --- which value a tensor gets ----------------------------------------------------------------
@dataclass(frozen=True)
class Place:
    """Where a tensor sits for its parameters: its depth (for gradients) and its slice, if any."""

    depth: float
    slice_index: int | None = None


def input_side(name: str) -> bool:
    """Whether a tensor outside the numbered layers feeds the first layer (embeddings, a stem)."""
    return any(e in name.lower() for e in _INPUT_SIDE)


def place_tensors(names: Iterable[str], layer_ranges: Sequence[tuple[int, int]]) -> dict[str, Place]:
    """Each tensor's depth and slice, as mergekit computes them.

    Inside a slice of n layers the k-th layer sits at k/(n − 1) (at 1 when n = 1);
    without slices the whole network is one slice. Tensors outside the numbered
    layers (embeddings, the final norm, the head) sit at depth 0, so they take a
    gradient's first value; those before the first layer belong to the first slice,
    the others to the last.
    """
    names = list(names)
    ranks = layer_ranks(names)
    n_layers = 1 + max((r for r in ranks.values() if r is not None), default=-1)
    ranges = list(layer_ranges) or [(0, n_layers)]
    places: dict[str, Place] = {}
    for name in names:
        rank = ranks[name]
        if rank is None:
            places[name] = Place(0.0, 0 if input_side(name) else len(ranges) - 1)
            continue
        for s, (start, end) in enumerate(ranges):
            if start <= rank < end:
                width = end - start
                places[name] = Place((rank - start) / (width - 1) if width > 1 else 1.0, s)
                break
        else:
            raise RecipeError(f"{name}: layer {rank} is in no slice", hint="the slices must cover every layer")
    return places


def resolve_in_scopes(scopes: Sequence[Mapping[str, Any]], name: str, depth: float, block: Any = None) -> dict[str, Any]:
    """Plain values for one tensor: for each name, the first scope whose value applies to it.

    ``block`` is the tensor's named block (a :class:`~merge_studio.core.naming.blocks.BlockRef`,
    for block weights), ``None`` where the family has none."""
    out: dict[str, Any] = {}
    for scope in scopes:
        for key, value in scope.items():
            if key in out:
                continue
            resolved = resolve_value(value, name, depth, block)
            if resolved is not MISSING:
                out[key] = resolved
    return out


def method_scopes(scopes: Scopes, slice_index: int | None) -> list[dict[str, Any]]:
    """The method's own parameters for a tensor, most specific scope first."""
    chain = []
    if slice_index is not None and scopes.slices:
        chain.append(scopes.slices[slice_index][0])
    return [*chain, scopes.own]


def model_scopes(scopes: Scopes, own: Mapping[str, Any], model_path: str, slice_index: int | None) -> list[Mapping[str, Any]]:
    """One model's per-model parameters for a tensor, most specific scope first (``own``: its model entry's)."""
    chain: list[Mapping[str, Any]] = []
    if slice_index is not None and scopes.slices:
        _, s_per, sources = scopes.slices[slice_index]
        chain += [sources.get(model_path, {}), s_per]
    return [*chain, own, scopes.per_model]


def check_slice_models(slices: Sequence[Any], models: Sequence[str], base: str | None) -> None:
    """Every slice source must be one of the recipe's models (or its base)."""
    known = {*models, *([base] if base else [])}
    for s, sl in enumerate(slices):
        for j, src in enumerate(sl.sources):
            if src.model not in known:
                raise RecipeError(f"slices.{s}.sources.{j}: {src.model} is not one of the recipe's models",
                                  hint="list it under models (or as the base)")


def parameter_warnings(recipe: Recipe) -> list[ParamWarning]:
    """What the recipe gives that its method does not use (``str()`` of each is the CLI's line)."""
    return sort_recipe(recipe.spec, recipe.params, recipe.models, recipe.slices or []).warnings
