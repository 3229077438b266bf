"""The table of merge methods, filled from an explicit list of built-in modules."""

from __future__ import annotations

import importlib
import warnings

from merge_studio.core.methods.spec import MethodSpec
from merge_studio.errors import MethodError

# Each module registers its methods on import. Adding a method touches one of these.
BUILTIN_MODULES = (
    "merge_studio.core.methods.linear",
    "merge_studio.core.methods.slerp",
    "merge_studio.core.methods.task_arithmetic",
    "merge_studio.core.methods.breadcrumbs",
    "merge_studio.core.methods.della",
    "merge_studio.core.methods.sce",
    "merge_studio.core.methods.ram",
    "merge_studio.core.methods.arcee_fusion",
    "merge_studio.core.methods.spherical",
    "merge_studio.core.methods.nearswap",
    "merge_studio.core.methods.add_difference",
    "merge_studio.core.methods.passthrough",
    "merge_studio.core.methods.model_stock",
    "merge_studio.core.methods.recombination",
    "merge_studio.core.methods.fisher",
    "merge_studio.core.methods.regmean",
    "merge_studio.core.methods.adamerging",
    "merge_studio.core.rebasin.methods",
)
# Aliases so users of other tools find their method (mergekit's ``linear``, A1111's ``weighted_sum``).
ALIASES = {"linear": "weighted_average", "average": "simple_average", "weighted_sum": "lerp"}

_METHODS: dict[str, MethodSpec] = {}
_loaded = False


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to the table (a later registration under the same name wins, with a warning)."""
    if spec.name in _METHODS and _METHODS[spec.name] is not spec:
        warnings.warn(f"merge method {spec.name!r} registered twice; keeping the last", stacklevel=2)
    _METHODS[spec.name] = spec
    return spec


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_methods() -> list[MethodSpec]:
    """All registered methods, grouped by family then name."""
    _load_builtins()
    return sorted(_METHODS.values(), key=lambda s: (s.family, s.name))


def get_method(name: str) -> MethodSpec:
    """Look a method up by name or alias; the error lists what exists."""
    _load_builtins()
    key = ALIASES.get(name, name)
    if key not in _METHODS:
        known = ", ".join(sorted(_METHODS))
        raise MethodError(f"unknown merge method {name!r}", hint=f"known methods: {known}")
    return _METHODS[key]
