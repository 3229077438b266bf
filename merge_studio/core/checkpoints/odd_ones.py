"""Which models do not fit with the others, and by which tensors.

A compatibility report lists every model involved in a difference: with three
models of which one is wider, all three appear in each shape mismatch, and a
warning on every row tells the user nothing. :func:`odd_models` names only the
models that differ from the majority (or, where there is no majority, from the
reference model, usually the base), with the tensors that make them differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

MAX_LISTED = 6


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:MAX_LISTED])
    return shown + (f" … and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def _normal_side(members: set[str], models: Sequence[str], reference: str | None) -> bool | None:
    """Whether having the property is normal: the majority decides, the reference breaks ties (None: undecided)."""
    have, lack = len(members), len(models) - len(members)
    if have != lack:
        return have > lack
    if reference is not None and reference in models:
        return reference in members
    return None


def odd_models(
    models: Sequence[str],
    all_keys: Sequence[str],
    missing: Mapping[str, Sequence[str]],
    shape_mismatches: Mapping[str, Mapping[str, Sequence[int]]],
    reference: str | None = None,
) -> dict[str, list[str]]:
    """model → sentences naming its odd tensors, for the models that do not fit (others are left out).

    ``missing`` (model → keys it lacks) and ``shape_mismatches`` (key → model → shape)
    are a compatibility report's fields. With two models and no reference, neither
    is in the majority, so both are named.
    """
    lacks: dict[str, list[str]] = {m: [] for m in models}
    extra: dict[str, list[str]] = {m: [] for m in models}
    shapes: dict[str, list[str]] = {m: [] for m in models}
    missing_sets = {m: set(missing.get(m, ())) for m in models}
    for key in all_keys:
        holders = {m for m in models if key not in missing_sets[m]}
        if len(holders) == len(models):
            continue
        normal = _normal_side(holders, models, reference)
        for m in models:
            has = m in holders
            if normal is None or has != normal:
                (extra if has else lacks)[m].append(key)
    for key, per_model in shape_mismatches.items():
        counts = Counter(tuple(s) for s in per_model.values())
        ranked = counts.most_common()
        if len(ranked) > 1 and ranked[0][1] > ranked[1][1]:
            usual: tuple[int, ...] | None = ranked[0][0]
        elif reference is not None and reference in per_model:
            usual = tuple(per_model[reference])
        else:
            usual = None
        for m, shape in per_model.items():
            if usual is None or tuple(shape) != usual:
                others = sorted({_shape(s) for n, s in per_model.items() if tuple(s) != tuple(shape)})
                shapes.setdefault(m, []).append(f"{key!r} is {_shape(shape)} here, {' or '.join(others)} in the others")
    out: dict[str, list[str]] = {}
    for m in models:
        reasons = []
        if lacks[m]:
            reasons.append(f"lacks {len(lacks[m])} tensor{'s' * (len(lacks[m]) != 1)} the others have: {_listed(lacks[m])}")
        if extra[m]:
            reasons.append(f"has {len(extra[m])} tensor{'s' * (len(extra[m]) != 1)} the others lack: {_listed(extra[m])}")
        if shapes.get(m):
            listed = shapes[m][:MAX_LISTED]
            more = f" … and {len(shapes[m]) - MAX_LISTED} more" if len(shapes[m]) > MAX_LISTED else ""
            reasons.append(f"shape differs for {len(shapes[m])} tensor{'s' * (len(shapes[m]) != 1)}: "
                           + "; ".join(listed) + more)
        if reasons:
            out[m] = reasons
    return out


__all__ = ["odd_models"]
