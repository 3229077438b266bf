"""Coefficient search: Optuna picks a method's numbers, trials merge and score on data.

Optuna and Ray are imported only when a search runs (``merge-studio[search]``).
"""

from __future__ import annotations

from merge_studio.core.search.objectives import Objective
from merge_studio.core.search.runner import (
    SearchResult,
    TrialResult,
    iter_search,
    load_search,
    parameter_importance,
    run_search,
)
from merge_studio.core.search.space import Dimension, ParamRange, SearchError, SearchSpace

__all__ = [
    "Dimension",
    "Objective",
    "ParamRange",
    "SearchError",
    "SearchResult",
    "SearchSpace",
    "TrialResult",
    "iter_search",
    "load_search",
    "parameter_importance",
    "run_search",
]
