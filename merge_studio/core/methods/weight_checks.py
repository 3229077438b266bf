"""Per-model weights that cancel out: found from the recipe, before any tensor is read.

Some methods divide by the sum of the per-model weights; a sum of zero would stop
the merge at its first tensor. Checked here, the window can flag it while the user
types, like any other out-of-range value. Per-layer weights (lists, filters) are
left to the merge itself, which names the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from merge_studio.core.methods.registry import get_method

# method -> the parameter that turns the division on (None: always divides), and
# whether a negative total fails too (Fisher weights scale positive Fisher masses)
DIVIDES_BY_WEIGHT_SUM: dict[str, tuple[str | None, bool]] = {
    "weighted_average": ("normalize", False),
    "multislerp": ("normalize_weights", False),
    "fisher": (None, True),
}
EPS = 1e-8


def weight_sum_problem(method: str, params: Mapping[str, Any], model_params: Sequence[Mapping[str, Any]]) -> str | None:
    """A sentence when the weights sum to zero (or below, where that fails), else ``None``."""
    spec = get_method(method)
    rule = DIVIDES_BY_WEIGHT_SUM.get(spec.name)
    if rule is None or not model_params or "weight" not in spec.model_params.model_fields:
        return None
    flag, positive = rule
    if flag is not None:
        field = spec.params.model_fields[flag]
        if not params.get(flag, field.default):
            return None
    default = spec.model_params.model_fields["weight"].default
    weights = [mp.get("weight", default) for mp in model_params]
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        return None  # per-layer values: checked tensor by tensor during the merge
    total = float(sum(weights))
    if positive and total <= EPS:
        return f"the model weights sum to {total:g}; {spec.label} needs a positive total: give a model a larger weight"
    if abs(total) < EPS:
        title = (spec.params.model_fields[flag].title or flag) if flag else "normalisation"
        return f"the model weights sum to zero, so normalising would divide by zero: change a weight or turn off “{title}”"
    return None
