"""Where a merged model sits on the line between A and B, read from the merged file itself.

The "via merged" barrier curve walks A → M → B. Drawn with M at λ = 0.5 and
ending at the B as stored, it told the wrong story for any merge other than an
even average: a lerp with t = 0.3 sits at λ = 0.3, and weight matching merges A
with B *aligned* to A, so its path must end at the aligned B (B′), where the
merge was made. Every merged file carries its recipe (and weight matching its
permutation) in its metadata; :func:`merged_anchor` reads them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPE_KEY = "merge_studio.recipe"
PERMUTATION_KEY = "merge_studio.permutation"
# methods whose result is a point of the straight line between two models, and the coefficient of the second one
_ON_THE_LINE = {"lerp", "slerp", "weighted_average", "simple_average", "weight_matching", "activation_matching",
                "rebasin_auto"}
_ALIGNING = {"weight_matching", "activation_matching", "rebasin_auto"}  # interpolate A with B aligned to A


@dataclass(frozen=True)
class MergedAnchor:
    """The merged model's place on the path: λ of M, whether it lies on the A–B line, and which B it was made with."""

    position: float = 0.5
    on_line: bool = False
    aligned_b: bool = False
    perms: dict[str, list[int]] = field(default_factory=dict)
    description: str = ""

    @property
    def tick_label(self) -> str:
        """What the plot writes under M (``merged`` and its coefficient)."""
        return f"merged\n({self.description})" if self.description else "merged"


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return str(a) == str(b)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None


def merged_anchor(metadata: Mapping[str, str], path_a: str | Path, path_b: str | Path) -> MergedAnchor:
    """Read the merge's method and coefficients from ``metadata`` and place it between A and B.

    Falls back to λ = 0.5, "not on the line", when the file has no recipe, the merge
    did not take exactly A and B, or its method's result is not a point of the line
    (TIES, DARE, task arithmetic…): the curve then still passes through M, at the middle.
    """
    text = metadata.get(RECIPE_KEY)
    if not text:
        return MergedAnchor(description="no recipe in the file")
    try:
        from merge_studio.core.methods import get_method
        from merge_studio.core.recipe import Recipe
        from merge_studio.core.safe_yaml import load_yaml

        recipe = Recipe.from_mapping(load_yaml(text) or {}, source="merged file")
        spec = get_method(recipe.method)
        params = spec.params.model_validate(recipe.params).model_dump()
    except Exception:  # noqa: BLE001 - an unreadable recipe only loses the placement, never the curve
        return MergedAnchor(description="recipe not readable")
    paths = [m.path for m in recipe.models]
    if len(paths) != 2 or recipe.method not in _ON_THE_LINE:
        return MergedAnchor(description=f"{recipe.method}, off the line")
    if params.get("repair"):
        return MergedAnchor(description=f"{recipe.method} with REPAIR, off the line")
    if _same_file(paths[0], path_a) and _same_file(paths[1], path_b):
        flipped = False
    elif _same_file(paths[0], path_b) and _same_file(paths[1], path_a):
        flipped = True
    else:
        return MergedAnchor(description=f"{recipe.method} of other models")
    coefficient, words = _second_coefficient(recipe, params)
    if coefficient is None:
        return MergedAnchor(description=f"{recipe.method}, coefficients vary by layer")
    position = 1.0 - coefficient if flipped else coefficient
    if not 0.0 <= position <= 1.0:
        return MergedAnchor(description=f"{words}, beyond A or B")
    aligned = recipe.method in _ALIGNING
    perms: dict[str, list[int]] = {}
    if aligned:
        if flipped:  # weight matching aligned the *first* model's partner, which is A here
            return MergedAnchor(description=f"{recipe.method} with A and B swapped")
        try:
            perms = {k: list(v) for k, v in json.loads(metadata.get(PERMUTATION_KEY, "{}")).get("groups", {}).items()}
        except (ValueError, AttributeError, TypeError, RecursionError):  # metadata written by anyone
            perms = {}
        if not perms:
            return MergedAnchor(position=position, description=f"{words}; permutation not in the file")
        words += ", B aligned"
    return MergedAnchor(position=position, on_line=True, aligned_b=aligned, perms=perms, description=words)


def _second_coefficient(recipe: Any, params: Mapping[str, Any]) -> tuple[float | None, str]:
    """The merged model's coefficient on the second input (λ when that input is B), and how to say it."""
    method = recipe.method
    if method == "simple_average":
        return 0.5, "average"
    if method in ("lerp", "slerp"):
        t = _number(params.get("t"))
        return t, f"{method} t = {t:g}" if t is not None else method
    if method in _ALIGNING:
        alpha = _number(params.get("alpha"))
        return alpha, f"α = {alpha:g}" if alpha is not None else method
    weights = [_number(m.params.get("weight", 1.0)) for m in recipe.models]
    if any(w is None for w in weights):
        return None, method
    w0, w1 = weights
    if not params.get("normalize", True) and not math.isclose(w0 + w1, 1.0, abs_tol=1e-6):
        return None, "weights not summing to 1"
    total = w0 + w1
    if total == 0:
        return None, method
    return w1 / total, f"weights {w0:g} : {w1:g}"


def read_metadata(path: str | Path) -> dict[str, str]:
    """A checkpoint's metadata (empty when it has none or cannot be read)."""
    from merge_studio.core.checkpoints import open_checkpoint

    try:
        with open_checkpoint(path) as checkpoint:
            return dict(checkpoint.metadata or {})
    except Exception:  # noqa: BLE001 - placement is a refinement; the job reads the file again and reports errors
        return {}


__all__ = ["MergedAnchor", "merged_anchor", "read_metadata"]
