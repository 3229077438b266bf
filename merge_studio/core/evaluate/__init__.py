"""Evaluation: data, the evaluation loop, interpolation sweeps and barriers (Qt-free)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives; modules load on first use, because most of them import
# torch and a command's --help (which imports this package) must not wait for it.
_HOMES = {
    "BarrierReport": "barrier", "iter_barrier_comparison": "barrier",
    "BarrierCurve": "curves", "BarrierPoint": "curves", "barrier_height": "curves",
    "DataError": "data", "DataSpec": "data", "EvalData": "data", "TensorSplit": "data", "load_data": "data",
    "iter_interpolation": "interpolate", "iter_path_interpolation": "interpolate",
    "EvalResult": "loop", "ModelScores": "loop", "evaluate": "loop", "evaluate_models": "loop",
    "iter_evaluate_models": "loop", "reset_batchnorm": "loop",
}

if TYPE_CHECKING:
    from merge_studio.core.evaluate.barrier import BarrierReport, iter_barrier_comparison
    from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint, barrier_height
    from merge_studio.core.evaluate.data import DataError, DataSpec, EvalData, TensorSplit, load_data
    from merge_studio.core.evaluate.interpolate import iter_interpolation, iter_path_interpolation
    from merge_studio.core.evaluate.loop import (
        EvalResult,
        ModelScores,
        evaluate,
        evaluate_models,
        iter_evaluate_models,
        reset_batchnorm,
    )


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "BarrierCurve",
    "BarrierPoint",
    "BarrierReport",
    "DataError",
    "DataSpec",
    "EvalData",
    "EvalResult",
    "ModelScores",
    "TensorSplit",
    "barrier_height",
    "evaluate",
    "evaluate_models",
    "iter_barrier_comparison",
    "iter_evaluate_models",
    "iter_interpolation",
    "iter_path_interpolation",
    "load_data",
    "reset_batchnorm",
]
